"""Train the demo detector shipped in ``src/hf_vit_rollout/demo/checkpoint_yolos``.

A small ``YolosForObjectDetection`` (64 px input, 8 px patches, hidden 64, 4 layers, 10 detection
tokens) learns to find the shapes of :mod:`hf_vit_rollout.demo.data` (one or two per image, ten
classes) with ``transformers``' own YOLOS loss: labels are ``{"class_labels", "boxes"}`` per image,
the boxes the tight box of each object's mask in normalised ``(cx, cy, w, h)``
(:func:`~hf_vit_rollout.demo.data.detection_targets`), matched to the detection tokens by the
Hungarian matcher, with cross-entropy (no-object weighted by ``eos_coefficient``), L1 and GIoU.

The recipe is the demo ViT's (``train_demo_model.py``): fresh images every step from seeds below
``HELD_OUT_SEED``, AdamW with warm-up and cosine decay, gradient clipping, a resumable state file.
The held-out score is mAP@0.5 over the ten classes (all-point interpolated average precision,
every detection token a candidate ranked by its class probability, a ground-truth box matched at
most once at IoU >= 0.5) on images from seeds ``HELD_OUT_SEED`` on, and the mean IoU of each
ground-truth box with the best same-class detection scoring at least 0.5::

    python scripts/train_demo_yolos.py                      # writes the shipped checkpoint
    python scripts/train_demo_yolos.py --state /tmp/yolos.state   # resumable: saved every 100 steps
    python scripts/train_demo_yolos.py --steps 100 --out /tmp/quick   # a quick smoke run
"""

from __future__ import annotations

import logging
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from transformers import YolosConfig, YolosForObjectDetection, YolosImageProcessorPil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_demo_model import make_parser  # noqa: E402

from hf_vit_rollout.demo.data import CLASSES, HELD_OUT_SEED, IMAGE_SIZE, detection_targets, make_sample  # noqa: E402

log = logging.getLogger("train_demo_yolos")

#: Where the shipped checkpoint lives.
CHECKPOINT = Path(__file__).resolve().parents[1] / "src" / "hf_vit_rollout" / "demo" / "checkpoint_yolos"

#: Detection tokens of the demo detector (an image holds at most two objects).
DETECTION_TOKENS = 10


def build_model(seed: int) -> YolosForObjectDetection:
    torch.manual_seed(seed)
    config = YolosConfig(
        image_size=[IMAGE_SIZE, IMAGE_SIZE],
        patch_size=8,
        num_channels=3,
        hidden_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=128,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        num_detection_tokens=DETECTION_TOKENS,
        use_mid_position_embeddings=False,
        num_labels=len(CLASSES),
        id2label=dict(enumerate(CLASSES)),
        label2id={name: i for i, name in enumerate(CLASSES)},
    )
    return YolosForObjectDetection(config)


def build_processor() -> YolosImageProcessorPil:
    """Resize to the 64 × 64 model input (the demo images already are), no padding."""
    return YolosImageProcessorPil(
        do_resize=True,
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        do_pad=False,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )


def batch(seeds, processor) -> tuple[torch.Tensor, list[dict], list]:
    """Pixels, YOLOS labels and the samples of these seeds."""
    samples = [make_sample(int(s)) for s in seeds]
    pixels = processor(images=[s.image for s in samples], return_tensors="pt")["pixel_values"]
    labels = []
    for sample in samples:
        classes, boxes = detection_targets(sample)
        labels.append({"class_labels": torch.tensor(classes, dtype=torch.long), "boxes": torch.from_numpy(boxes)})
    return pixels, labels, samples


def cxcywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    cx, cy, w, h = np.asarray(boxes, dtype=np.float64).reshape(-1, 4).T
    return np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)


def _area(boxes: np.ndarray) -> np.ndarray:
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(N, 4)`` × ``(M, 4)`` ``(x0, y0, x1, y1)`` boxes → ``(N, M)`` intersection over union."""
    a, b = np.asarray(a, dtype=np.float64).reshape(-1, 4), np.asarray(b, dtype=np.float64).reshape(-1, 4)
    w = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    h = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = w * h
    union = _area(a)[:, None] + _area(b)[None, :] - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def average_precision(scores: list[float], hits: list[bool], num_truth: int) -> float:
    """All-point interpolated AP of detections ranked by score (``hits``: matched a ground truth)."""
    if num_truth == 0:
        return float("nan")
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    tp = np.asarray(hits, dtype=np.float64)[order]
    recall = np.concatenate([[0.0], np.cumsum(tp) / num_truth])
    precision = np.concatenate([[1.0], np.cumsum(tp) / np.arange(1, len(tp) + 1)])
    precision = np.maximum.accumulate(precision[::-1])[::-1]  # the precision envelope
    return float(np.sum(np.diff(recall) * precision[1:]))


def detection_quality(predictions: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
                      truths: list[tuple[list[int], np.ndarray]], iou_threshold: float = 0.5,
                      score_threshold: float = 0.5) -> dict[str, float]:
    """mAP at ``iou_threshold`` and the mean IoU of ground-truth boxes with their best detection.

    Args:
        predictions: per image, ``(scores (D,), labels (D,), boxes (D, 4) xyxy)``.
        truths: per image, ``(labels, boxes (G, 4) xyxy)``.
    """
    per_class = {c: ([], [], 0) for c in range(len(CLASSES))}
    ious = []
    for (scores, labels, boxes), (true_labels, true_boxes) in zip(predictions, truths):
        for c in range(len(CLASSES)):
            mine = np.flatnonzero(labels == c)
            truth = [k for k, t in enumerate(true_labels) if t == c]
            s, h, n = per_class[c]
            taken = set()
            overlap = box_iou(boxes[mine], true_boxes[truth]) if len(mine) and truth else np.zeros((len(mine), len(truth)))
            for i in np.argsort(-scores[mine], kind="stable"):
                best = -1
                if truth:
                    free = [j for j in range(len(truth)) if j not in taken]
                    if free:
                        j = max(free, key=lambda j: overlap[i, j])
                        best = j if overlap[i, j] >= iou_threshold else -1
                if best >= 0:
                    taken.add(best)
                s.append(float(scores[mine][i]))
                h.append(best >= 0)
            per_class[c] = (s, h, n + len(truth))
        for label, box in zip(true_labels, true_boxes):
            confident = (labels == label) & (scores >= score_threshold)
            ious.append(float(box_iou(box, boxes[confident]).max()) if confident.any() else 0.0)
    aps = [average_precision(s, h, n) for s, h, n in per_class.values() if n]
    return {"map50": float(np.mean(aps)), "mean_iou": float(np.mean(ious)), "boxes": len(ious)}


@torch.no_grad()
def evaluate(model, processor, num_images: int, batch_size: int = 250) -> dict[str, float]:
    model.eval()
    seeds = np.arange(HELD_OUT_SEED, HELD_OUT_SEED + num_images)
    predictions, truths = [], []
    for start in range(0, num_images, batch_size):
        pixels, labels, _ = batch(seeds[start : start + batch_size], processor)
        out = model(pixel_values=pixels)
        scores, classes = out.logits.softmax(-1)[..., :-1].max(-1)
        for b, target in enumerate(labels):
            predictions.append((scores[b].numpy(), classes[b].numpy(), cxcywh_to_xyxy(out.pred_boxes[b].numpy())))
            truths.append((target["class_labels"].tolist(), cxcywh_to_xyxy(target["boxes"].numpy())))
    model.train()
    quality = detection_quality(predictions, truths)
    quality["images"] = num_images
    return quality


def train(model, processor, args, log_every: int = 50) -> float:
    """Fresh images every step, the model's own YOLOS loss, AdamW with warm-up and cosine decay,
    gradient clipping. Returns the training time in seconds."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    warmup = max(args.steps // 20, 1)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(step / args.steps, 1.0))),
    )
    rng = np.random.default_rng(args.seed)
    first, spent = 0, 0.0
    state = args.state
    if state is not None and state.exists():  # resume: the same run, continued (same seeds, same schedule)
        saved = torch.load(state, weights_only=False)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        schedule.load_state_dict(saved["schedule"])
        rng.bit_generator.state = saved["rng"]
        first, spent = saved["step"], saved["seconds"]
        log.info("resumed from %s at step %d (%.0f s of training so far)", state, first, spent)
    model.train()
    started = time.time() - spent
    for step in range(first, args.steps):
        seeds = rng.integers(0, HELD_OUT_SEED, args.batch_size)
        pixels, labels, _ = batch(seeds, processor)
        out = model(pixel_values=pixels, labels=labels)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if step % log_every == 0 or step == args.steps - 1:
            parts = ", ".join(f"{k} {v.item():.3f}" for k, v in out.loss_dict.items())
            log.info("step %d/%d loss %.4f (%s) (%.0f s)", step, args.steps, out.loss.item(), parts, time.time() - started)
        if args.eval_every and step and step % args.eval_every == 0:
            interim = evaluate(model, processor, 500)
            log.info("step %d held-out (500 images): mAP@0.5 %.4f, mean IoU %.4f", step, interim["map50"], interim["mean_iou"])
        if state is not None and (step + 1) % args.state_every == 0:
            keep = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                    "rng": rng.bit_generator.state, "step": step + 1, "seconds": time.time() - started}
            torch.save(keep, state.with_suffix(".tmp"))
            state.with_suffix(".tmp").replace(state)
    return time.time() - started


def main(argv=None) -> None:
    args = make_parser(__doc__, 3000, 32, 1e-3, 500, CHECKPOINT).parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    model, processor = build_model(args.seed), build_processor()
    parameters = sum(p.numel() for p in model.parameters())
    log.info("%d parameters", parameters)
    seconds = train(model, processor, args)
    metrics = evaluate(model, processor, args.eval_images)
    log.info("held-out (%d unseen images, %d boxes): mAP@0.5 %.4f, mean IoU %.4f; trained %d steps in %.0f s",
             metrics["images"], metrics["boxes"], metrics["map50"], metrics["mean_iou"], args.steps, seconds)
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out)
    processor.save_pretrained(args.out)
    (args.out / "TRAINING.md").write_text(
        f"Trained by scripts/train_demo_yolos.py --steps {args.steps} --batch-size {args.batch_size} "
        f"--lr {args.lr} --seed {args.seed}\n\n"
        f"Held-out ({metrics['images']} images, {metrics['boxes']} boxes, seeds from {HELD_OUT_SEED}): "
        f"mAP@0.5 {metrics['map50']:.4f} over the {len(CLASSES)} classes; mean IoU of each ground-truth box with "
        f"its best same-class detection scoring >= 0.5 (0 when none) {metrics['mean_iou']:.4f}.\n"
        f"Training time: {seconds:.0f} s on {args.threads} CPU threads.\n\n"
        f"Model: YolosForObjectDetection, {IMAGE_SIZE} px input, 8 px patches (8 x 8 grid), hidden 64, 4 layers, "
        f"4 heads, {DETECTION_TOKENS} detection tokens, {parameters:,} parameters.\n"
    )
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
