"""The registered transformers pipeline."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from transformers import pipeline

import hf_vit_rollout  # noqa: F401 - registers the task
from hf_vit_rollout import Explanation, TargetError
from hf_vit_rollout.pipeline import TASK, explanation_pipeline


@pytest.fixture(scope="module")
def pictures():
    return [Image.fromarray(np.random.default_rng(i).integers(0, 256, (40, 40, 3), dtype=np.uint8)) for i in range(5)]


def test_task_is_registered_on_import():
    from transformers.pipelines import PIPELINE_REGISTRY

    assert TASK in PIPELINE_REGISTRY.get_supported_tasks()


def test_pipeline_loads_with_from_pretrained_and_explains(checkpoint, pictures):
    explain = pipeline(TASK, model=checkpoint("vit"), method="gae")
    single = explain(pictures[0], target="dog")
    assert set(single) == {"label", "score", "mask", "overlay", "explanation"}
    explanation = single["explanation"]
    assert isinstance(explanation, Explanation) and explanation.target == 1 and explanation.method == "gae"
    assert type(explain.image_processor).__name__.endswith("Pil")


def test_pipeline_batching_matches_unbatched_and_the_explainer(checkpoint, pictures):
    explain = pipeline(TASK, model=checkpoint("deit"), method="grad_rollout")
    batched = [r["explanation"] for r in explain(pictures, batch_size=2, target=2)]
    one_by_one = [r["explanation"] for r in explain(pictures, batch_size=1, target=2)]
    assert len(batched) == len(pictures)
    direct = hf_vit_rollout.RolloutExplainer.from_pretrained(checkpoint("deit"))(pictures, target=2, method="grad_rollout")
    for a, b, c in zip(batched, one_by_one, direct):
        np.testing.assert_allclose(a.mask, b.mask, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(a.mask, c.mask, rtol=1e-4, atol=1e-5)


def test_pipeline_validates_settings_at_call(checkpoint, pictures):
    explain = explanation_pipeline(checkpoint("vit"))
    assert explain(pictures[0])["explanation"].method == "rollout"
    with pytest.raises(TargetError, match="class-agnostic"):
        explain(pictures[0], target="dog")
    with pytest.raises(ValueError, match="head_fusion"):
        explain(pictures[0], head_fusion="median")
