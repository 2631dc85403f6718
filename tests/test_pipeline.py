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


# ----------------------------------------------------------------------------------- answers as dicts
def test_answers_are_dicts_in_the_image_segmentation_style(checkpoint, pictures):
    explain = pipeline(TASK, model=checkpoint("deit"), method="gae")
    picture = pictures[0].resize((52, 44))
    result = explain(picture, target="dog")
    explanation = result["explanation"]
    assert result["label"] == explanation.label == "dog" and result["score"] == explanation.score
    assert result["mask"].mode == "L" and result["mask"].size == picture.size
    np.testing.assert_array_equal(np.asarray(result["mask"]), np.round(explanation.heatmap * 255).astype(np.uint8))
    assert result["overlay"].size == picture.size and result["overlay"].tobytes() == explanation.overlay().tobytes()
    top = explain(picture, top_k=2)
    assert isinstance(top, list) and [r["explanation"].target for r in top] == [e.target for e in explain.explainer(picture, top_k=2, method="gae")]


@pytest.mark.parametrize(
    "device,match",
    [("bogus", "unknown device 'bogus'"), ("cuda:3", "not available"), (0, "device 0 .*not available"), (True, "must be a torch.device")],
)
def test_devices_the_machine_lacks_are_clear_errors_through_every_door(checkpoint, device, match):
    import torch

    if device in ("cuda:3", 0) and torch.cuda.device_count() > 3:
        pytest.skip("this machine has the GPUs")
    for door in (
        lambda: pipeline(TASK, model=checkpoint("vit"), device=device),
        lambda: hf_vit_rollout.RolloutExplainer.from_pretrained(checkpoint("vit"), device=device),
    ):
        with pytest.raises(ValueError, match=match):
            door()


def test_transformers_device_conventions_are_accepted(checkpoint, pictures):
    import torch

    for device in (-1, "cpu", torch.device("cpu"), "-1"):
        explain = pipeline(TASK, model=checkpoint("vit"), device=device)
        assert explain.device == torch.device("cpu") and explain.model.device.type == "cpu"
    assert hf_vit_rollout.RolloutExplainer.from_pretrained(checkpoint("vit"), device=-1).model.device.type == "cpu"


def test_dict_inputs_are_refused_clearly(checkpoint, pictures):
    from hf_vit_rollout import InputError

    explain = pipeline(TASK, model=checkpoint("vit"))
    with pytest.raises(InputError, match="the input is a dict .*'image'.*target="):
        explain({"image": pictures[0], "label": 1})
    with pytest.raises(InputError, match=r"images\[1\] is a dict"):
        explain([pictures[0], {"image": pictures[1]}])
    with pytest.raises(InputError, match="an input is a dict"):
        list(explain(item for item in [{"image": pictures[0]}]))


def test_gradio_from_pipeline_refuses_and_gradio_interface_shows_the_same_overlay(checkpoint, pictures):
    gr = pytest.importorskip("gradio")
    from hf_vit_rollout.pipeline import gradio_interface

    explain = pipeline(TASK, model=checkpoint("vit"), method="gae")
    with pytest.raises(ValueError, match="must be a transformers.pipeline"):
        gr.Interface.from_pipeline(explain)
    interface = gradio_interface(explain)
    overlay, label = interface.fn(pictures[1])
    expected = explain(pictures[1])
    assert overlay.tobytes() == expected["overlay"].tobytes() and label == {expected["label"]: expected["score"]}
    with pytest.raises(TypeError, match="vit-explanation"):
        gradio_interface(lambda x: x)


# ----------------------------------------------------------------------------------- from_pretrained(model)
def test_from_pretrained_takes_a_loaded_model_and_its_processor(checkpoint, pictures):
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(checkpoint("deit"))
    by_name = hf_vit_rollout.RolloutExplainer.from_pretrained(checkpoint("deit"), method="gae")
    loaded = hf_vit_rollout.RolloutExplainer.from_pretrained(model, method="gae")
    assert loaded.model is model and type(loaded.image_processor).__name__.endswith("Pil")
    np.testing.assert_array_equal(loaded(pictures[0]).mask, by_name(pictures[0]).mask)
    processor = AutoImageProcessor.from_pretrained(checkpoint("deit"), backend="pil")
    given = hf_vit_rollout.RolloutExplainer.from_pretrained(model, image_processor=processor)
    assert given.image_processor is processor
    assert hf_vit_rollout.RolloutExplainer.from_pretrained(checkpoint("deit"), image_processor=processor).image_processor is processor
    clip = __import__("transformers").AutoModel.from_pretrained(checkpoint("clip"))
    assert hf_vit_rollout.RolloutExplainer.from_pretrained(clip).tokenizer is not None  # found from name_or_path too


def test_from_pretrained_refuses_what_it_cannot_use(checkpoint):
    import torch
    from transformers import AutoModelForImageClassification

    from hf_vit_rollout import UnsupportedModelError

    with pytest.raises(TypeError, match="Hub id, a checkpoint folder.*got int"):
        hf_vit_rollout.RolloutExplainer.from_pretrained(42)
    with pytest.raises(UnsupportedModelError, match="not a transformers model"):
        hf_vit_rollout.RolloutExplainer.from_pretrained(torch.nn.Linear(2, 2))
    model = AutoModelForImageClassification.from_pretrained(checkpoint("vit"))
    with pytest.raises(TypeError, match="dtype only applies when loading"):
        hf_vit_rollout.RolloutExplainer.from_pretrained(model, dtype="float16")
    model.name_or_path = model.config._name_or_path = ""
    with pytest.raises(ValueError, match="pass image_processor="):
        hf_vit_rollout.RolloutExplainer.from_pretrained(model)
    resnet = AutoModelForImageClassification.from_pretrained(checkpoint("resnet"))
    with pytest.raises(UnsupportedModelError):
        hf_vit_rollout.RolloutExplainer.from_pretrained(resnet)
