"""Every class-specific method through the explainer equals an independent reference.

The references (``tests/reference_vit.py``) run their own ViT/DeiT forward pass from the saved
checkpoint's weights and compute each method as its paper defines it, with explicit relevance
rules; they share no code with the package. The checkpoints have every parameter drawn at random
(biases and LayerNorm weights too, so that rules which treat biases differently give different
maps) and are loaded through ``RolloutExplainer.from_pretrained(folder)`` as a user would.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers as T
from PIL import Image

from hf_vit_rollout import RolloutExplainer

from . import reference_vit as ref

LABELS = {0: "a", 1: "b", 2: "c"}
SIZES = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64, image_size=32,
             patch_size=8, num_labels=3, id2label=LABELS, label2id={v: k for k, v in LABELS.items()})


def _randomise(model, seed: int) -> None:
    """Every parameter at random: weights N(0, 0.3²), biases and tokens N(0, 0.3²), LayerNorm weights 1 + N(0, 0.2²)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=generator)
            if "layernorm" in name and name.endswith("weight"):
                p.copy_(1 + 0.2 * noise)
            else:
                p.copy_(0.3 * noise)


def _save(kind: str, folder) -> str:
    if kind == "vit":
        model = T.ViTForImageClassification(T.ViTConfig(**SIZES))
        processor = T.ViTImageProcessorPil(size={"height": 32, "width": 32})
    else:
        model = T.DeiTForImageClassification(T.DeiTConfig(**SIZES))
        processor = T.DeiTImageProcessorPil(size={"height": 40, "width": 40}, crop_size={"height": 32, "width": 32})
    _randomise(model, seed=1 if kind == "vit" else 2)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module", params=["vit", "deit"])
def checkpoint(request, tmp_path_factory):
    """``(folder, image, pixel values)`` of one random family checkpoint."""
    folder = _save(request.param, tmp_path_factory.mktemp(request.param))
    rng = np.random.default_rng(3)
    image = Image.fromarray(rng.integers(0, 256, (44, 52, 3), dtype=np.uint8))
    pixels = T.AutoImageProcessor.from_pretrained(folder)(images=image, return_tensors="pt")["pixel_values"][0]
    return folder, image, pixels


@pytest.fixture(scope="module")
def case(checkpoint):
    """``(explainer, reference weights, image, pixel values)``, the explainer's model in float64.

    The references compute in float64. These random checkpoints are badly conditioned for the LRP
    rules (sums of relevance that nearly cancel are divided by), so a float32 computation is off by
    more than the tolerance on some targets: the reference itself, run in float32, differs from its
    float64 result by 3.4e-4 of the map's scale on DeiT, target 2, ``start_layer=0``. Comparing in
    float64 checks the rules, not the CPU's rounding; the float32 path is checked below against
    that bound.
    """
    folder, image, pixels = checkpoint
    explainer = RolloutExplainer.from_pretrained(folder)
    explainer.model.double()
    return explainer, ref.load_weights(folder), image, pixels


def _close(ours: np.ndarray, expected: torch.Tensor, rtol=2e-4):
    expected = expected.detach().numpy()
    scale = np.abs(expected).max()
    assert scale > 0
    np.testing.assert_allclose(ours, expected, rtol=0, atol=rtol * scale)


def test_the_reference_forward_is_the_models(case):
    explainer, weights, image, pixels = case
    with torch.no_grad():
        logits = explainer.model(pixel_values=pixels[None].double()).logits[0]
    np.testing.assert_allclose(ref.forward(weights, pixels).logits.detach().numpy(), logits.numpy(), atol=1e-4)
    probabilities = torch.softmax(logits, -1)
    explained = explainer(image, method="rollout")
    assert explained.predicted == int(probabilities.argmax())
    assert explained.score == pytest.approx(float(probabilities.max()), abs=1e-5)


@pytest.mark.parametrize("start_layer", [0, 1])
def test_transformer_attribution_equals_the_papers_computation(case, start_layer):
    explainer, weights, image, pixels = case
    for target in (0, 2):
        ours = explainer(image, method="transformer_attribution", target=target, start_layer=start_layer)
        _close(ours.token_relevance, ref.transformer_attribution(weights, pixels, target, start_layer))


def test_transformer_attribution_is_not_gae_on_these_models(case):
    """The maps differ by far more than the tolerance, so folding the wrong map is caught."""
    _, weights, _, pixels = case
    ta, gae = ref.transformer_attribution(weights, pixels, 1), ref.gae(weights, pixels, 1)
    assert (ta / ta.abs().max() - gae / gae.abs().max()).abs().max() > 0.02


@pytest.mark.parametrize("start_layer", [0, 2])
def test_gae_equals_the_papers_computation(case, start_layer):
    explainer, weights, image, pixels = case
    for target in (0, 1):
        ours = explainer(image, method="gae", target=target, start_layer=start_layer)
        _close(ours.token_relevance, ref.gae(weights, pixels, target, start_layer))


@pytest.mark.parametrize("discard_ratio", [0.0, 0.9])
def test_rollout_equals_the_papers_computation(case, discard_ratio):
    explainer, weights, image, pixels = case
    ours = explainer(image, method="rollout", head_fusion="mean", discard_ratio=discard_ratio)
    _close(ours.token_relevance, ref.attention_rollout(weights, pixels, discard_ratio))
    ours = explainer(image, method="rollout", head_fusion="mean", discard_ratio=discard_ratio, start_layer=1)
    _close(ours.token_relevance, ref.attention_rollout(weights, pixels, discard_ratio, start_layer=1))


@pytest.mark.parametrize("method", ["attnlrp", "cp_lrp"])
def test_lrp_token_relevance_equals_the_papers_rules(case, method):
    explainer, weights, image, pixels = case
    for target in (0, 1):
        ours = explainer(image, method=method, target=target)
        _close(ours.token_relevance, getattr(ref, method)(weights, pixels, target))


def test_attnlrp_and_cp_lrp_differ_on_these_models(case):
    _, weights, _, pixels = case
    a, c = ref.attnlrp(weights, pixels, 0), ref.cp_lrp(weights, pixels, 0)
    assert (a - c).abs().max() > 0.05 * a.abs().max()


@pytest.mark.parametrize("start_layer", [0, 1])
def test_legrad_equals_the_papers_computation(case, start_layer):
    explainer, weights, image, pixels = case
    ours = explainer(image, method="legrad", target=2, start_layer=start_layer)
    _close(ours.token_relevance, ref.legrad(weights, pixels, 2, start_layer))


def test_libragrad_equals_its_definition(case):
    explainer, weights, image, pixels = case
    for target in (0, 1):
        ours = explainer(image, method="libragrad", target=target)
        _close(ours.token_relevance, ref.libragrad(weights, pixels, target))


@pytest.mark.parametrize("method", ["gae", "transformer_attribution", "attnlrp"])
def test_a_frozen_model_is_explained_as_it_is(case, method):
    """Parameters with ``requires_grad=False`` (a frozen model) give the same maps: the gradient
    comes from the input side."""
    explainer, weights, image, pixels = case
    parameters = list(explainer.model.parameters())
    try:
        for p in parameters:
            p.requires_grad_(False)
        ours = explainer(image, method=method, target=1)
    finally:
        for p in parameters:
            p.requires_grad_(True)
    reference = {"gae": ref.gae, "transformer_attribution": ref.transformer_attribution, "attnlrp": ref.attnlrp}[method]
    _close(ours.token_relevance, reference(weights, pixels, 1))


@pytest.mark.parametrize("method", ["transformer_attribution", "gae", "attnlrp"])
def test_float32_maps_are_as_accurate_as_float32_allows(checkpoint, method, monkeypatch):
    """A float32 model's maps are within twice the reference's own float32 error of the exact map."""
    folder, image, pixels = checkpoint
    explainer = RolloutExplainer.from_pretrained(folder)
    reference = getattr(ref, method)
    exact = reference(ref.load_weights(folder), pixels, 2)
    monkeypatch.setattr(ref, "DTYPE", torch.float32)
    rounded = reference(ref.load_weights(folder), pixels, 2).double()
    ours = torch.from_numpy(explainer(image, method=method, target=2).token_relevance).double()
    scale = exact.abs().max()
    bound = 2 * (rounded - exact).abs().max() + 1e-6 * scale
    assert (ours - exact).abs().max() <= bound
