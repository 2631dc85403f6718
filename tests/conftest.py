"""Small random checkpoints of several ViT families, saved and loaded the way a user would."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
torch.set_num_threads(2)

LABELS = {0: "cat", 1: "dog", 2: "tabby, tabby cat", 3: "golden retriever"}


def _common(**extra):
    base = dict(
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=64,
        image_size=32,
        patch_size=8,
        num_labels=len(LABELS),
        id2label=LABELS,
        label2id={v: k for k, v in LABELS.items()},
    )
    base.update(extra)
    return base


def build_checkpoint(kind: str, directory) -> str:
    """Write a random checkpoint of ``kind`` (with its image-processor config) to ``directory``."""
    import transformers as T

    torch.manual_seed(0)
    if kind == "vit":
        model = T.ViTForImageClassification(T.ViTConfig(**_common()))
        processor = T.ViTImageProcessorPil(size={"height": 32, "width": 32})
    elif kind == "vit_backbone":
        model = T.ViTModel(T.ViTConfig(**_common()))
        processor = T.ViTImageProcessorPil(size={"height": 32, "width": 32})
    elif kind == "deit":
        model = T.DeiTForImageClassification(T.DeiTConfig(**_common()))
        processor = T.DeiTImageProcessorPil(size={"height": 40, "width": 40}, crop_size={"height": 32, "width": 32})
    elif kind == "deit_teacher":
        model = T.DeiTForImageClassificationWithTeacher(T.DeiTConfig(**_common()))
        processor = T.DeiTImageProcessorPil(size={"height": 40, "width": 40}, crop_size={"height": 32, "width": 32})
    elif kind == "dinov2_registers":
        model = T.Dinov2WithRegistersForImageClassification(
            T.Dinov2WithRegistersConfig(**_common(num_register_tokens=4, image_size=48))
        )
        # non-square input: a 4 × 6 patch grid
        processor = T.BitImageProcessorPil(
            do_resize=True,
            size={"height": 32, "width": 48},
            do_center_crop=False,
            image_mean=[0.485, 0.456, 0.406],
            image_std=[0.229, 0.224, 0.225],
        )
    elif kind == "resnet":
        model = T.ResNetForImageClassification(T.ResNetConfig(hidden_sizes=[8, 8, 8, 8], depths=[1, 1, 1, 1], embedding_size=8))
        processor = T.ViTImageProcessorPil(size={"height": 32, "width": 32})
    elif kind == "swin":
        model = T.SwinForImageClassification(
            T.SwinConfig(image_size=32, patch_size=4, embed_dim=8, depths=[1, 1], num_heads=[1, 1], window_size=4)
        )
        processor = T.ViTImageProcessorPil(size={"height": 32, "width": 32})
    else:
        raise ValueError(kind)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return str(directory)


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    """``checkpoint(kind) -> path``, each kind built once per session."""
    cache: dict[str, str] = {}

    def get(kind: str) -> str:
        if kind not in cache:
            cache[kind] = build_checkpoint(kind, tmp_path_factory.mktemp(kind))
        return cache[kind]

    return get


@pytest.fixture(scope="session")
def images():
    rng = np.random.default_rng(0)
    return [
        Image.fromarray(rng.integers(0, 256, (50, 60, 3), dtype=np.uint8)),
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)),
        Image.fromarray(rng.integers(0, 256, (30, 90, 3), dtype=np.uint8)),
    ]
