"""The newer methods on Swin, through the window folding: Transformer Attribution, AttnLRP, CP-LRP and
LibraGrad with their rules attached to Swin's own attention; LeGrad on the last stage's blocks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers as T
from transformers.models.swin.modeling_swin import window_partition

from hf_vit_rollout import RolloutExplainer
from hf_vit_rollout.demo import example_images
from hf_vit_rollout.lrp import ATTNLRP, CP_LRP, LIBRAGRAD, attnlrp_relevance, relevance_budget

from .test_windows import TINY


@pytest.fixture(scope="module")
def demo_swin():
    from PIL import Image

    explainer = RolloutExplainer.from_pretrained("demo-swin")
    images = [Image.open(p).convert("RGB") for p in example_images()]
    return explainer, explainer.image_processor(images=images, return_tensors="pt")["pixel_values"], images


@pytest.mark.parametrize("rules", [ATTNLRP, CP_LRP, LIBRAGRAD], ids=lambda r: r.name)
def test_lrp_rules_reach_every_operation_of_swin(demo_swin, rules):
    """The budget closes on the demo Swin: every operation that keeps relevance has a rule (windows,
    shifts, padding and patch merging pass it on exactly); the relative position bias and the shift
    mask are booked as attention biases under AttnLRP."""
    explainer, pixels, _ = demo_swin
    budget = relevance_budget(explainer.model, pixels, rules=rules)
    assert torch.all(budget.fractions()["unaccounted"].abs() < 1e-5)
    if rules is ATTNLRP:
        assert budget.absorbed["attention_bias"].abs().max() > 1e-3 * budget.score.abs().min()


def test_input_relevance_methods_through_the_explainer(demo_swin):
    explainer, pixels, images = demo_swin
    direct = attnlrp_relevance(explainer.model, pixels, target=[1, 2, 3, 4]).token_relevance
    results = explainer(images, method="attnlrp", target=[1, 2, 3, 4])
    for result, row in zip(results, direct):
        assert result.mask.shape == (16, 16)
        np.testing.assert_allclose(result.token_relevance, row.numpy(), rtol=1e-5, atol=1e-7)
    for method in ("cp_lrp", "libragrad", "transformer_attribution"):
        exp = explainer(images[0], method=method)
        assert exp.mask.shape == (16, 16) and exp.mask.max() == pytest.approx(1.0)


def _legrad_swin_reference(model, pixels, target):
    """LeGrad on the last stage from the paper's equations: each block's output read out by the model's
    final norm, pooling and classifier; the gradient on that block's window attention; the mean over
    the stage's queries of the heads' mean of its positive part, scattered to the keys' tokens with
    the model's own window partition, then split equally among the first-stage children."""
    swin, blocks = model.swin, model.swin.encoder.layers[-1].blocks
    kept = []
    hooks = [b.register_forward_hook(lambda m, a, out: kept.append((m, out[0], out[1]))) for b in blocks]
    model.set_attn_implementation("eager")
    try:
        model(pixel_values=pixels)
    finally:
        model.set_attn_implementation("sdpa")
        for hook in hooks:
            hook.remove()
    grid = model.config.image_size // model.config.patch_size // 2 ** (len(model.config.depths) - 1)
    batch, total = pixels.shape[0], 0
    for block, hidden, attention in kept:
        logits = model.classifier(torch.flatten(swin.pooler(swin.layernorm(hidden).transpose(1, 2)), 1))
        (grad,) = torch.autograd.grad(logits[:, target].sum(), attention, retain_graph=True)
        per_slot = grad.clamp(min=0).mean(1).sum(1) / (grid * grid)  # (B·nW, w²): Σ over the window's queries / N
        ids = torch.arange(grid * grid, dtype=torch.float32).view(1, grid, grid, 1)
        if block.shift_size:
            ids = torch.roll(ids, shifts=(-block.shift_size, -block.shift_size), dims=(1, 2))
        slots = window_partition(ids, block.window_size).reshape(-1).long()  # token of every window slot
        row = torch.zeros(batch, grid * grid).index_add_(1, slots, per_slot.reshape(batch, -1))
        total = total + row
    children = total.view(batch, grid, 1, grid, 1).expand(-1, -1, 2, -1, 2).reshape(batch, 2 * grid, 2 * grid) / 4
    flat = children.flatten(1)
    return flat - flat.amin(1, keepdim=True)


def test_legrad_on_swin_equals_the_reference(demo_swin):
    explainer, pixels, _ = demo_swin
    ours = explainer.relevance_maps(pixels, target=3, method="legrad").flatten(1)
    torch.testing.assert_close(ours, _legrad_swin_reference(explainer.model, pixels, 3), rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize(
    "config_class,model_class",
    [(T.Swinv2Config, T.Swinv2ForImageClassification), (T.MaskFormerSwinConfig, T.MaskFormerSwinModel)],
)
def test_other_windowed_families_get_legrad_and_refuse_lrp(tmp_path, config_class, model_class):
    torch.manual_seed(0)
    model_class(config_class(image_size=32, num_labels=3, **TINY)).save_pretrained(tmp_path)
    T.ViTImageProcessorPil(size={"height": 28, "width": 36}).save_pretrained(tmp_path)
    explainer = RolloutExplainer.from_pretrained(str(tmp_path))
    pixels = torch.randn(2, 3, 28, 36, generator=torch.Generator().manual_seed(0))
    target = 1 if explainer.num_labels else (lambda out: out.pooler_output.sum(-1))
    maps = explainer.relevance_maps(pixels, target=target, method="legrad")
    assert maps.shape == (2, 14, 18) and torch.isfinite(maps).all() and maps.amax() > 0
    for method in ("attnlrp", "cp_lrp", "libragrad", "transformer_attribution"):
        with pytest.raises(ValueError, match="compute q·kᵀ, the softmax and A·v inline"):
            explainer.relevance_maps(pixels, target=target, method=method)
