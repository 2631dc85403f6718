"""Train the demo model shipped in ``src/hf_vit_rollout/demo/checkpoint``.

A small ``ViTForImageClassification`` (64 px input, 8 px patches, CLS token) learns the ten shape
classes of :mod:`hf_vit_rollout.demo.data`, with one or two objects per image. It is trained with a
soft-target cross-entropy (the target distribution puts equal mass on each object's class), which
learns far faster than per-class sigmoids; a class counts as present when its softmax probability
exceeds ``PRESENT_THRESHOLD`` (0.25: one object gives ~1, two give ~0.5 each).

Training images are drawn fresh for every step
from seeds below ``HELD_OUT_SEED``; the held-out evaluation uses seeds above it. Fixed seeds and a
fixed number of steps make the run reproducible (up to floating-point non-determinism of the CPU
kernels)::

    python scripts/train_demo_model.py                # writes the shipped checkpoint
    python scripts/train_demo_model.py --steps 200 --out /tmp/quick   # a quick smoke run
"""

from __future__ import annotations

import argparse
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessorPil

from hf_vit_rollout.demo import PRESENT_THRESHOLD
from hf_vit_rollout.demo.data import CLASSES, HELD_OUT_SEED, IMAGE_SIZE, make_sample
from hf_vit_rollout.explainer import demo_model_path

log = logging.getLogger("train_demo_model")


def build_model(seed: int) -> ViTForImageClassification:
    torch.manual_seed(seed)
    config = ViTConfig(
        image_size=IMAGE_SIZE,
        patch_size=8,
        num_channels=3,
        hidden_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=128,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        num_labels=len(CLASSES),
        id2label=dict(enumerate(CLASSES)),
        label2id={name: i for i, name in enumerate(CLASSES)},
    )
    return ViTForImageClassification(config)


def build_processor() -> ViTImageProcessorPil:
    return ViTImageProcessorPil(
        do_resize=True,
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )


def batch(seeds, processor) -> tuple[torch.Tensor, torch.Tensor]:
    samples = [make_sample(int(s)) for s in seeds]
    pixels = processor(images=[s.image for s in samples], return_tensors="pt")["pixel_values"]
    targets = torch.from_numpy(np.stack([s.multi_hot for s in samples]))
    return pixels, targets


@torch.no_grad()
def evaluate(model, processor, num_images: int, batch_size: int = 250) -> dict[str, float]:
    model.eval()
    seeds = np.arange(HELD_OUT_SEED, HELD_OUT_SEED + num_images)
    correct_labels = exact = total = 0
    for start in range(0, num_images, batch_size):
        pixels, targets = batch(seeds[start : start + batch_size], processor)
        predicted = (model(pixel_values=pixels).logits.softmax(-1) > PRESENT_THRESHOLD).float()
        correct_labels += (predicted == targets).sum().item()
        exact += (predicted == targets).all(dim=1).sum().item()
        total += len(targets)
    model.train()
    return {"label_accuracy": correct_labels / (total * len(CLASSES)), "exact_match": exact / total, "images": total}


def make_parser(description: str, steps: int, batch_size: int, lr: float, eval_every: int, out: Path) -> argparse.ArgumentParser:
    """The command line of both demo-model scripts, with each model's defaults."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--lr", type=float, default=lr)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-images", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--eval-every", type=int, default=eval_every, help="log held-out accuracy on 500 images this often")
    parser.add_argument("--out", type=Path, default=out)
    parser.add_argument("--state", type=Path, default=None,
                        help="save the whole training state here every --state-every steps, and resume from it if it exists")
    parser.add_argument("--state-every", type=int, default=100)
    return parser


def train(model, processor, args, log_every: int = 250) -> float:
    """The demo recipe: fresh images every step, soft-target cross-entropy, AdamW with warm-up and
    cosine decay, gradient clipping. Returns the training time in seconds."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    warmup = max(args.steps // 20, 1)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(step / args.steps, 1.0))),
    )
    rng = np.random.default_rng(args.seed)
    first, spent = 0, 0.0
    state = getattr(args, "state", None)
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
        pixels, targets = batch(seeds, processor)
        logits = model(pixel_values=pixels).logits
        distribution = targets / targets.sum(dim=1, keepdim=True)
        loss = -(distribution * logits.log_softmax(-1)).sum(-1).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        if step % log_every == 0 or step == args.steps - 1:
            log.info("step %d/%d loss %.4f (%.0f s)", step, args.steps, loss.item(), time.time() - started)
        if args.eval_every and step and step % args.eval_every == 0:
            interim = evaluate(model, processor, 500)
            log.info("step %d held-out: label accuracy %.4f, exact match %.4f", step, interim["label_accuracy"], interim["exact_match"])
        if state is not None and (step + 1) % args.state_every == 0:
            keep = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                    "rng": rng.bit_generator.state, "step": step + 1, "seconds": time.time() - started}
            torch.save(keep, state.with_suffix(".tmp"))
            state.with_suffix(".tmp").replace(state)
    return time.time() - started


def evaluate_and_save(model, processor, args, seconds: float, script: str) -> None:
    """Held-out accuracy, then the checkpoint and its TRAINING.md in ``args.out``."""
    metrics = evaluate(model, processor, args.eval_images)
    log.info(
        "held-out (%d unseen images): label accuracy %.4f, exact match %.4f; trained %d steps in %.0f s",
        metrics["images"], metrics["label_accuracy"], metrics["exact_match"], args.steps, seconds,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out)
    processor.save_pretrained(args.out)
    (args.out / "TRAINING.md").write_text(
        f"Trained by {script} --steps {args.steps} --batch-size {args.batch_size} "
        f"--lr {args.lr} --seed {args.seed}\n\n"
        f"Held-out ({metrics['images']} images, seeds from {HELD_OUT_SEED}): "
        f"label accuracy {metrics['label_accuracy']:.4f}, exact match {metrics['exact_match']:.4f}.\n"
        f"Training time: {seconds:.0f} s on {args.threads} CPU threads.\n"
    )
    log.info("wrote %s", args.out)


def main(argv=None) -> None:
    args = make_parser(__doc__, 3000, 64, 1e-3, 1000, demo_model_path()).parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    model, processor = build_model(args.seed), build_processor()
    evaluate_and_save(model, processor, args, train(model, processor, args), "scripts/train_demo_model.py")


if __name__ == "__main__":
    main()
