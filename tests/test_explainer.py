"""End to end on small random checkpoints saved with save_pretrained and loaded back."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from hf_vit_rollout import (
    CaptureError,
    RolloutExplainer,
    TargetError,
    UnsupportedModelError,
    attention_rollout,
    gae,
    gradient_rollout,
)
from hf_vit_rollout.capture import find_attention_modules
from hf_vit_rollout.families.tokens import TokenLayout

FAMILIES = ["vit", "deit", "deit_teacher", "dinov2_registers"]
METHODS = ["rollout", "grad_rollout", "gae", "flow"]


def model_state(model):
    """Everything a call could change."""
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())
    return {
        "params": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "training": [m.training for m in model.modules()],
        "attn": model.config._attn_implementation,
        "hooks": hooks,
        "buffers": {k: v.clone() for k, v in model.named_buffers()},
        "config": model.config.to_dict(),
    }


def assert_same_state(before, after):
    assert before["attn"] == after["attn"]
    assert before["training"] == after["training"]
    assert before["requires_grad"] == after["requires_grad"]
    assert before["hooks"] == after["hooks"]
    assert before["config"] == after["config"]
    assert before["buffers"].keys() == after["buffers"].keys()
    assert all(torch.equal(v, after["buffers"][k]) for k, v in before["buffers"].items())
    assert all((a is None and b is None) or torch.equal(a, b) for a, b in zip(before["grads"], after["grads"]))
    for key, value in before["params"].items():
        assert torch.equal(value, after["params"][key]), key


@pytest.fixture(scope="module")
def explainers(checkpoint):
    cache = {}

    def get(kind):
        if kind not in cache:
            cache[kind] = RolloutExplainer.from_pretrained(checkpoint(kind))
            cache[kind].model(pixel_values=torch.zeros(1, 3, 32, 48 if kind == "dinov2_registers" else 32))
        return cache[kind]

    return get


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", METHODS)
def test_shapes_normalisation_and_state(explainers, images, family, method):
    explainer = explainers(family)
    before = model_state(explainer.model)
    results = explainer(images, method=method)
    assert_same_state(before, model_state(explainer.model))
    grid = (4, 6) if family == "dinov2_registers" else (4, 4)
    assert len(results) == len(images)
    for image, exp in zip(images, results):
        assert exp.mask.dtype == np.float32 and exp.mask.shape == grid
        assert exp.mask.max() == pytest.approx(1.0) and exp.mask.min() >= 0
        assert exp.heatmap.shape == (image.height, image.width) and exp.heatmap.dtype == np.float32
        assert 0.0 <= exp.heatmap.min() and exp.heatmap.max() <= 1.0
        assert exp.method == method
        assert isinstance(exp.overlay(), Image.Image) and exp.overlay().size == image.size
        assert exp.label is not None and 0.0 <= exp.score <= 1.0
        if method in ("grad_rollout", "gae"):
            assert exp.target == exp.predicted  # no target: the predicted class
        else:
            assert exp.target is None


@pytest.mark.parametrize("family", FAMILIES)
def test_prefix_tokens_come_from_the_config(explainers, family):
    explainer = explainers(family)
    expected_prefix = {"vit": 1, "deit": 2, "deit_teacher": 2, "dinov2_registers": 5}[family]
    size = (32, 48) if family == "dinov2_registers" else (32, 32)
    layout = TokenLayout.from_config(explainer.model.config, size)
    assert layout.num_prefix_tokens == expected_prefix
    exp = explainer(np.zeros((20, 20, 3), np.uint8))
    assert exp.token_relevance.shape == (layout.num_tokens,)


@pytest.mark.parametrize("family", ["vit", "dinov2_registers"])
@pytest.mark.parametrize("method", METHODS)
def test_result_does_not_depend_on_the_rest_of_the_batch(explainers, images, family, method):
    explainer = explainers(family)
    target = 1 if method in ("grad_rollout", "gae") else None
    together = explainer(images, target=target, method=method)
    for image, joint in zip(images, together):
        alone = explainer([image], target=target, method=method)[0]
        np.testing.assert_allclose(joint.mask, alone.mask, rtol=1e-4, atol=1e-5)


def _reference_inputs(explainer, image, target):
    """Attention maps via output_attentions and gradients via autograd.grad, in forward order."""
    model = explainer.model
    pixels = explainer.image_processor(images=[image], return_tensors="pt")["pixel_values"]
    model.set_attn_implementation("eager")
    try:
        outputs = model(pixel_values=pixels, output_attentions=True)
        attentions = list(outputs.attentions)
        grads = torch.autograd.grad(outputs.logits[0, target], attentions)
    finally:
        model.set_attn_implementation("sdpa")
    return [a.detach() for a in attentions], list(grads)


@pytest.mark.parametrize("family", ["vit", "deit"])
def test_explainer_matches_pure_functions_with_correct_layer_pairing(explainers, images, family):
    explainer = explainers(family)
    attentions, grads = _reference_inputs(explainer, images[0], target=2)
    expected = {
        "rollout": attention_rollout(attentions, discard_ratio=0.9)[0, 0],
        "grad_rollout": gradient_rollout(attentions, grads, discard_ratio=0.9)[0, 0],
        "gae": gae(attentions, grads)[0, 0],
    }
    for method, row in expected.items():
        target = None if method == "rollout" else 2
        exp = explainer(images[0], target=target, method=method)
        torch.testing.assert_close(torch.from_numpy(exp.token_relevance), row.float(), rtol=1e-4, atol=1e-6)
    # the same gradients paired in reverse give a different map, so the check above is sharp
    wrong = gradient_rollout(attentions, grads[::-1], discard_ratio=0.9)[0, 0]
    assert not torch.allclose(wrong, expected["grad_rollout"], atol=1e-5)


def test_two_targets_give_two_maps(explainers, images):
    explainer = explainers("vit")
    a = explainer(images[1], target="cat", method="gae")
    b = explainer(images[1], target="golden retriever", method="gae")
    assert (a.target, b.target) == (0, 3)
    assert not np.allclose(a.mask, b.mask)


def test_targets_by_name_synonym_index_and_per_image(explainers, images):
    explainer = explainers("vit")
    assert explainer(images[0], target="tabby", method="grad_rollout").target == 2
    assert explainer(images[0], target="Tabby Cat", method="grad_rollout").label == "tabby, tabby cat"
    results = explainer(images, target=[0, "dog", 3], method="grad_rollout")
    assert [r.target for r in results] == [0, 1, 3]


def test_callable_target(explainers, images):
    explainer = explainers("vit")
    by_index = explainer(images[0], target=1, method="gae")
    by_callable = explainer(images[0], target=lambda outputs: outputs.logits[:, 1], method="gae")
    np.testing.assert_allclose(by_index.mask, by_callable.mask, rtol=1e-5, atol=1e-6)


def test_backbone_without_classifier(explainers, checkpoint, images):
    explainer = RolloutExplainer.from_pretrained(checkpoint("vit_backbone"))
    exp = explainer(images[0])
    assert exp.mask.shape == (4, 4) and exp.label is None and exp.score is None
    with pytest.raises(TargetError, match="no classifier"):
        explainer(images[0], target=1, method="gae")
    scored = explainer(images[0], target=lambda out: out.pooler_output.sum(-1), method="gae")
    assert scored.mask.max() == pytest.approx(1.0)


def test_wrapping_a_loaded_model_and_restoring_sdpa_and_training(checkpoint, images):
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(checkpoint("vit"))
    processor = AutoImageProcessor.from_pretrained(checkpoint("vit"), backend="pil")
    model.train()
    for p in model.classifier.parameters():
        p.requires_grad_(False)
    model(pixel_values=torch.zeros(1, 3, 32, 32))
    before = model_state(model)
    assert before["attn"] == "sdpa"
    explainer = RolloutExplainer(model, processor, method="gae")
    explainer(images)
    explainer(images, method="rollout")
    assert_same_state(before, model_state(model))
    assert all(p.grad is None for p in model.parameters())


def test_state_restored_when_the_call_fails_midway(explainers, images, monkeypatch):
    explainer = explainers("vit")
    before = model_state(explainer.model)
    import hf_vit_rollout.methods.gradient as gradient_module

    def broken(*args, **kwargs):
        raise RuntimeError("injected failure in a gradient hook")

    monkeypatch.setitem(
        __import__("hf_vit_rollout.methods", fromlist=["METHODS"]).METHODS,
        "gae",
        __import__("dataclasses").replace(explainer_methods()["gae"], layer_map=broken),
    )
    with pytest.raises(RuntimeError, match="injected failure"):
        explainer(images, method="gae")
    assert_same_state(before, model_state(explainer.model))
    del gradient_module


def explainer_methods():
    from hf_vit_rollout.methods import METHODS as registry

    return registry


def test_sdpa_without_eager_fallback_fails_loudly(explainers, images, monkeypatch):
    """If the implementation cannot be switched, nothing is silently captured: a clear error.

    Simulated as a model whose attention modules pick their kernel when built (so the capture falls
    back to hooks) and keep running SDPA, which returns no weights, whatever the config says.
    """
    import hf_vit_rollout.capture as capture_module
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    explainer = explainers("vit")
    monkeypatch.setattr(capture_module, "_eager_function", lambda module: None)
    sdpa = ALL_ATTENTION_FUNCTIONS["sdpa"]
    monkeypatch.setattr(type(ALL_ATTENTION_FUNCTIONS), "get_interface", lambda self, name, default: sdpa)
    before = model_state(explainer.model)
    with pytest.raises(CaptureError, match="returned no attention maps"):
        explainer(images[0])
    assert_same_state(before, model_state(explainer.model))


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"target": 99, "method": "gae"}, TargetError, "out of range.*4 classes"),
        ({"target": -1, "method": "gae"}, TargetError, "out of range"),
        ({"target": "tabbby", "method": "gae"}, TargetError, "did you mean 'tabby'"),
        ({"target": "cat"}, TargetError, "class-agnostic.*grad_rollout"),
        ({"target": "cat", "method": "flow"}, TargetError, "class-agnostic"),
        ({"discard_ratio": 1.0}, ValueError, r"\[0, 1\)"),
        ({"discard_ratio": -0.1}, ValueError, r"\[0, 1\)"),
        ({"discard_ratio": float("nan")}, ValueError, r"\[0, 1\)"),
        ({"discard_ratio": "0.5"}, ValueError, "a number"),
        ({"head_fusion": "median"}, ValueError, "head_fusion.*mean, min, max"),
        ({"method": "rolout"}, ValueError, "did you mean 'rollout'"),
        ({"target": [1, 2], "method": "gae"}, TargetError, "2 targets for 1 images"),
    ],
)
def test_bad_settings_get_specific_errors(explainers, images, kwargs, error, match):
    explainer = explainers("vit")
    before = model_state(explainer.model)
    with pytest.raises(error, match=match):
        explainer(images[0], **kwargs)
    assert_same_state(before, model_state(explainer.model))


@pytest.mark.parametrize("kind,match", [("resnet", "convolutional network")])
def test_models_without_global_attention_are_refused_at_load_time(checkpoint, kind, match):
    with pytest.raises(UnsupportedModelError, match=match):
        RolloutExplainer.from_pretrained(checkpoint(kind))


def test_wrapping_an_unsupported_model_is_refused(checkpoint):
    from transformers import AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(checkpoint("resnet"))
    with pytest.raises(UnsupportedModelError):
        RolloutExplainer(model, None)


def test_missing_checkpoint_says_what_to_pass(tmp_path):
    with pytest.raises(OSError, match="(?s)could not load a checkpoint.*no such directory.*'demo'"):
        RolloutExplainer.from_pretrained(str(tmp_path / "nope"))
    with pytest.raises(OSError, match="(?s)could not load a checkpoint.*local_files_only=True"):
        RolloutExplainer.from_pretrained("no-such-user/no-such-model", local_files_only=True)


def test_constructor_validates_settings(checkpoint):
    with pytest.raises(ValueError, match="unknown method"):
        RolloutExplainer.from_pretrained(checkpoint("vit"), method="lrp")
    with pytest.raises(ValueError, match="discard_ratio"):
        RolloutExplainer.from_pretrained(checkpoint("vit"), discard_ratio=2)
    with pytest.raises(ValueError, match="batch_size"):
        RolloutExplainer.from_pretrained(checkpoint("vit"), batch_size=0)
    for bad in (-1, float("nan"), "64", True):
        with pytest.raises(ValueError, match="rollout_buffer_mib must be a number >= 0"):
            RolloutExplainer.from_pretrained(checkpoint("vit"), rollout_buffer_mib=bad)


def test_attention_modules_found_for_every_family(explainers):
    for family, layers in [("vit", 3), ("deit", 3), ("deit_teacher", 3), ("dinov2_registers", 3)]:
        assert len(find_attention_modules(explainers(family).model)) == layers


def test_centre_crop_leaves_unseen_border_empty(explainers):
    explainer = explainers("deit")  # resize to 40, centre crop 32: a 4 px border (of 40) is not seen
    exp = explainer(np.full((80, 80, 3), 128, np.uint8))
    assert exp.heatmap[:6].max() == 0 and exp.heatmap[-6:].max() == 0
    assert exp.heatmap[20:60, 20:60].max() > 0


def test_batches_are_split_by_batch_size(checkpoint, images):
    small = RolloutExplainer.from_pretrained(checkpoint("vit"), batch_size=2)
    big = RolloutExplainer.from_pretrained(checkpoint("vit"), batch_size=8)
    for a, b in zip(small(images * 2), big(images * 2)):
        np.testing.assert_allclose(a.mask, b.mask, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("family", ["vit", "dinov2_registers"])
def test_rollout_is_the_same_whether_maps_are_held_or_multiplied(checkpoint, images, monkeypatch, family):
    import hf_vit_rollout.stages as explainer_module
    from hf_vit_rollout.methods.chain import ChainFold
    from hf_vit_rollout.families.tokens import TokenLayout

    folds = []

    class Spy(ChainFold):
        def relevance(self, num_layers):
            folds.append(self.num_folded)
            return super().relevance(num_layers)

    monkeypatch.setattr(explainer_module, "ChainFold", Spy)
    reference = RolloutExplainer.from_pretrained(checkpoint(family))
    pixels = reference.image_processor(images=images, return_tensors="pt")["pixel_values"]
    n = TokenLayout.from_config(reference.model.config, tuple(pixels.shape[-2:])).num_tokens
    one_map_mib = len(images) * n * n * 4 / 2**20
    results = {}
    for buffer_mib in (0, one_map_mib, float("inf")):
        explainer = RolloutExplainer(reference.model, reference.image_processor, rollout_buffer_mib=buffer_mib)
        results[buffer_mib] = explainer.relevance_maps(pixels, method="rollout", discard_ratio=0.5)
    # 3 layers: all multiplied into the product / the 2nd overflows a one-map buffer, the 3rd is
    # held for the final fold / all held
    assert folds == [3, 2, 0]
    torch.testing.assert_close(results[one_map_mib], results[0])
    torch.testing.assert_close(results[float("inf")], results[0])


def test_relevance_maps_on_preprocessed_inputs(explainers, images):
    explainer = explainers("vit")
    pixels = explainer.image_processor(images=images, return_tensors="pt")["pixel_values"]
    maps = explainer.relevance_maps(pixels, target=1, method="gae")
    assert maps.shape == (3, 4, 4)
    for image, row in zip(images, maps):
        expected = explainer(image, target=1, method="gae").mask
        np.testing.assert_allclose((row / row.max()).numpy(), expected, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        explainer.relevance_maps(pixels[0])


def test_targets_as_arrays_and_tensors(explainers, images):
    explainer = explainers("vit")
    for targets in (np.array([0, 1, 3]), torch.tensor([0, 1, 3])):
        assert [r.target for r in explainer(images, target=targets, method="gae")] == [0, 1, 3]
    assert explainer(images[0], target=np.int64(2), method="gae").target == 2


def test_other_input_sizes_need_interpolate_pos_encoding(checkpoint, images):
    from transformers import AutoModelForImageClassification, ViTImageProcessorPil

    model = AutoModelForImageClassification.from_pretrained(checkpoint("vit"))  # trained at 32 px
    processor = ViTImageProcessorPil(size={"height": 48, "width": 64})  # a 6 × 8 patch grid
    before = model_state(model)
    with pytest.raises(ValueError, match="interpolate_pos_encoding=True"):
        RolloutExplainer(model, processor)(images[0])
    assert_same_state(before, model_state(model))
    exp = RolloutExplainer(model, processor, interpolate_pos_encoding=True)(images[0], target=1, method="gae")
    assert exp.mask.shape == (6, 8) and exp.heatmap.shape == (images[0].height, images[0].width)


def test_predict_returns_the_probabilities_explanations_report(explainers, checkpoint, images):
    explainer = explainers("vit")
    probabilities = explainer.predict(images)
    assert probabilities.shape == (3, 4)
    torch.testing.assert_close(probabilities.sum(-1), torch.ones(3))
    for row, exp in zip(probabilities, explainer(images)):
        assert exp.predicted == int(row.argmax()) and exp.score == pytest.approx(float(row.max()), rel=1e-5)
    with pytest.raises(TargetError, match="no classifier"):
        RolloutExplainer.from_pretrained(checkpoint("vit_backbone")).predict(images[0])
