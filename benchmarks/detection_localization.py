"""Does each detection's map stay on its own object? Ground-truth benchmark on the demo detector.

On held-out synthetic images with two objects (``hf_vit_rollout.demo.data``, seeds the training
never drew), the shipped ``"demo-yolos"`` detector runs once per image; each ground-truth object is
matched to a detection token (the most confident detection of the object's class whose box overlaps
the object's box at IoU >= 0.5, each token used once). Every matched detection is explained with
``detection=`` and its heat-map scored against the ground-truth boxes (the tight box of each mask,
:func:`~hf_vit_rollout.demo.data.mask_boxes`):

* own box: share of the heat-map's mass inside the detection's own object's box;
* other boxes: share inside the other objects' boxes (a pixel in both boxes counts in both);
* own > other: how often the own box holds more mass than the other boxes (ties count half);
  a map that ignores which detection it explains scores about 50%.

The random heat-map row (uniform noise) gives the chance level: its shares are the boxes' areas.

    python benchmarks/detection_localization.py --images 200
    python benchmarks/detection_localization.py --images 200 --methods rollout gae   # some rows only
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from hf_vit_rollout import RolloutExplainer
from hf_vit_rollout.demo.data import HELD_OUT_SEED, make_sample, mask_boxes

#: The methods that explain a YOLOS detection (the others take one output row for the whole batch).
METHODS = ("rollout", "grad_rollout", "gae", "transformer_attribution", "attnlrp", "cp_lrp")
BENCHMARK_SEED = HELD_OUT_SEED + 5_000_000


def box_iou(a, b) -> float:
    """IoU of two ``(x0, y0, x1, y1)`` boxes."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union if union > 0 else 0.0


def detections(explainer, images) -> list[list[tuple[int, int, float, tuple]]]:
    """Per image, every detection token ``(index, class, probability, box)``, most confident first:
    the class is the argmax of the softmax with no-object left out, the box ``(x0, y0, x1, y1)`` in
    the image's pixels (the demo processor resizes without padding or cropping)."""
    pixels = explainer.image_processor(images=images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        out = explainer.model(pixel_values=pixels)
    best, labels = out.logits.softmax(-1)[..., :-1].max(-1)
    found = []
    for b, image in enumerate(images):
        width, height = image.size
        rows = []
        for d in torch.argsort(best[b], descending=True).tolist():
            cx, cy, w, h = out.pred_boxes[b, d].tolist()
            box = ((cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height)
            rows.append((d, int(labels[b, d]), float(best[b, d]), box))
        found.append(rows)
    return found


def match(found, labels, boxes, iou_threshold: float = 0.5) -> list[tuple[int, int]]:
    """``(object, detection)`` pairs: each object's most confident same-class detection with
    IoU >= ``iou_threshold`` (``found``: one image's :func:`detections`), each detection used once."""
    taken, pairs = set(), []
    for k, (label, box) in enumerate(zip(labels, boxes)):
        for index, predicted, _, predicted_box in found:
            if index not in taken and predicted == label and box_iou(predicted_box, box) >= iou_threshold:
                taken.add(index)
                pairs.append((k, index))
                break
    return pairs


def box_share(heatmap: np.ndarray, boxes) -> float:
    """Share of ``heatmap``'s (non-negative) mass inside the union of ``boxes`` (pixel edges)."""
    heat = np.clip(np.asarray(heatmap, dtype=np.float64), 0, None)
    inside = np.zeros(heat.shape, dtype=bool)
    for x0, y0, x1, y1 in boxes:
        inside[int(round(y0)) : int(round(y1)), int(round(x0)) : int(round(x1))] = True
    total = heat.sum()
    return float(heat[inside].sum() / total) if total > 0 else float("nan")


def score(heatmaps, objects, boxes) -> dict[str, float]:
    """Mean own-box share, other-box share and own > other rate over ``(heatmap, object)`` pairs."""
    own, other, wins = [], [], []
    for heat, k, image_boxes in zip(heatmaps, objects, boxes):
        mine = box_share(heat, [image_boxes[k]])
        rest = box_share(heat, [b for j, b in enumerate(image_boxes) if j != k])
        own.append(mine)
        other.append(rest)
        wins.append(1.0 if mine > rest else 0.5 if mine == rest else 0.0)
    return {"own": float(np.nanmean(own)), "other": float(np.nanmean(other)), "wins": float(np.mean(wins)), "pairs": len(own)}


def run(explainer, num_images: int, methods, batch_size: int = 32, seed: int = BENCHMARK_SEED) -> dict:
    """The table's figures: ``{"random" | method: score}`` plus counts under ``"_counts"``."""
    samples = [make_sample(seed + i, num_objects=2) for i in range(num_images)]
    samples = [s for s in samples if s.masks.reshape(len(s.labels), -1).any(axis=1).all()]
    images, objects, boxes = [], [], []
    chosen, objects_total = [], 0
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        everything = detections(explainer, [s.image for s in chunk])
        for sample, found in zip(chunk, everything):
            image_boxes = [tuple(float(v) for v in b) for b in mask_boxes(sample.masks)]
            objects_total += len(image_boxes)
            for k, d in match(found, sample.labels, image_boxes):
                images.append(sample.image)
                objects.append(k)
                boxes.append(image_boxes)
                chosen.append(d)
    results = {"_counts": {"images": len(samples), "objects": objects_total, "matched": len(images)}}
    rng = np.random.default_rng(seed)
    size = samples[0].image.size[::-1] if samples else (0, 0)
    results["random"] = score([rng.random(size) for _ in images], objects, boxes)
    for method in methods:
        heatmaps = []
        for start in range(0, len(images), batch_size):
            found = explainer(images[start : start + batch_size], method=method,
                              detection=chosen[start : start + batch_size])
            heatmaps += [e.heatmap for e in found]
        results[method] = score(heatmaps, objects, boxes)
    return results


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=200, help="held-out two-object images")
    parser.add_argument("--model", default="demo-yolos", help="a YOLOS detector trained on the demo shapes")
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the figures do not depend on it)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    explainer = RolloutExplainer.from_pretrained(args.model)
    results = run(explainer, args.images, args.methods, args.batch_size)
    counts = results.pop("_counts")
    print(f"model {args.model}: {counts['images']} held-out two-object images, {counts['objects']} objects, "
          f"{counts['matched']} matched to a detection (same class, IoU >= 0.5)\n")
    print("| method | own box | other boxes | own > other |")
    print("|---|---|---|---|")
    for name, row in results.items():
        title = "random heat-map" if name == "random" else name
        print(f"| {title} | {row['own']:.1%} | {row['other']:.1%} | {row['wins']:.1%} |")
    print(f"\n({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
