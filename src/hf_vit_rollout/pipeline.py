"""A real ``transformers`` pipeline: ``pipeline("vit-explanation", model=...)``.

Importing :mod:`hf_vit_rollout` registers the task. Its stages are the explainer's own
(:mod:`hf_vit_rollout.stages`), with the same settings object, so a call gives the same maps
through the pipeline as through :class:`~hf_vit_rollout.RolloutExplainer`. Like every
``transformers`` pipeline it answers with dicts, in the style of ``image-segmentation``::

    from hf_vit_rollout.pipeline import pipeline   # transformers.pipeline that also knows "demo"

    explain = pipeline("vit-explanation", model="demo", method="gae")
    result = explain("cat.png", target="tabby")
    result["label"], result["score"]             # the explained class and its probability
    result["mask"]                               # PIL "L" heat-map at the image's size
    result["overlay"]                            # PIL RGB heat-map blended onto the image
    result["explanation"]                        # the full Explanation (mask array, params, ...)
    results = explain(["a.png", "b.png", "c.png"], target=[0, None, "ring"], batch_size=2)
    top3 = explain("cat.png", top_k=3)           # a list of three dicts, one forward pass

``transformers.pipeline("vit-explanation", model=path_or_hub_id)`` works the same way;
``transformers.pipeline`` resolves names itself and so does not know ``"demo"`` (pass
``hf_vit_rollout.demo_model_path()``, or use this module's :func:`pipeline`). Settings
(``method``, ``head_fusion``, ``discard_ratio``, ``target``, ``text``, ``top_k``,
``full_resolution``, ``layer``, ``head``, ``start_layer``) may be given when the pipeline is built
(checked then) or per call; unknown keywords raise ``TypeError``. Backbone checkpoints load without
a classifier, never with a random one. ``device`` takes what ``transformers`` takes (``-1``, ``0``,
``"cuda:0"``, a ``torch.device``) and refuses devices this machine lacks.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, NamedTuple

import numpy as np
import torch
from PIL import Image
from transformers import Pipeline
from transformers.pipelines import PIPELINE_REGISTRY

from . import stages
from .errors import InputError
from .explainer import RolloutExplainer
from .explanation import Explanation, _to_uint8
from .loading import DEMO_MODEL, ExplainableModel, load_processors, resolve_source
from .request import ExplainRequest, check_device

TASK = "vit-explanation"
_SETTINGS = (
    "method", "head_fusion", "discard_ratio", "target", "text", "top_k", "full_resolution", "layer", "head", "start_layer",
    "detection", "min_score", "region", "region_reduce",
)


class _Targeted(NamedTuple):
    """An image travelling with its own target through the pipeline's batching."""

    image: Any
    target: Any


def as_result(explanation: Explanation) -> dict:
    """The pipeline's answer for one explained target: ``label``, ``score``, ``mask`` (a PIL ``"L"``
    image of the heat-map, 0-255, at the heat-map's size: the input's own, or a bounded one for
    images above :data:`~hf_vit_rollout.placement.HEATMAP_MAX_PIXELS` unless ``full_resolution``),
    ``overlay`` (PIL RGB, the same size) and ``explanation`` (the full :class:`Explanation`).
    For a detection model also ``box`` (``{"xmin", "ymin", "xmax", "ymax"}`` in the image's pixels,
    as ``transformers``' object-detection pipeline gives it) and ``detection`` (the token index)."""
    if hasattr(explanation, "heatmaps"):  # a video: one overlay per frame
        return {"label": explanation.label, "score": explanation.score, "overlays": explanation.overlays(), "explanation": explanation}
    result = {
        "label": explanation.label,
        "score": explanation.score,
        "mask": Image.fromarray(_to_uint8(explanation.heatmap), mode="L"),
        "overlay": explanation.overlay(),
        "explanation": explanation,
    }
    if explanation.box is not None:
        result["box"] = dict(zip(("xmin", "ymin", "xmax", "ymax"), explanation.box))
        result["detection"] = explanation.detection
    return result


def _refuse_dict(item, where: str) -> None:
    if isinstance(item, dict):
        raise InputError(
            f"{where} is a dict ({', '.join(map(repr, list(item)[:4]))}); pass the image itself (a path, PIL image, "
            "array or tensor) and its class with target=. For the rows of a datasets.Dataset use "
            "transformers.pipelines.pt_utils.KeyDataset(dataset, 'image'), or hf_vit_rollout.explain_dataset"
        )


class ViTExplanationPipeline(Pipeline):
    """Pipeline that explains images with :class:`~hf_vit_rollout.RolloutExplainer` methods."""

    _load_processor = False
    _load_image_processor = True
    _load_feature_extractor = False
    _load_tokenizer = False

    def __init__(self, *args, **kwargs):
        tokenizer = kwargs.pop("explainer_tokenizer", None)
        if kwargs.get("device") is not None:  # transformers' own parsing gives torch's or an assertion's message
            kwargs["device"] = check_device(kwargs["device"])
        self.explainer = None  # _sanitize_parameters runs inside super().__init__
        self._pending = {k: kwargs[k] for k in _SETTINGS if k in kwargs}
        super().__init__(*args, **kwargs)
        self.explainer = RolloutExplainer(self.model, self.image_processor, tokenizer=tokenizer)
        self.base_request = self.explainer.request(queries_later=True, **self._pending)  # OWL-ViT: queries per call

    def _sanitize_parameters(self, _request: ExplainRequest | None = None, **kwargs):
        if _request is not None:  # already validated by __call__ (per-image targets ride with their images)
            return {"request": _request}, {"request": _request}, {"request": _request}
        unknown = [k for k in kwargs if k not in _SETTINGS and k not in ("batch_size", "num_workers")]
        if unknown:
            raise TypeError(f"unknown keyword(s) {', '.join(map(repr, unknown))} for the {TASK!r} pipeline; it takes {', '.join(_SETTINGS)}")
        settings = {k: v for k, v in kwargs.items() if k in _SETTINGS}
        if self.explainer is None:  # at construction: checked once the model is wrapped
            ExplainRequest().updated(**{k: v for k, v in settings.items() if k != "target" or not isinstance(v, str)})
            return {}, {}, {}
        request = self.base_request.updated(**settings)
        self.explainer.request(**{k: getattr(request, k) for k in _SETTINGS})
        return {"request": request}, {"request": request}, {"request": request}

    def __call__(self, inputs=None, **kwargs):
        """Explain one image (a dict back) or a list (a list of dicts back; with ``top_k`` a list of
        ``k`` dicts per image). Generators and data sets stream as in ``transformers``."""
        if inputs is None or (isinstance(inputs, (list, tuple)) and len(inputs) == 0):
            raise InputError("got no images; pass an image or a non-empty list of images")
        _refuse_dict(inputs, "the input")
        request = self.base_request.updated(**{k: v for k, v in kwargs.items() if k in _SETTINGS})
        single = isinstance(inputs, (str, os.PathLike, Image.Image, np.ndarray, torch.Tensor))
        if not single and not isinstance(inputs, (list, tuple)) and not request.targets_per_image:
            return super().__call__(inputs, **kwargs)  # generators and data sets stream as in transformers
        items = [inputs] if single else list(inputs)
        for i, item in enumerate(items):
            _refuse_dict(item, f"images[{i}]")
        if request.targets_per_image:  # one target per image travels with its image, whatever the batch
            if len(request.target) != len(items):
                raise InputError(f"got {len(request.target)} targets for {len(items)} images; pass one target, or one per image")
            items = [_Targeted(image, target) for image, target in zip(items, request.target)]
            extra = {k: v for k, v in kwargs.items() if k in ("batch_size", "num_workers")}
            results = super().__call__(items, _request=dataclasses.replace(request, target=None), **extra)
            return results[0] if single else results
        results = super().__call__(items, **kwargs)
        return results[0] if single else results

    def preprocess(self, item, request: ExplainRequest):
        if isinstance(item, _Targeted):  # an image with its own target (None: its predicted class)
            image, target = item
        else:
            _refuse_dict(item, "an input")
            image, target = item, None if request.callable_target is not None else request.target
        prepared = stages.preprocess(self.explainer, image, target)
        # only the prepared image: transformers' collate would concatenate pixel values, which fails
        # for inputs of several sizes; the stages stack them per size themselves
        return {"prepared": [prepared]}

    def _forward(self, model_inputs, request: ExplainRequest):
        batch = [p for group in model_inputs["prepared"] for p in (group if isinstance(group, list) else [group])]
        text_inputs = None if request.text is None else self.explainer.text_inputs(request.text)
        passes = stages.forward(self.explainer, batch, request, text_inputs)
        return {"results": [[prepared, passed] for prepared, passed in zip(batch, passes)]}

    def postprocess(self, model_outputs, request: ExplainRequest):
        results = model_outputs["results"]
        prepared, passed = results[0] if isinstance(results[0], list) else results
        explained = stages.postprocess(self.explainer, prepared, passed, request)
        if isinstance(explained, list):  # top_k: one dict per class, most probable first (min_score: per detection)
            return [as_result(e) for e in explained]
        return as_result(explained)


def register() -> None:
    """Register the ``"vit-explanation"`` task with ``transformers`` (idempotent)."""
    if TASK not in PIPELINE_REGISTRY.get_supported_tasks():
        PIPELINE_REGISTRY.register_pipeline(TASK, pipeline_class=ViTExplanationPipeline, pt_model=(ExplainableModel,), type="image")


def pipeline(task: str = TASK, model: str = DEMO_MODEL, **kwargs) -> ViTExplanationPipeline:
    """``transformers.pipeline`` for the ``vit-explanation`` task that also knows ``model="demo"``
    and loads the PIL image processor and, for image-text models, the tokenizer."""
    from transformers import pipeline as hf_pipeline

    if task != TASK:
        raise ValueError(f"hf_vit_rollout.pipeline serves the {TASK!r} task; use transformers.pipeline for {task!r}")
    register()
    if kwargs.get("device") is not None:  # before the weights load
        kwargs["device"] = check_device(kwargs["device"])
    source = str(resolve_source(model)) if isinstance(model, str) else model
    if isinstance(source, str):
        processor, tokenizer = load_processors(source)
        kwargs.setdefault("image_processor", processor)
        kwargs.setdefault("explainer_tokenizer", tokenizer)
    return hf_pipeline(TASK, model=source, **kwargs)


def explanation_pipeline(model: str = DEMO_MODEL, **kwargs) -> ViTExplanationPipeline:
    """``pipeline("vit-explanation", model, ...)``: the name 0.1.0 exported."""
    return pipeline(TASK, model, **kwargs)


def gradio_interface(explain: ViTExplanationPipeline, **interface_kwargs):
    """A ``gradio.Interface`` for this pipeline: an image in; the overlay and the explained class out.

    ``gr.Interface.from_pipeline`` knows only ``transformers``' built-in tasks and refuses this one
    (gradio raises ``ValueError: pipeline must be a transformers.pipeline or diffusers.pipeline``);
    this builds the equivalent. ``hf-vit-rollout app`` is the full app (models, methods, targets).

    Args:
        explain: a ``vit-explanation`` pipeline; its settings (method, target, ...) apply to every call.
        **interface_kwargs: passed to ``gradio.Interface`` (``title``, ``examples``, ...).
    """
    import gradio as gr

    if not isinstance(explain, ViTExplanationPipeline):
        raise TypeError(f"gradio_interface takes a {TASK!r} pipeline, got {type(explain).__name__}")

    def run(image):
        if image is None:
            raise gr.Error("upload an image first")
        result = explain(image)
        result = result[0] if isinstance(result, list) else result
        if result["label"] is None or result["score"] is None:  # a backbone: no class to show
            return result["overlay"], "(no classifier head)"
        return result["overlay"], {result["label"]: result["score"]}

    interface_kwargs.setdefault("title", f"{explain.base_request.method} · {explain.model.config.name_or_path}")
    return gr.Interface(
        fn=run,
        inputs=gr.Image(type="pil", label="image"),
        outputs=[gr.Image(type="pil", label="overlay"), gr.Label(label="explained class")],
        **interface_kwargs,
    )
