"""The support matrix: every listed family on a small random checkpoint, loaded with from_pretrained."""

from __future__ import annotations

import numpy as np
import pytest
import transformers as T

from hf_vit_rollout import RolloutExplainer, TargetError, UnsupportedModelError
from hf_vit_rollout.families.tokens import TokenLayout

from .conftest import SMALL, save_family_checkpoint

# name: (config class, model class, extra config, prefix tokens, pooling)
FAMILIES = {
    "vit_msn": (T.ViTMSNConfig, T.ViTMSNForImageClassification, {}, 1, "cls"),
    "dinov2": (T.Dinov2Config, T.Dinov2ForImageClassification, {}, 1, "cls"),
    "dinov2_backbone": (T.Dinov2Config, T.Dinov2Model, {}, 1, "cls"),
    "dinov3": (T.DINOv3ViTConfig, T.DINOv3ViTModel, {"num_register_tokens": 2}, 3, "cls"),
    "beit_mean": (T.BeitConfig, T.BeitForImageClassification, {"use_mean_pooling": True}, 1, "mean"),
    "beit_cls": (T.BeitConfig, T.BeitForImageClassification, {"use_mean_pooling": False}, 1, "cls"),
    "ijepa": (T.IJepaConfig, T.IJepaForImageClassification, {}, 0, "mean"),
    "clip_vision": (T.CLIPVisionConfig, T.CLIPVisionModel, {}, 1, "cls"),
    "siglip_vision": (T.SiglipVisionConfig, T.SiglipVisionModel, {}, 0, "mean"),
}


@pytest.fixture(scope="module")
def family_checkpoint(tmp_path_factory):
    def build(name):
        config_class, model_class, extra, _, _ = FAMILIES[name]
        return save_family_checkpoint(tmp_path_factory.mktemp(name), config_class, model_class, extra)

    return build


@pytest.mark.parametrize("name", list(FAMILIES))
def test_family_is_explained(family_checkpoint, name):
    _, model_class, _, prefix, pooling = FAMILIES[name]
    explainer = RolloutExplainer.from_pretrained(family_checkpoint(name))
    assert type(explainer.model) is model_class
    layout = TokenLayout.from_config(explainer.model.config, (32, 32))
    assert (layout.num_prefix_tokens, layout.pooling) == (prefix, pooling)
    image = np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    before = explainer.model.config._attn_implementation
    for method in ("rollout", "flow"):
        exp = explainer(image, method=method)
        assert exp.mask.shape == (4, 4) and exp.mask.max() == pytest.approx(1.0)
        assert exp.token_relevance.shape == (layout.num_tokens,)
    if explainer.num_labels:
        assert explainer(image, target=1, method="gae").target == 1
    else:
        with pytest.raises(TargetError, match="callable"):
            explainer(image, method="gae")
        exp = explainer(image, target=lambda out: out.last_hidden_state.mean(dim=(1, 2)), method="gae")
        assert exp.mask.shape == (4, 4)
    assert explainer.model.config._attn_implementation == before


@pytest.mark.parametrize(
    "config,model_class,match",
    [
        (lambda: T.ViTMAEConfig(**SMALL), T.ViTMAEModel, "mask_ratio=0.75"),
        (lambda: T.ConvNextConfig(hidden_sizes=[8, 8, 8, 8], depths=[1, 1, 1, 1]), T.ConvNextForImageClassification, "convolutional"),
    ],
)
def test_unsupported_families_are_refused_with_a_reason(tmp_path, config, model_class, match):
    model_class(config()).save_pretrained(tmp_path)
    T.ViTImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(tmp_path)
    with pytest.raises(UnsupportedModelError, match=match):
        RolloutExplainer.from_pretrained(str(tmp_path))
