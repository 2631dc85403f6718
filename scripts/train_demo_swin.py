"""Train the demo Swin shipped in ``src/hf_vit_rollout/demo/checkpoint_swin``.

A small ``SwinForImageClassification`` (64 px input, 4 px patches, three stages with 16 × 16,
8 × 8 and 4 × 4 token grids, 4 × 4 windows, shifted windows in every second block) learns the ten
shape classes of :mod:`hf_vit_rollout.demo.data`, with the recipe of ``train_demo_model.py`` (the
demo ViT): fresh images every step from seeds below ``HELD_OUT_SEED``, soft-target cross-entropy
over the objects' classes, AdamW with warm-up and cosine decay, held-out evaluation on seeds from
``HELD_OUT_SEED`` (a class counts as present when its softmax probability exceeds
``PRESENT_THRESHOLD``). Data, processor and evaluation are imported from that script so both demo
models are trained and scored the same way::

    python scripts/train_demo_swin.py                  # writes the shipped checkpoint
    python scripts/train_demo_swin.py --steps 100 --out /tmp/quick   # a quick smoke run
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from transformers import SwinConfig, SwinForImageClassification

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_demo_model import batch, build_processor, evaluate  # noqa: E402

from hf_vit_rollout.demo.data import CLASSES, HELD_OUT_SEED, IMAGE_SIZE  # noqa: E402

log = logging.getLogger("train_demo_swin")

#: Where the shipped checkpoint lives.
CHECKPOINT = Path(__file__).resolve().parents[1] / "src" / "hf_vit_rollout" / "demo" / "checkpoint_swin"


def build_model(seed: int) -> SwinForImageClassification:
    torch.manual_seed(seed)
    config = SwinConfig(
        image_size=IMAGE_SIZE,
        patch_size=4,
        num_channels=3,
        embed_dim=32,
        depths=[2, 2],
        num_heads=[2, 4],
        window_size=4,
        mlp_ratio=2.0,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        drop_path_rate=0.0,
        num_labels=len(CLASSES),
        id2label=dict(enumerate(CLASSES)),
        label2id={name: i for i, name in enumerate(CLASSES)},
    )
    return SwinForImageClassification(config)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=700)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-images", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--eval-every", type=int, default=350, help="log held-out accuracy on 500 images this often")
    parser.add_argument("--out", type=Path, default=CHECKPOINT)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)

    model = build_model(args.seed)
    processor = build_processor()
    log.info("%d parameters", sum(p.numel() for p in model.parameters()))
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    warmup = max(args.steps // 20, 1)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(step / args.steps, 1.0))),
    )
    rng = np.random.default_rng(args.seed)
    model.train()
    started = time.time()
    for step in range(args.steps):
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
        if step % 100 == 0 or step == args.steps - 1:
            log.info("step %d/%d loss %.4f (%.0f s)", step, args.steps, loss.item(), time.time() - started)
        if args.eval_every and step and step % args.eval_every == 0:
            interim = evaluate(model, processor, 500)
            log.info("step %d held-out: label accuracy %.4f, exact match %.4f", step, interim["label_accuracy"], interim["exact_match"])
    trained = time.time() - started
    metrics = evaluate(model, processor, args.eval_images)
    log.info(
        "held-out (%d unseen images): label accuracy %.4f, exact match %.4f; trained %d steps in %.0f s",
        metrics["images"],
        metrics["label_accuracy"],
        metrics["exact_match"],
        args.steps,
        trained,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out)
    processor.save_pretrained(args.out)
    (args.out / "TRAINING.md").write_text(
        f"Trained by scripts/train_demo_swin.py --steps {args.steps} --batch-size {args.batch_size} "
        f"--lr {args.lr} --seed {args.seed}\n\n"
        f"Held-out ({metrics['images']} images, seeds from {HELD_OUT_SEED}): "
        f"label accuracy {metrics['label_accuracy']:.4f}, exact match {metrics['exact_match']:.4f}.\n"
        f"Training time: {trained:.0f} s on {args.threads} CPU threads (shared machine).\n"
    )
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
