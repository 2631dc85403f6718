"""The windowed-block capture: one pass of a Swin folded into first-stage relevance, state restored."""

from __future__ import annotations

import threading

import pytest
import torch
import transformers as T

from hf_vit_rollout.methods import METHODS
from hf_vit_rollout.methods.chain import ChainFold
from hf_vit_rollout.window_capture import FORWARD_KWARGS, WindowBlockCapture, find_window_blocks, windowed_relevance
from hf_vit_rollout.windows import WindowedLayout, fold_layer_map

from .test_windows import TINY

CLASSIFIERS = {
    "swin": (T.SwinConfig, T.SwinForImageClassification),
    "swinv2": (T.Swinv2Config, T.Swinv2ForImageClassification),
    "donut-swin": (T.DonutSwinConfig, T.DonutSwinForImageClassification),
}
ARGS = ("mean", 0.0, None)


def _classifier(family, tmp_path, size=32):
    config_class, model_class = CLASSIFIERS[family]
    torch.manual_seed(0)
    model = model_class(config_class(image_size=size, num_labels=3, **TINY))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    model.save_pretrained(tmp_path)
    return model_class.from_pretrained(tmp_path)  # SDPA where the family has it: the capture switches


def _reference(model, pixels, method, target):
    """Relevance from attentions/gradients taken with retain_grad, paired by block, folded by hand."""
    spec = METHODS[method]
    layout = WindowedLayout.from_config(model.config, tuple(pixels.shape[-2:]))
    kept = []

    def keep(module, args, output):
        output[1].retain_grad()
        kept.append(output[1])

    hooks = [block.register_forward_hook(keep) for _, block in find_window_blocks(model, model.config.model_type)]
    model.set_attn_implementation("eager")
    try:
        outputs = model(pixel_values=pixels, output_attentions=True)
        if spec.needs_gradient:
            outputs.logits[:, target].sum().backward()
    finally:
        for hook in hooks:
            hook.remove()
    fold = ChainFold(layout.output_weights(), "forward")
    for step, merge in layout.merge_maps(pixels.shape[0]).items():
        fold.add(step, merge)
    for block, step, attention in zip(layout.blocks, layout.block_steps(), kept):
        grad = attention.grad if spec.needs_gradient else None
        fold.add(step, fold_layer_map(spec.layer_map, attention.detach(), grad, block, *ARGS))
    return fold.relevance(len(layout.chain_steps()))


@pytest.mark.parametrize("family", list(CLASSIFIERS))
@pytest.mark.parametrize("method", ["rollout", "grad_rollout", "gae"])
def test_capture_equals_a_hand_folded_reference(family, method, tmp_path):
    model = _classifier(family, tmp_path)
    pixels = torch.randn(2, 3, 28, 36)
    score = (lambda out: out.logits[:, 1]) if METHODS[method].needs_gradient else None
    layout, relevance, outputs = windowed_relevance(model, pixels, METHODS[method], ARGS, score)
    assert relevance.shape == (2, 14 * 18) and layout.patch_relevance(relevance).shape == (2, 14, 18)
    assert outputs.logits.shape == (2, 3)
    expected = _reference(model, pixels, method, 1)
    torch.testing.assert_close(relevance, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("method", ["rollout", "gae"])
def test_relevance_of_an_image_does_not_depend_on_the_batch(method, tmp_path):
    model = _classifier("swin", tmp_path)
    pixels = torch.randn(3, 3, 32, 32)
    score = (lambda out: out.logits[:, 2]) if METHODS[method].needs_gradient else None
    _, together, _ = windowed_relevance(model, pixels, METHODS[method], ARGS, score)
    for i in range(3):
        _, alone, _ = windowed_relevance(model, pixels[i : i + 1], METHODS[method], ARGS, score)
        torch.testing.assert_close(alone[0], together[i], rtol=1e-4, atol=1e-6)


def test_model_state_is_restored_also_after_a_clamping_input_and_an_error(tmp_path):
    model = _classifier("swin", tmp_path)
    model.train()
    blocks = find_window_blocks(model, "swin")
    before = (model.config._attn_implementation, [(b.window_size, b.shift_size) for _, b in blocks])
    assert before[0] != "eager" and blocks[3][1].shift_size == 2
    # a 16 px input gives a 4 × 4 second stage, one window: Swin sets that block's shift to 0 in its forward
    layout, _, _ = windowed_relevance(model, torch.randn(1, 3, 16, 16), METHODS["gae"], ARGS, lambda out: out.logits[:, 0])
    assert layout.blocks[3].shift == 0
    after = (model.config._attn_implementation, [(b.window_size, b.shift_size) for _, b in blocks])
    assert after == before and all(m.training for m in model.modules())
    with pytest.raises(ZeroDivisionError):
        windowed_relevance(model, torch.randn(1, 3, 32, 32), METHODS["gae"], ARGS, lambda out: 1 / 0)
    assert model.config._attn_implementation == before[0] and all(m.training for m in model.modules())
    assert not any(b._forward_hooks for _, b in blocks)


def test_only_the_capturing_threads_passes_are_recorded(tmp_path):
    model = _classifier("swin", tmp_path).eval()
    seen = []
    with WindowBlockCapture(model, find_window_blocks(model, "swin"), lambda i, a, g: seen.append(i)):
        other = threading.Thread(target=lambda: model(pixel_values=torch.randn(1, 3, 32, 32)))
        other.start()
        other.join()
        assert seen == []
        with torch.no_grad():
            model(pixel_values=torch.randn(1, 3, 32, 32))
    assert seen == [0, 1, 2, 3]


def test_flow_is_refused_with_the_reason(tmp_path):
    model = _classifier("swin", tmp_path)
    with pytest.raises(ValueError, match="change their token set between stages"):
        windowed_relevance(model, torch.randn(1, 3, 32, 32), METHODS["flow"], ARGS)


BACKBONES = {
    "swin": (T.SwinConfig, T.SwinModel),
    "swinv2": (T.Swinv2Config, T.Swinv2Model),
    "donut-swin": (T.DonutSwinConfig, T.DonutSwinModel),
    "maskformer-swin": (T.MaskFormerSwinConfig, T.MaskFormerSwinModel),
}


@pytest.mark.parametrize("family", list(BACKBONES))
@pytest.mark.parametrize("size", [(28, 44), (16, 24)])
def test_layout_from_the_config_is_what_every_family_ran(family, size):
    config_class, model_class = BACKBONES[family]
    torch.manual_seed(0)
    model = model_class(config_class(image_size=32, **TINY))
    ran = []
    with WindowBlockCapture(model, find_window_blocks(model, family), lambda i, a, g: ran.append(g)), torch.no_grad():
        model(pixel_values=torch.randn(1, 3, *size), **FORWARD_KWARGS[family])
    layout = WindowedLayout.from_config(model.config, size)
    assert [(b.grid, b.window, b.shift) for b in layout.blocks] == ran


def test_a_backbone_is_explained_with_a_callable_score(tmp_path):
    torch.manual_seed(0)
    model = T.MaskFormerSwinModel(T.MaskFormerSwinConfig(image_size=32, **TINY))
    layout, relevance, _ = windowed_relevance(
        model, torch.randn(2, 3, 32, 32), METHODS["gae"], ARGS, lambda out: out.pooler_output.sum(-1)
    )
    assert relevance.shape == (2, 256) and torch.isfinite(relevance).all() and (relevance >= 0).all()
