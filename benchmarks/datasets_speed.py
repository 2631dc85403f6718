"""Images per second for whole data sets: the explainer loop, explain_dataset in one process, with
num_proc, and in processes started by torchrun; at several batch sizes, with the threads stated.

    python benchmarks/datasets_speed.py                         # 512 demo images, GAE, batch 1 8 32
    python benchmarks/datasets_speed.py --images 128 --batches 8 --no-launch
    python benchmarks/datasets_speed.py --fingerprint           # the cache fingerprint on a ViT-base

Every figure comes from one run, printed with the load average. Rows:
  loop, T thread(s)            RolloutExplainer(images) on a list of decoded images, batch_size = the batch
  explain_dataset, T thread(s) one process, a save_to_disk data set (PNG images decoded per batch)
  num_proc=P, 1 thread each    P worker processes forked by explain_dataset
  torchrun P, 1 thread each    P processes started by torchrun (shard='auto'), rows / slowest rank's explain
                               time; "with start" adds the launch, imports and model load of each process
``× loop`` is each row's rate over the one-thread loop's at the same batch size.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import torch


def _rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def make_data(count: int, folder: str):
    import datasets

    from hf_vit_rollout.demo.data import HELD_OUT_SEED, make_sample

    images = [make_sample(HELD_OUT_SEED + i).image for i in range(count)]
    data = datasets.Dataset.from_dict({"image": images}, features=datasets.Features({"image": datasets.Image()}))
    data.save_to_disk(folder)
    return datasets.load_from_disk(folder), images


def timed(function, repeats: int = 1) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def launched(folder: str, out: str, processes: int, batch: int, method: str, model: str) -> tuple[float, float]:
    """``(steady seconds, wall seconds)`` of ``processes`` torchrun ranks explaining ``folder``."""
    shutil.rmtree(out, ignore_errors=True)
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
        "-m", "hf_vit_rollout.datasets", folder, out, "--model", model, "--methods", method,
        "--batch_size", str(batch), "--threads", "1", "--no_cache",
    ]
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"torchrun failed:\n{result.stderr[-3000:]}")
    seconds = [float(s) for s in re.findall(r"rows in ([0-9.]+) s", result.stdout)]
    if len(seconds) != processes:
        raise SystemExit(f"expected {processes} ranks to report, got:\n{result.stdout}")
    return max(seconds), wall


def fingerprint_figures() -> None:
    """The cache fingerprint of a ViT-base: datasets' own (pickling the map function with its model,
    as explain_dataset did) against the weights digest, first call and repeated."""
    import pickle

    import transformers
    from datasets.fingerprint import Hasher

    from hf_vit_rollout.datasets import weights_digest

    torch.manual_seed(0)
    model = transformers.ViTForImageClassification(transformers.ViTConfig())  # ViT-base, random weights
    params = sum(p.numel() for p in model.parameters())
    start = time.perf_counter()
    size = len(pickle.dumps(model))
    pickled = time.perf_counter() - start
    start = time.perf_counter()
    Hasher.hash(model)
    hashed = time.perf_counter() - start
    start = time.perf_counter()
    weights_digest(model)
    first = time.perf_counter() - start
    start = time.perf_counter()
    weights_digest(model)
    again = time.perf_counter() - start
    print(f"ViT-base ({params / 1e6:.1f} M parameters), load {os.getloadavg()[0]:.1f}:")
    print(f"  datasets' Hasher.hash(model) {hashed:.2f} s (a pickle of {size / 2**20:.0f} MiB takes {pickled:.2f} s)")
    print(f"  weights_digest: first call {first:.3f} s, again {again * 1000:.2f} ms ({hashed / first:.0f}x / {hashed / again:.0f}x faster)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--method", default="gae")
    parser.add_argument("--model", default="demo")
    parser.add_argument("--processes", type=int, default=2, help="num_proc and torchrun processes")
    parser.add_argument("--repeats", type=int, default=1, help="best of this many runs per in-process row")
    parser.add_argument("--no-launch", action="store_true", help="skip the torchrun rows")
    parser.add_argument("--fingerprint", action="store_true", help="only the fingerprint figures")
    args = parser.parse_args()
    if args.fingerprint:
        fingerprint_figures()
        return

    from hf_vit_rollout import RolloutExplainer
    from hf_vit_rollout.datasets import explain_dataset

    cores = os.cpu_count() or 1
    workdir = tempfile.mkdtemp(prefix="datasets_speed_")
    try:
        folder = os.path.join(workdir, "data")
        data, images = make_data(args.images, folder)
        explainer = RolloutExplainer.from_pretrained(args.model, method=args.method)
        explainer(images[:4])  # warm-up
        print(f"{args.images} images ({images[0].width}x{images[0].height}), method {args.method}, model {args.model}, "
              f"{cores} cores, load before {os.getloadavg()[0]:.1f}")
        print(f"{'batch':>5}  {'path':<34}{'images/s':>10}{'× loop':>9}")
        for batch in args.batches:
            explainer.batch_size = batch
            rows = []
            for threads in sorted({1, cores}):
                torch.set_num_threads(threads)
                seconds = timed(lambda: explainer(images), args.repeats)
                rows.append((f"loop, {threads} thread(s)", _rate(len(images), seconds)))
            for threads in sorted({1, cores}):
                torch.set_num_threads(threads)
                seconds = timed(lambda: explain_dataset(data, explainer, batch_size=batch, load_from_cache_file=False), args.repeats)
                rows.append((f"explain_dataset, {threads} thread(s)", _rate(len(images), seconds)))
            torch.set_num_threads(cores)
            seconds = timed(
                lambda: explain_dataset(data, explainer, batch_size=batch, num_proc=args.processes, load_from_cache_file=False),
                args.repeats,
            )
            rows.append((f"num_proc={args.processes}, 1 thread each", _rate(len(images), seconds)))
            if not args.no_launch:
                steady, wall = launched(folder, os.path.join(workdir, "out"), args.processes, batch, args.method, args.model)
                rows.append((f"torchrun {args.processes}, 1 thread each", _rate(len(images), steady)))
                rows.append((f"torchrun {args.processes}, with start", _rate(len(images), wall)))
            floor = rows[0][1]
            for name, rate in rows:
                print(f"{batch:>5}  {name:<34}{rate:>10.1f}{rate / floor:>8.2f}x")
        print(f"load after {os.getloadavg()[0]:.1f}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
