"""Text targets for CLIP and SigLIP: "where does the model see a dog, and where a cat?"."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hf_vit_rollout import RolloutExplainer, TargetError


@pytest.fixture(scope="module")
def clip_checkpoint(checkpoint):
    return checkpoint("clip")


@pytest.fixture(scope="module")
def siglip_checkpoint(checkpoint):
    return checkpoint("siglip")


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(0).integers(0, 256, (48, 48, 3), dtype=np.uint8)


def test_dog_and_cat_give_two_different_maps(clip_checkpoint, image):
    explainer = RolloutExplainer.from_pretrained(clip_checkpoint, method="gae")
    assert explainer.is_image_text_model and explainer.tokenizer is not None
    dog = explainer(image, text="a photo of a dog")
    cat = explainer(image, text="a photo of a cat")
    assert dog.mask.shape == cat.mask.shape == (4, 4)
    assert dog.label == "a photo of a dog" and dog.params["text"] == "a photo of a dog"
    assert not np.allclose(dog.mask, cat.mask)


def test_siglip_without_class_token(siglip_checkpoint, image):
    """SigLIP has no CLS token: the output is the mean of the patch tokens, as in rollout."""
    explainer = RolloutExplainer.from_pretrained(siglip_checkpoint, method="gae")
    assert explainer.is_image_text_model
    dog = explainer(image, text="a photo of a dog")
    cat = explainer(image, text="a photo of a cat")
    assert dog.token_relevance.shape == (16,)  # 4 × 4 patches, no prefix tokens
    assert dog.mask.max() == pytest.approx(1.0)
    assert not np.allclose(dog.mask, cat.mask)
    assert explainer(image, method="rollout").mask.shape == (4, 4)


def test_text_matches_a_callable_on_the_full_model(clip_checkpoint, image):
    explainer = RolloutExplainer.from_pretrained(clip_checkpoint, method="grad_rollout")
    by_text = explainer(image, text="a dog")
    tokens = explainer.tokenizer(["a dog"], padding=True, return_tensors="pt")
    pixels = explainer.image_processor(images=[image], return_tensors="pt")["pixel_values"]
    maps = []
    from hf_vit_rollout.capture import AttentionCapture

    # the vision tower's attention only: the text tower's layers must not be mixed in
    with AttentionCapture(explainer.model, lambda layer, a: maps.append(a.shape), modules_root=explainer.model.vision_model):
        explainer.model(pixel_values=pixels, **tokens)
    assert len(maps) == 3 and all(shape[-1] == 17 for shape in maps)
    assert by_text.token_relevance.shape == (17,)


def test_rollout_without_text_runs_the_vision_tower(clip_checkpoint, image):
    explainer = RolloutExplainer.from_pretrained(clip_checkpoint)
    exp = explainer(image)
    assert exp.mask.shape == (4, 4) and exp.label is None


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"text": "a dog", "target": 1, "method": "gae"}, "not both"),
        ({"text": "a dog", "method": "rollout"}, "class-agnostic"),
        ({"text": "  ", "method": "gae"}, "non-empty"),
        ({"target": 1, "method": "gae"}, "no classifier"),
    ],
)
def test_text_errors(clip_checkpoint, image, kwargs, match):
    explainer = RolloutExplainer.from_pretrained(clip_checkpoint)
    with pytest.raises(TargetError, match=match):
        explainer(image, **kwargs)


def test_text_on_a_classifier_is_refused(checkpoint, image):
    explainer = RolloutExplainer.from_pretrained(checkpoint("vit"))
    with pytest.raises(TargetError, match="image-text model"):
        explainer(image, text="a dog", method="gae")
