"""Explain a saved data set from the command line, in one process or under a launcher.

    python -m hf_vit_rollout.datasets DATA OUT --model demo --methods gae
    torchrun --nproc_per_node 2 -m hf_vit_rollout.datasets DATA OUT --model demo --methods gae
    accelerate launch --multi_gpu --num_processes 2 -m hf_vit_rollout.datasets DATA OUT ...

``DATA`` is a folder written by ``Dataset.save_to_disk`` (or a ``DatasetDict``'s). Each process
explains its rank's part into ``OUT/shard-RRRRR-of-WWWWW``; under a launcher the processes meet in
a ``torch.distributed`` process group (gloo) once all are done, and rank 0 checks that the shards
reassemble (``hf_vit_rollout.datasets.load_shards(OUT)`` reads them).
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m hf_vit_rollout.datasets", description=__doc__.splitlines()[0])
    parser.add_argument("data", help="a folder written by Dataset.save_to_disk")
    parser.add_argument("out", help="the folder for the shards")
    parser.add_argument("--model", default="demo", help="checkpoint: Hub id, folder, 'demo' (default)")
    parser.add_argument("--methods", nargs="+", default=None, help="methods side by side (default: rollout)")
    parser.add_argument("--image_column", default="image")
    parser.add_argument("--target_column", default=None)
    parser.add_argument("--outputs", nargs="+", default=None, help="mask target label score heatmap overlay")
    parser.add_argument("--batch_size", type=int, default=32, help="rows per batch and per forward pass")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per process (default: torch's)")
    parser.add_argument("--no_cache", action="store_true", help="explain again even if a cached result exists")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    import datasets
    import torch

    from ..explainer import RolloutExplainer
    from .batches import DEFAULT_OUTPUTS
    from .explain import explain_dataset
    from .shards import load_shards, shard_from_environment

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if launched and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("gloo")
    rank, world = shard_from_environment()
    try:
        data = datasets.load_from_disk(args.data)
        explainer = RolloutExplainer.from_pretrained(args.model, batch_size=args.batch_size)
        start = time.perf_counter()
        part = explain_dataset(
            data, explainer, args.image_column, args.target_column, args.methods,
            outputs=args.outputs or DEFAULT_OUTPUTS, batch_size=args.batch_size, shard=(rank, world), output_dir=args.out,
            **({"load_from_cache_file": False} if args.no_cache else {}),
        )
        seconds = time.perf_counter() - start
        rows = sum(len(p) for p in part.values()) if isinstance(part, dict) else len(part)
        print(f"rank {rank}/{world}: {rows} rows in {seconds:.2f} s ({torch.get_num_threads()} threads)", flush=True)
        if launched:
            torch.distributed.barrier()
        if rank == 0:
            whole = load_shards(args.out)
            total = sum(len(p) for p in whole.values()) if isinstance(whole, dict) else len(whole)
            print(f"{args.out}: {world} shard(s), {total} rows", flush=True)
    finally:
        if launched:
            torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
