"""How well does each method find the object? Ground-truth benchmark on the demo model.

On held-out synthetic images (``hf_vit_rollout.demo.data``, seeds the training never drew), every
(image, object) pair is explained for the object's class, and the heat-map is scored against the
object's pixel mask:

* pointing game: the heat-map's maximum falls inside the object (ties split fairly);
* energy: share of the heat-map's mass inside the object;
* class sensitivity (two-object images only): the map for class A puts more mass on A's object than
  on B's; a class-agnostic method scores ~50% by construction;
* deletion / insertion AUC: the target probability while patches are removed from (added to) a grey
  image, most relevant first (lower deletion, higher insertion is better);
* sanity (Adebayo et al. 2018): Spearman rank correlation between the map of the trained model and
  the map of the same architecture with random weights; near 1 would mean the map ignores the model.

    python benchmarks/localization.py --images 500
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import numpy as np
import torch

from hf_vit_rollout import RolloutExplainer
from hf_vit_rollout.demo.data import HELD_OUT_SEED, make_sample
from hf_vit_rollout.metrics import (
    class_sensitivity,
    curve_auc,
    energy_in_mask,
    perturbation_curve,
    pointing_game,
    spearman,
)

CONFIGS = [
    # (method, head_fusion, discard_ratio)
    ("rollout", "mean", 0.0),
    ("rollout", "mean", 0.9),
    ("rollout", "max", 0.9),
    ("rollout", "min", 0.9),
    ("grad_rollout", "mean", 0.0),
    ("grad_rollout", "mean", 0.9),
    ("gae", "mean", 0.0),
    ("gae", "max", 0.0),
    ("flow", "mean", 0.9),
    ("flow", "mean", 0.0),
]
BENCHMARK_SEED = HELD_OUT_SEED + 5_000_000


def pairs_of(samples):
    """(sample index, object index) for every object."""
    return [(i, k) for i, s in enumerate(samples) for k in range(len(s.labels))]


def explain_pairs(explainer, samples, pairs, method, fusion, ratio, batch_size=64):
    needs_target = method in ("grad_rollout", "gae")
    results = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start : start + batch_size]
        images = [samples[i].image for i, _ in chunk]
        targets = [samples[i].labels[k] for i, k in chunk] if needs_target else None
        results.extend(explainer(images, target=targets, method=method, head_fusion=fusion, discard_ratio=ratio))
    return [(r.heatmap, r.mask) for r in results]


def random_maps(pairs, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in pairs:
        mask = rng.random((8, 8)).astype(np.float32)
        heat = torch.nn.functional.interpolate(torch.from_numpy(mask)[None, None], size=(64, 64), mode="bilinear")[0, 0]
        out.append((heat.numpy(), mask))
    return out


def score(explainer, samples, pairs, maps, curve_pairs):
    rows = defaultdict(list)
    model, processor = explainer.model, explainer.image_processor
    for n, ((i, k), (heat, mask)) in enumerate(zip(pairs, maps)):
        sample = samples[i]
        rows["pointing"].append(pointing_game(heat, sample.masks[k]))
        rows["energy"].append(energy_in_mask(heat, sample.masks[k]))
        if len(sample.labels) == 2:
            rows["sensitivity"].append(class_sensitivity(heat, sample.masks[k], sample.masks[1 - k]))
        if n < curve_pairs:
            pixels = processor(images=[sample.image], return_tensors="pt")["pixel_values"][0]
            label = sample.labels[k]

            def prob(batch, label=label):
                return explainer.probabilities(model(pixel_values=batch).logits)[:, label]

            for mode in ("deletion", "insertion"):
                rows[mode].append(curve_auc(perturbation_curve(pixels, mask, (8, 8), prob, mode, steps=16)))
    return {key: float(np.mean(values)) for key, values in rows.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--curve-pairs", type=int, default=300, help="pairs scored by deletion/insertion")
    parser.add_argument("--sanity-pairs", type=int, default=200, help="pairs used for the randomisation check")
    args = parser.parse_args()
    torch.set_num_threads(2)
    started = time.perf_counter()

    explainer = RolloutExplainer.from_pretrained("demo")
    explainer.model.eval()
    torch.manual_seed(0)  # the same random weights on every run, so the sanity column repeats
    random_model = type(explainer.model)(explainer.model.config).eval()  # same architecture, random weights
    random_explainer = RolloutExplainer(random_model, explainer.image_processor)

    samples = [make_sample(BENCHMARK_SEED + i) for i in range(args.images)]
    pairs = pairs_of(samples)
    two = sum(len(s.labels) == 2 for s in samples)
    print(f"{args.images} held-out images ({two} with two objects), {len(pairs)} (image, object) pairs; "
          f"deletion/insertion on {min(args.curve_pairs, len(pairs))} pairs, sanity on {min(args.sanity_pairs, len(pairs))}\n")
    header = "| method | fusion | discard | pointing game | energy in mask | class sensitivity | deletion AUC ↓ | insertion AUC ↑ | sanity ρ (trained vs random) |"
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    with torch.no_grad():
        base = score(explainer, samples, pairs, random_maps(pairs), args.curve_pairs)
    print(f"| random heat-map | | | {base['pointing']:.1%} | {base['energy']:.1%} | {base['sensitivity']:.1%} | "
          f"{base['deletion']:.3f} | {base['insertion']:.3f} | |")
    for method, fusion, ratio in CONFIGS:
        maps = explain_pairs(explainer, samples, pairs, method, fusion, ratio)
        with torch.no_grad():
            result = score(explainer, samples, pairs, maps, args.curve_pairs)
        subset = pairs[: args.sanity_pairs]
        random_maps_ = explain_pairs(random_explainer, samples, subset, method, fusion, ratio)
        rho = np.mean([spearman(a[1], b[1]) for a, b in zip(maps[: len(subset)], random_maps_)])
        print(f"| {method} | {fusion} | {ratio:g} | {result['pointing']:.1%} | {result['energy']:.1%} | "
              f"{result['sensitivity']:.1%} | {result['deletion']:.3f} | {result['insertion']:.3f} | {rho:.2f} |", flush=True)
    print(f"\n({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
