"""Localization of the demo Swin's explanations next to the demo ViT's, on held-out synthetic images.

Every (image, object) pair of ``--images`` held-out samples (the seeds of
``benchmarks/localization.py``) is explained for the object's class (gradient methods) or
class-agnostically (rollout), and the heat-map is scored against the object's mask with the
package's metrics: pointing game, energy in the mask, class sensitivity (two-object images).
The Swin maps come out on its first stage's 16 × 16 grid, the ViT's on its 8 × 8 patch grid;
both are upsampled bilinearly to the 64 × 64 image and scaled to a maximum of one, as the
explainer does. The last two columns repeat energy and class sensitivity with each map's minimum
subtracted first: for a mean-pooled output, GAE's relevance carries every output token's own skip
path, a uniform offset (``1/N`` per token) that the max-scaling keeps and the CLS readout of a ViT
does not have.

    python scripts/measure_swin_localization.py --images 200
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import numpy as np
import torch

from hf_vit_rollout import RolloutExplainer
from hf_vit_rollout.demo.data import HELD_OUT_SEED, make_sample
from hf_vit_rollout.methods import METHODS
from hf_vit_rollout.metrics import class_sensitivity, energy_in_mask, pointing_game

BENCHMARK_SEED = HELD_OUT_SEED + 5_000_000  # as benchmarks/localization.py
CONFIGS = [
    ("rollout", "mean", 0.0),
    ("rollout", "mean", 0.9),
    ("grad_rollout", "mean", 0.0),
    ("gae", "mean", 0.0),
    ("transformer_attribution", "mean", 0.0),
    ("attnlrp", "mean", 0.0),
    ("cp_lrp", "mean", 0.0),
    ("libragrad", "mean", 0.0),
    ("legrad", "mean", 0.0),
]


def raw_grids(explainer, samples, pairs, config, batch_size=32) -> torch.Tensor:
    """``(pairs, gh, gw)`` raw relevance of every pair."""
    method, fusion, ratio = config
    grids = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        pixels = explainer.image_processor(images=[samples[i].image for i, _ in chunk], return_tensors="pt")["pixel_values"]
        targets = [samples[i].labels[k] for i, k in chunk] if METHODS[method].needs_gradient else None
        grids.append(explainer.relevance_maps(pixels, targets, method=method, head_fusion=fusion, discard_ratio=ratio))
    return torch.cat(grids).float()


def heatmaps(grids: torch.Tensor) -> list[np.ndarray]:
    """Max-scaled, clamped, bilinearly upsampled ``(64, 64)`` heat-maps (the explainer's postprocess)."""
    grids = grids.clamp(min=0)
    grids = grids / grids.flatten(1).amax(1).clamp(min=1e-12)[:, None, None]
    up = torch.nn.functional.interpolate(grids[:, None], size=(64, 64), mode="bilinear", align_corners=False)
    return list(up[:, 0].clamp(0, 1).numpy())


def score(samples, pairs, maps):
    rows = defaultdict(list)
    for (i, k), heat in zip(pairs, maps):
        sample = samples[i]
        rows["pointing"].append(pointing_game(heat, sample.masks[k]))
        rows["energy"].append(energy_in_mask(heat, sample.masks[k]))
        if len(sample.labels) == 2:
            rows["sensitivity"].append(class_sensitivity(heat, sample.masks[k], sample.masks[1 - k]))
    return {key: float(np.mean(values)) for key, values in rows.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--models", nargs="+", default=["demo-swin", "demo"])
    parser.add_argument("--methods", nargs="+", default=None, help="only these methods' rows")
    args = parser.parse_args()
    torch.set_num_threads(2)
    samples = [make_sample(BENCHMARK_SEED + i) for i in range(args.images)]
    pairs = [(i, k) for i, s in enumerate(samples) for k in range(len(s.labels))]
    print(f"{args.images} held-out images, {len(pairs)} (image, object) pairs\n")
    print("| model | grid | method | fusion | discard | pointing game | energy in mask | class sensitivity | "
          "energy, min subtracted | class sensitivity, min subtracted | seconds |")
    print("|---" * 11 + "|")
    for name in args.models:
        explainer = RolloutExplainer.from_pretrained(name)
        for config in [c for c in CONFIGS if args.methods is None or c[0] in args.methods]:
            started = time.perf_counter()
            grids = raw_grids(explainer, samples, pairs, config)
            seconds = time.perf_counter() - started
            plain = score(samples, pairs, heatmaps(grids))
            offset = score(samples, pairs, heatmaps(grids - grids.flatten(1).amin(1)[:, None, None]))
            grid = "×".join(str(v) for v in grids.shape[-2:])
            print(f"| {name} | {grid} | {' | '.join(str(v) for v in config)} | {plain['pointing']:.1%} | "
                  f"{plain['energy']:.1%} | {plain['sensitivity']:.1%} | {offset['energy']:.1%} | "
                  f"{offset['sensitivity']:.1%} | {seconds:.1f} |", flush=True)


if __name__ == "__main__":
    main()
