"""How long does ``evaluate`` take? Deletion and insertion for 100 images and 2 methods on the demo model.

Times one ``evaluate`` call (after a warm-up call on 4 images) and prints the wall time, the forward
passes it counted and their rate. The target from issue 17: under a minute on this 2-core machine.

    python benchmarks/evaluate_speed.py --images 100 --methods rollout gae --repeats 2
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from hf_vit_rollout import RolloutExplainer, evaluate
from hf_vit_rollout.demo.data import HELD_OUT_SEED, make_sample


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--methods", nargs="+", default=["rollout", "gae"])
    parser.add_argument("--metrics", nargs="+", default=["deletion", "insertion"])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    explainer = RolloutExplainer.from_pretrained("demo")
    samples = [make_sample(HELD_OUT_SEED + 7_000_000 + i) for i in range(args.images)]
    images, targets = [s.image for s in samples], [s.labels[0] for s in samples]  # one object per image
    evaluate(explainer, images[:4], targets[:4], methods=args.methods, metrics=args.metrics, progress=False)  # warm-up
    print(f"{args.images} images, methods {args.methods}, metrics {args.metrics}, batch {args.batch_size}, "
          f"{args.threads} threads, load average {os.getloadavg()[0]:.2f}")
    for repeat in range(args.repeats):
        started = time.perf_counter()
        report = evaluate(explainer, images, targets, methods=args.methods, metrics=args.metrics,
                          batch_size=args.batch_size, progress=False)
        seconds = time.perf_counter() - started
        forwards = sum(report.forward_passes[m] for m in args.metrics) * len(report.items) * len(args.methods)
        print(f"run {repeat + 1}: {seconds:.1f} s in all ({forwards:.0f} perturbed forward passes, "
              f"{forwards / seconds:.0f} per second); by part: "
              + ", ".join(f"{k} {v:.1f} s" for k, v in report.seconds.items())
              + f"; load average {os.getloadavg()[0]:.2f}", flush=True)


if __name__ == "__main__":
    main()
