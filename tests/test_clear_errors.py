"""Inputs and settings that used to end in a raw torch, numpy or transformers traceback get the package's
own message: what was wrong and what to do."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hf_vit_rollout import RolloutExplainer
from hf_vit_rollout.methods import METHODS


@pytest.fixture(scope="module")
def explainer(checkpoint):
    return RolloutExplainer.from_pretrained(checkpoint("vit"))


IMAGE = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)


@pytest.mark.parametrize("method", [m for m, spec in METHODS.items() if spec.needs_gradient])
def test_gradient_methods_under_inference_mode_say_so(explainer, method):
    with torch.inference_mode(), pytest.raises(RuntimeError, match=r"torch.inference_mode\(\) forbids"):
        explainer(IMAGE, target=1, method=method)
    assert explainer(IMAGE, target=1, method=method).mask.max() == pytest.approx(1.0)


@pytest.mark.parametrize("method", ["rollout", "attention", "flow"])
def test_methods_without_gradients_work_under_inference_mode(explainer, method):
    with torch.inference_mode():
        inside = explainer(IMAGE, method=method).mask
    np.testing.assert_allclose(inside, explainer(IMAGE, method=method).mask)
