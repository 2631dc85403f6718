"""Train the demo Swin shipped in ``src/hf_vit_rollout/demo/checkpoint_swin``.

A small ``SwinForImageClassification`` (64 px input, 4 px patches, two stages with 16 × 16 and
8 × 8 token grids, 4 × 4 windows, shifted windows in every second block) learns the ten shape
classes of :mod:`hf_vit_rollout.demo.data`, with the recipe of ``train_demo_model.py`` (the demo
ViT): fresh images every step from seeds below ``HELD_OUT_SEED``, soft-target cross-entropy over
the objects' classes, AdamW with warm-up and cosine decay, held-out evaluation on seeds from
``HELD_OUT_SEED`` (a class counts as present when its softmax probability exceeds
``PRESENT_THRESHOLD``). Data, processor and evaluation are imported from that script so both demo
models are trained and scored the same way, for as long: 3,000 steps of 64 images::

    python scripts/train_demo_swin.py                  # writes the shipped checkpoint
    python scripts/train_demo_swin.py --state /tmp/swin.state   # resumable: saved every 100 steps
    python scripts/train_demo_swin.py --steps 100 --out /tmp/quick   # a quick smoke run
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import torch
from transformers import SwinConfig, SwinForImageClassification

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_demo_model import build_processor, evaluate_and_save, make_parser, train  # noqa: E402

from hf_vit_rollout.demo.data import CLASSES, IMAGE_SIZE  # noqa: E402

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
    args = make_parser(__doc__, 3000, 64, 2e-3, 500, CHECKPOINT).parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    model, processor = build_model(args.seed), build_processor()
    log.info("%d parameters", sum(p.numel() for p in model.parameters()))
    seconds = train(model, processor, args, log_every=100)
    evaluate_and_save(model, processor, args, seconds, "scripts/train_demo_swin.py")


if __name__ == "__main__":
    main()
