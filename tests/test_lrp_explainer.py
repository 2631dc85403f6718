"""The new methods through RolloutExplainer: every family, settings checks, state restored, batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers as T

from hf_vit_rollout import RolloutExplainer
from hf_vit_rollout.lrp import attnlrp_relevance

from .conftest import save_family_checkpoint

NEW_METHODS = ("transformer_attribution", "attnlrp", "attention")

# name: (config class, model class, extra config, tokens)
FAMILIES = {
    "vit": (T.ViTConfig, T.ViTForImageClassification, {}, 17),
    "deit": (T.DeiTConfig, T.DeiTForImageClassificationWithTeacher, {}, 18),
    "beit": (T.BeitConfig, T.BeitForImageClassification, {"use_relative_position_bias": True}, 17),
    "dinov2": (T.Dinov2Config, T.Dinov2ForImageClassification, {}, 17),
    "clip_vision": (T.CLIPVisionConfig, T.CLIPVisionModel, {}, 17),
    "siglip_vision": (T.SiglipVisionConfig, T.SiglipVisionModel, {}, 16),
    "ijepa": (T.IJepaConfig, T.IJepaForImageClassification, {}, 16),
}


@pytest.fixture(scope="module")
def family_checkpoint(tmp_path_factory):
    cache = {}

    def build(name):
        if name not in cache:
            config_class, model_class, extra, _ = FAMILIES[name]
            cache[name] = save_family_checkpoint(tmp_path_factory.mktemp(name), config_class, model_class, extra)
        return cache[name]

    return build


def _hooks(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())


IMAGE = np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_new_methods_on_every_family(family_checkpoint, name):
    explainer = RolloutExplainer.from_pretrained(family_checkpoint(name))
    tokens = FAMILIES[name][3]
    before, hooks = explainer.model.config._attn_implementation, _hooks(explainer.model)
    target = 1 if explainer.num_labels else (lambda out: out.last_hidden_state[:, :, :4].mean(dim=(1, 2)))
    for method in NEW_METHODS:
        kwargs = {} if method == "attention" else {"target": target}
        exp = explainer(IMAGE, method=method, **kwargs)
        assert exp.method == method and exp.mask.shape == (4, 4)
        assert exp.token_relevance.shape == (tokens,) and np.isfinite(exp.token_relevance).all()
    exp = explainer(IMAGE, method="attention", layer=0, head=1)
    assert exp.params["layer"] == 0 and exp.params["head"] == 1
    assert explainer.model.config._attn_implementation == before and _hooks(explainer.model) == hooks


def test_settings_are_checked_against_the_model(family_checkpoint):
    explainer = RolloutExplainer.from_pretrained(family_checkpoint("vit"))
    with pytest.raises(ValueError, match="layer 2 is out of range: the model has 2 attention layers"):
        explainer(IMAGE, method="attention", layer=2)
    with pytest.raises(ValueError, match="head 2 is out of range: the model's attention layers have 2 heads"):
        explainer(IMAGE, method="attention", head=2)
    with pytest.raises(ValueError, match="start_layer 5 is out of range: the model has 2 attention layers"):
        explainer(IMAGE, method="transformer_attribution", start_layer=5, target=0)
    with pytest.raises(ValueError, match="start_layer"):
        explainer(IMAGE, method="attention", start_layer=1)
    with pytest.raises(ValueError, match="layer"):
        explainer(IMAGE, method="gae", layer=1, target=0)


@pytest.mark.parametrize("method", ["rollout", "grad_rollout", "gae", "transformer_attribution"])
def test_start_layer_changes_product_methods(family_checkpoint, method):
    explainer = RolloutExplainer.from_pretrained(family_checkpoint("vit"))
    kwargs = {} if method == "rollout" else {"target": 0}
    full = explainer(IMAGE, method=method, **kwargs)
    late = explainer(IMAGE, method=method, start_layer=1, **kwargs)
    assert late.params["start_layer"] == 1
    assert not np.allclose(full.token_relevance, late.token_relevance)


def test_attnlrp_through_the_explainer_equals_the_direct_call():
    """The explainer and :func:`attnlrp_relevance` agree (the rules themselves are checked against
    an independent reference in ``tests/test_references.py``)."""
    explainer = RolloutExplainer.from_pretrained("demo")
    from PIL import Image

    from hf_vit_rollout import demo_model_path

    paths = sorted((demo_model_path().parent / "images").glob("*.png"))
    images = [Image.open(p).convert("RGB") for p in paths]
    results = explainer(images, method="attnlrp")
    pixels = explainer.image_processor(images=images, return_tensors="pt")["pixel_values"]
    direct = attnlrp_relevance(explainer.model, pixels)
    for result, row, target in zip(results, direct.token_relevance, direct.targets):
        assert result.target == target
        np.testing.assert_allclose(result.token_relevance, row.numpy(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("method", NEW_METHODS)
def test_new_methods_do_not_depend_on_the_batch(family_checkpoint, method):
    explainer = RolloutExplainer.from_pretrained(family_checkpoint("deit"))
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(3)]
    kwargs = {} if method == "attention" else {"target": [0, 2, 1]}
    batch = explainer(images, method=method, **kwargs)
    single = explainer(images[1], method=method, **({} if method == "attention" else {"target": 2}))
    np.testing.assert_allclose(batch[1].token_relevance, single.token_relevance, rtol=1e-4, atol=1e-6)


def test_state_is_restored_when_an_lrp_call_fails(family_checkpoint):
    explainer = RolloutExplainer.from_pretrained(family_checkpoint("vit"))
    before, hooks = explainer.model.config._attn_implementation, _hooks(explainer.model)

    def failing(outputs):
        raise RuntimeError("score failed")

    for method in ("transformer_attribution", "attnlrp"):
        with pytest.raises(RuntimeError, match="score failed"):
            explainer(IMAGE, method=method, target=failing)
        assert explainer.model.config._attn_implementation == before and _hooks(explainer.model) == hooks
        assert torch.overrides._get_current_function_mode_stack() == []


def test_attention_heads_are_plotted_from_an_explanation(family_checkpoint):
    import matplotlib

    matplotlib.use("Agg")
    explainer = RolloutExplainer.from_pretrained(family_checkpoint("vit"))
    exp = explainer(IMAGE, method="attention", layer=-1)
    assert exp.head_heatmaps.shape == (2, *exp.heatmap.shape)
    assert exp.params == {"head_fusion": "mean", "discard_ratio": 0.0, "layer": -1, "head": None}
    fig = exp.plot_heads()
    assert sum(1 for ax in fig.axes if ax.images) == 2
    assert explainer(IMAGE, method="attention", head=0).head_heatmaps is None


def test_windowed_models_refuse_raw_attention_and_start_layer(checkpoint):
    explainer = RolloutExplainer.from_pretrained(checkpoint("swin"))
    with pytest.raises(ValueError, match="windowed model changes its tokens between stages"):
        explainer(IMAGE, method="attention")
    with pytest.raises(ValueError, match="start_layer= is not supported for windowed models"):
        explainer(IMAGE, method="gae", start_layer=1, target=0)


def test_concurrent_lrp_calls_on_one_model_match_sequential_ones():
    """Hooks, the attention function and the residual-add mode act per thread: two threads running
    LRP methods on the same model at once get what each would get alone."""
    import threading

    from PIL import Image

    from hf_vit_rollout import demo_model_path

    explainer = RolloutExplainer.from_pretrained("demo")
    paths = sorted((demo_model_path().parent / "images").glob("*.png"))
    images = [Image.open(p).convert("RGB") for p in paths[:2]]
    jobs = [(images[0], "transformer_attribution"), (images[1], "attnlrp")]
    expected = [explainer(image, method=method).token_relevance for image, method in jobs]
    results, errors = {}, []
    barrier = threading.Barrier(len(jobs))

    def work(index, image, method):
        try:
            barrier.wait()
            results[index] = [explainer(image, method=method).token_relevance for _ in range(3)]
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i, *job)) for i, job in enumerate(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    for index, want in enumerate(expected):
        for got in results[index]:
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    assert torch.overrides._get_current_function_mode_stack() == []
