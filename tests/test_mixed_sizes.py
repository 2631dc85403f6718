"""Images of different sizes in one call with a processor that does not resize: one forward pass per
size, results in input order, each the same as explained alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers as T

from hf_vit_rollout import RolloutExplainer
from hf_vit_rollout.pipeline import pipeline


@pytest.fixture(scope="module")
def explainer(checkpoint):
    model = T.AutoModelForImageClassification.from_pretrained(checkpoint("vit"))
    return RolloutExplainer(model, T.ViTImageProcessorPil(do_resize=False), interpolate_pos_encoding=True, batch_size=8)


def _images():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, shape, dtype=np.uint8) for shape in [(32, 32, 3), (40, 48, 3), (32, 32, 3), (24, 56, 3)]]


@pytest.mark.parametrize("method", ["rollout", "gae", "attnlrp"])
def test_a_list_of_sizes_is_explained_in_input_order(explainer, method):
    images = _images()
    target = 1 if method != "rollout" else None
    together = explainer(images, target=target, method=method)
    for image, result in zip(images, together):
        alone = explainer(image, target=target, method=method)
        assert result.mask.shape == (image.shape[0] // 8, image.shape[1] // 8)
        np.testing.assert_allclose(result.mask, alone.mask, rtol=1e-5, atol=1e-6)
        assert result.score == pytest.approx(alone.score)


def test_predict_takes_a_list_of_sizes(explainer):
    images = _images()
    together = explainer.predict(images)
    assert together.shape == (4, explainer.num_labels)
    for image, row in zip(images, together):
        torch.testing.assert_close(row, explainer.predict(image)[0])


def test_per_image_targets_follow_their_images(explainer):
    images = _images()
    results = explainer(images, target=[0, 1, 2, 3], method="gae")
    assert [r.target for r in results] == [0, 1, 2, 3]
    for image, result, target in zip(images, results, range(4)):
        np.testing.assert_allclose(result.mask, explainer(image, target=target, method="gae").mask, rtol=1e-5, atol=1e-6)


def test_the_pipeline_batches_sizes_too(checkpoint):
    explain = pipeline(model=checkpoint("vit"), image_processor=T.ViTImageProcessorPil(do_resize=False), method="rollout")
    explain.explainer.interpolate_pos_encoding = True
    images = _images()
    out = explain(images, batch_size=4)
    assert [o["explanation"].mask.shape for o in out] == [(4, 4), (5, 6), (4, 4), (3, 7)]
    for image, o in zip(images, out):
        np.testing.assert_allclose(o["explanation"].mask, explain(image)["explanation"].mask, rtol=1e-5, atol=1e-6)
