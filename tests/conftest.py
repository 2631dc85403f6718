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

#: Tests that may run past the suite's 300 s per-test timeout (pyproject ``--timeout``) on a loaded
#: 2-core machine: browsers, subprocess launchers, site builds, notebooks. Matched on the node id's
#: start; each gets this many seconds. A hang anywhere else fails after 300 s with every thread's stack.
SLOW_TESTS = {
    "tests/test_app.py": 900,
    "tests/test_app_load.py": 900,
    "tests/test_datasets_distributed.py": 900,
    "tests/test_benchmarks.py": 900,
    "tests/test_docs.py": 900,
    "tests/test_flow.py::test_fast_path_equals_scipy_dinic": 600,
    "notebooks/": 900,
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        for prefix, seconds in SLOW_TESTS.items():
            if item.nodeid.startswith(prefix) and item.get_closest_marker("timeout") is None:
                item.add_marker(pytest.mark.timeout(seconds))


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


def _tiny_tokenizer(folder):
    """A character-level CLIP BPE tokenizer (no merges), written next to the model."""
    import string

    import transformers as T

    specials = ["<|startoftext|>", "<|endoftext|>"]
    letters = list(string.ascii_lowercase)
    vocab = {token: i for i, token in enumerate(specials + letters + [c + "</w>" for c in letters])}
    T.CLIPTokenizer(vocab=vocab, merges=[]).save_pretrained(folder)
    return len(vocab)


TEXT = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
        "max_position_embeddings": 32, "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1}
VISION = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 3, "num_attention_heads": 2,
          "image_size": 32, "patch_size": 8}


#: Layer sizes of the small random family checkpoints (tests/test_families.py, tests/test_lrp_explainer.py).
SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32, patch_size=8)


def save_family_checkpoint(directory, config_class, model_class, extra: dict) -> str:
    """A small random checkpoint of one family (3 classes if it has a classifier), with a 32-px
    ViT image processor, saved to ``directory`` as a user would."""
    import transformers as T

    torch.manual_seed(0)
    config = config_class(**SMALL, **extra)
    if "Classification" in model_class.__name__:
        config.num_labels = 3
    model_class(config).save_pretrained(directory)
    T.ViTImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(directory)
    return str(directory)


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
    elif kind in ("clip", "siglip"):  # image-text models with a tiny character-level tokenizer
        vocab_size = _tiny_tokenizer(directory)
        if kind == "clip":
            config = T.CLIPConfig(text_config={**TEXT, "vocab_size": vocab_size}, vision_config=VISION, projection_dim=16)
            model = T.CLIPModel(config)
            processor = T.CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
        else:
            model = T.SiglipModel(T.SiglipConfig(text_config={**TEXT, "vocab_size": vocab_size}, vision_config=VISION))
            processor = T.SiglipImageProcessorPil(size={"height": 32, "width": 32})
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


@pytest.fixture(scope="session")
def demo_batch():
    """``(explainer, pixel_values, images)``: the shipped demo ViT and its four example images."""
    from hf_vit_rollout import RolloutExplainer
    from hf_vit_rollout.demo import example_images

    explainer = RolloutExplainer.from_pretrained("demo")
    images = [Image.open(p).convert("RGB") for p in example_images()]
    return explainer, explainer.image_processor(images=images, return_tensors="pt")["pixel_values"], images
