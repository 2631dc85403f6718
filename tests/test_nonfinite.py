"""A model whose forward pass gives NaN or infinity: a NonFiniteError naming the images, never a zero map."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hf_vit_rollout import NonFiniteError, RolloutExplainer, TargetError, evaluate
from hf_vit_rollout.methods import METHODS


@pytest.fixture(scope="module")
def broken(checkpoint):
    """The tiny ViT with NaN in its second layer's query weights."""
    explainer = RolloutExplainer.from_pretrained(checkpoint("vit"))
    with torch.no_grad():
        explainer.model.vit.layers[1].attention.q_proj.weight.fill_(float("nan"))
    return explainer


@pytest.fixture(scope="module")
def healthy(checkpoint):
    return RolloutExplainer.from_pretrained(checkpoint("vit"))


@pytest.mark.parametrize("method", ["rollout", "attention", "flow", "grad_rollout", "gae", "attnlrp", "legrad"])
def test_every_method_refuses_a_nan_pass(broken, method):
    target = 1 if METHODS[method].needs_gradient else None
    with pytest.raises(NonFiniteError, match=r"NaN or infinite for image\(s\) \[0, 1\]") as caught:
        broken([np.zeros((32, 32, 3), np.uint8)] * 2, target=target, method=method)
    assert caught.value.images == [0, 1]


def test_predict_refuses_nan_logits(broken):
    with pytest.raises(NonFiniteError, match="model outputs"):
        broken.predict(np.zeros((32, 32, 3), np.uint8))


@pytest.mark.parametrize("method", ["rollout", "gae"])
def test_only_the_non_finite_images_are_named(healthy, method):
    pixels = torch.randn(3, 3, 32, 32)
    pixels[1, 0, 4, 4] = float("inf")
    with pytest.raises(NonFiniteError) as caught:
        healthy.relevance_maps(pixels, 1 if method == "gae" else None, method=method)
    assert caught.value.images == [1]


def test_evaluate_does_not_score_nan_maps(broken):
    with pytest.raises(NonFiniteError):
        evaluate(broken, [np.zeros((32, 32, 3), np.uint8)], [1], [np.ones((32, 32), bool)], methods=["rollout"],
                 metrics=["energy", "complexity"], progress=False)


def test_a_callable_target_that_makes_nan_is_still_the_targets_error(healthy):
    with pytest.raises(TargetError, match="callable target's scores are NaN"):
        healthy(np.zeros((32, 32, 3), np.uint8), target=lambda out: out.logits[:, 0] * float("nan"), method="gae")
