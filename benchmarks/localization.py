"""How well does each method find the object? Ground-truth benchmark on the demo model.

On held-out synthetic images (``hf_vit_rollout.demo.data``, seeds the training never drew), every
(image, object) pair is explained for the object's class and scored by ``hf_vit_rollout.evaluate``
(the metrics are defined there, once):

* pointing game: the map's maximum falls inside the object (ties split fairly);
* energy: share of the map's mass inside the object;
* class sensitivity (two-object images only): the map for class A puts more mass on A's object than
  on B's; a class-agnostic method scores ~50% by construction;
* deletion / insertion AUC: the target probability while patches are greyed out (revealed on grey),
  most relevant first (lower deletion, higher insertion is better);
* ROAD (``--road``): mean target probability with 10-90% of the patches removed by noisy linear
  imputation, most relevant first (MoRF, lower is better) and least relevant first (LeRF, higher);
* sanity (Adebayo et al. 2018): Spearman rank correlation between the map of the trained model and
  the map of the same architecture with random weights (seeded); near 1 would mean the map ignores
  the model.

    python benchmarks/localization.py --images 500
    python benchmarks/localization.py --images 500 --model demo-swin     # the shipped Swin

    python benchmarks/localization.py --images 500 --methods cp_lrp libragrad legrad   # some rows only

Attention flow needs one token set in every layer, so its rows are left out for windowed models,
as are the methods a model's family refuses (their reason is printed). The random heat-map row is
always included, as a check that a restricted run scores the same images.
"""

from __future__ import annotations

import argparse
import time

import torch

from hf_vit_rollout import RolloutExplainer, evaluate
from hf_vit_rollout.demo.data import HELD_OUT_SEED, make_sample
from hf_vit_rollout.evaluation import MethodConfig

CONFIGS = [
    MethodConfig("random", label="random heat-map"),
    MethodConfig("rollout", "mean", 0.0),
    MethodConfig("rollout", "mean", 0.9),
    MethodConfig("rollout", "max", 0.9),
    MethodConfig("rollout", "min", 0.9),
    MethodConfig("grad_rollout", "mean", 0.0),
    MethodConfig("grad_rollout", "mean", 0.9),
    MethodConfig("gae", "mean", 0.0),
    MethodConfig("gae", "max", 0.0),
    MethodConfig("flow", "mean", 0.9),
    MethodConfig("flow", "mean", 0.0),
    MethodConfig("transformer_attribution", "mean", 0.0),
    MethodConfig("attnlrp", "mean", 0.0),
    MethodConfig("cp_lrp", "mean", 0.0),
    MethodConfig("libragrad", "mean", 0.0),
    MethodConfig("legrad", "mean", 0.0),
    MethodConfig("attention", "mean", 0.0),
]
BENCHMARK_SEED = HELD_OUT_SEED + 5_000_000


def refused(explainer, method: str) -> str | None:
    """Why ``explainer``'s model family refuses ``method`` (tried on one blank image), or ``None``."""
    if method == "random":
        return None
    try:
        explainer.relevance_maps(torch.zeros(1, 3, 64, 64), method=method)
    except ValueError as exc:
        return str(exc)
    return None


def first_pairs(samples, count: int):
    """Images, per-image target lists and masks covering the first ``count`` (image, object) pairs."""
    images, targets, masks = [], [], []
    for sample in samples:
        if count <= 0:
            break
        keep = min(count, len(sample.labels))
        images.append(sample.image)
        targets.append(sample.labels[:keep])
        masks.append(sample.masks[:keep])
        count -= keep
    return images, targets, masks


def cell(summary: dict, metric: str, percent: bool) -> str:
    value = summary.get(metric)
    if value is None or value != value:  # absent or NaN
        return ""
    return f"{value:.1%}" if percent else f"{value:.3f}" if metric != "randomisation" else f"{value:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--model", default="demo", help="'demo' (ViT) or 'demo-swin' (both trained on these data)")
    parser.add_argument("--curve-pairs", type=int, default=300, help="pairs scored by deletion/insertion (and ROAD)")
    parser.add_argument("--sanity-pairs", type=int, default=200, help="pairs used for the randomisation check")
    parser.add_argument("--road", action="store_true", help="add ROAD MoRF/LeRF columns (noisy linear imputation; slower)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the figures do not depend on it)")
    parser.add_argument("--methods", nargs="+", default=None, help="only these methods' rows (and the random heat-map)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()

    explainer = RolloutExplainer.from_pretrained(args.model)
    wanted = [c for c in CONFIGS if args.methods is None or c.method in {"random", *args.methods}]
    configs = []
    for config in wanted:
        refusal = refused(explainer, config.method)
        if refusal:
            print(f"{config.method}: left out, {refusal}")
        else:
            configs.append(config)
    samples = [make_sample(BENCHMARK_SEED + i) for i in range(args.images)]
    pairs = sum(len(s.labels) for s in samples)
    two = sum(len(s.labels) == 2 for s in samples)
    curve_pairs, sanity_pairs = min(args.curve_pairs, pairs), min(args.sanity_pairs, pairs)
    print(f"model {args.model}: {args.images} held-out images ({two} with two objects), {pairs} (image, object) pairs; "
          f"deletion/insertion{'/ROAD' if args.road else ''} on {curve_pairs} pairs, sanity on {sanity_pairs}\n")

    def run(count, metrics, methods=configs):
        images, targets, masks = first_pairs(samples, count)
        return evaluate(explainer, images, targets, masks, methods=methods, metrics=metrics,
                        batch_size=args.batch_size, progress=False).summary()

    located = run(pairs, ["pointing_game", "energy", "class_sensitivity"])
    curves = run(curve_pairs, ["deletion", "insertion"] + (["road_morf", "road_lerf"] if args.road else []))
    sanity = run(sanity_pairs, ["randomisation"], configs[1:])

    columns = [("pointing_game", "pointing game", True), ("energy", "energy in mask", True),
               ("class_sensitivity", "class sensitivity", True), ("deletion", "deletion AUC ↓", False),
               ("insertion", "insertion AUC ↑", False)]
    if args.road:
        columns += [("road_morf", "ROAD MoRF ↓", False), ("road_lerf", "ROAD LeRF ↑", False)]
    columns.append(("randomisation", "sanity ρ (trained vs random)", False))
    header = "| method | fusion | discard | " + " | ".join(title for _, title, _ in columns) + " |"
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    for config in configs:
        scores = {**located[config.name], **curves[config.name], **sanity.get(config.name, {})}
        settings = ("", "") if config.method == "random" else (config.head_fusion, f"{config.discard_ratio:g}")
        row = [cell(scores, key, percent) for key, _, percent in columns]
        print(f"| {config.label or config.method} | {settings[0]} | {settings[1]} | " + " | ".join(row) + " |")
    print(f"\n({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
