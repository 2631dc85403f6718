"""A callable target that runs the model again inside the explanation is refused, and leaves nothing behind."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hf_vit_rollout import RolloutExplainer, TargetError

from .test_explainer import assert_same_state, model_state

GRADIENT_METHODS = ["grad_rollout", "gae", "transformer_attribution", "attnlrp", "cp_lrp", "libragrad", "legrad"]


@pytest.fixture(scope="module")
def explainer(checkpoint):
    return RolloutExplainer.from_pretrained(checkpoint("vit"))


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)


def _reentrant_targets(explainer, image):
    pixels = explainer.image_processor(images=image, return_tensors="pt")["pixel_values"]
    return {
        "model(...)": lambda out: explainer.model(pixel_values=pixels).logits[:, 0] * 0 + out.logits[:, 1],
        "predict()": lambda out: out.logits[:, 1] + float(explainer.predict(image)[0, 0]) * 0,
        "another explanation": lambda out: out.logits[:, 1] + float(explainer(image).mask.max()) * 0,
    }


@pytest.mark.parametrize("method", GRADIENT_METHODS)
@pytest.mark.parametrize("kind", ["model(...)", "predict()", "another explanation"])
def test_a_target_that_runs_the_model_is_refused(explainer, image, method, kind):
    before = model_state(explainer.model)
    with pytest.raises(TargetError, match="callable target ran .* while it was being explained"):
        explainer(image, target=_reentrant_targets(explainer, image)[kind], method=method)
    assert_same_state(before, model_state(explainer.model))
    plain = explainer(image, target=1, method=method)  # the explainer works on afterwards
    assert np.isfinite(plain.mask).all() and plain.mask.max() == pytest.approx(1.0)


@pytest.mark.parametrize("method", GRADIENT_METHODS)
def test_a_target_reading_its_outputs_matches_the_class_target(explainer, image, method):
    """A callable gets every stacked read-out layer's rows (LeGrad) and its scores explain the same map."""
    seen = []

    def logit_one(out):
        seen.append(out.logits.shape[0])
        return out.logits.softmax(-1)[:, 1] if method == "libragrad" else out.logits[:, 1]  # its score: the probability

    by_callable = explainer(image, target=logit_one, method=method)
    by_class = explainer(image, target=1, method=method)
    np.testing.assert_allclose(by_callable.mask, by_class.mask, rtol=1e-4, atol=1e-6)
    rows = explainer.num_layers if method == "legrad" else 1
    assert seen == [rows]
    assert by_callable.score == pytest.approx(float(explainer.predict(image)[0, by_callable.predicted]))
