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


@pytest.mark.parametrize("method", ["gae", "grad_rollout"])
def test_text_explains_the_similarity_computed_by_the_full_model(clip_checkpoint, image, method):
    """A text target is the image-text similarity of the whole CLIP model (both towers): the map is
    the method computed here from the vision tower's attentions (``output_attentions``) and their
    gradients of ``logits_per_image`` (``torch.autograd.grad``), without package code."""
    import transformers as T

    explainer = RolloutExplainer.from_pretrained(clip_checkpoint, method=method)
    by_text = explainer(image, text="a dog", discard_ratio=0.0)
    model = T.CLIPModel.from_pretrained(clip_checkpoint, attn_implementation="eager").eval()
    tokens = T.AutoTokenizer.from_pretrained(clip_checkpoint)(["a dog"], padding=True, return_tensors="pt")
    pixels = T.AutoImageProcessor.from_pretrained(clip_checkpoint)(images=[image], return_tensors="pt")["pixel_values"]
    outputs = model(pixel_values=pixels, **tokens, output_attentions=True)
    attentions = outputs.vision_model_output.attentions
    grads = torch.autograd.grad(outputs.logits_per_image[0, 0], attentions)
    n = attentions[0].shape[-1]
    eye = torch.eye(n)
    result = eye
    for a, g in zip(attentions, grads):
        weighted = (a[0] * g[0]).detach()
        if method == "gae":
            result = result + weighted.clamp(min=0).mean(0) @ result
        else:
            step = 0.5 * weighted.mean(0).clamp(min=0) + 0.5 * eye
            result = step / step.sum(-1, keepdim=True) @ result
    assert len(attentions) == 3 and n == 17  # the vision tower's layers only, class token first
    np.testing.assert_allclose(by_text.token_relevance, result[0].numpy(), rtol=1e-4, atol=1e-6)


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
