"""A real ``transformers`` pipeline: ``pipeline("vit-explanation", model=...)``.

Importing :mod:`hf_vit_rollout` registers the task. Its stages are the explainer's own
(:mod:`hf_vit_rollout.stages`), with the same settings object, so a call gives the same maps
through the pipeline as through :class:`~hf_vit_rollout.RolloutExplainer`::

    from hf_vit_rollout import pipeline          # transformers.pipeline that also knows "demo"

    explain = pipeline("vit-explanation", model="demo", method="gae")
    explanation = explain("cat.png", target="tabby")
    explanations = explain(["a.png", "b.png", "c.png"], target=[0, None, "ring"], batch_size=2)
    top3 = explain("cat.png", top_k=3)           # three explanations, one forward pass

``transformers.pipeline("vit-explanation", model=path_or_hub_id)`` works the same way;
``transformers.pipeline`` resolves names itself and so does not know ``"demo"`` (pass
``hf_vit_rollout.demo_model_path()``, or use this module's :func:`pipeline`). Settings
(``method``, ``head_fusion``, ``discard_ratio``, ``target``, ``text``, ``top_k``,
``full_resolution``) may be given when the pipeline is built (checked then) or per call; unknown
keywords raise ``TypeError``. Backbone checkpoints load without a classifier, never with a random one.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import torch
from PIL import Image
from transformers import Pipeline
from transformers.pipelines import PIPELINE_REGISTRY

from . import stages
from .errors import InputError
from .explainer import RolloutExplainer
from .loading import DEMO_MODEL, ExplainableModel, load_processors, resolve_source
from .request import ExplainRequest

TASK = "vit-explanation"
_SETTINGS = ("method", "head_fusion", "discard_ratio", "target", "text", "top_k", "full_resolution")


class ViTExplanationPipeline(Pipeline):
    """Pipeline that explains images with :class:`~hf_vit_rollout.RolloutExplainer` methods."""

    _load_processor = False
    _load_image_processor = True
    _load_feature_extractor = False
    _load_tokenizer = False

    def __init__(self, *args, **kwargs):
        tokenizer = kwargs.pop("explainer_tokenizer", None)
        self.explainer = None  # _sanitize_parameters runs inside super().__init__
        self._pending = {k: kwargs[k] for k in _SETTINGS if k in kwargs}
        super().__init__(*args, **kwargs)
        self.explainer = RolloutExplainer(self.model, self.image_processor, tokenizer=tokenizer)
        self.base_request = self.explainer.request(**self._pending)

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
        if inputs is None or (isinstance(inputs, (list, tuple)) and len(inputs) == 0):
            raise InputError("got no images; pass an image or a non-empty list of images")
        request = self.base_request.updated(**{k: v for k, v in kwargs.items() if k in _SETTINGS})
        single = isinstance(inputs, (str, os.PathLike, Image.Image, np.ndarray, torch.Tensor))
        if not single and not isinstance(inputs, (list, tuple)) and not request.targets_per_image:
            return super().__call__(inputs, **kwargs)  # generators and data sets stream as in transformers
        items = [inputs] if single else list(inputs)
        if request.targets_per_image:  # one target per image travels with its image, whatever the batch
            if len(request.target) != len(items):
                raise InputError(f"got {len(request.target)} targets for {len(items)} images; pass one target, or one per image")
            items = [{"image": image, "target": target} for image, target in zip(items, request.target)]
            extra = {k: v for k, v in kwargs.items() if k in ("batch_size", "num_workers")}
            results = super().__call__(items, _request=dataclasses.replace(request, target=None), **extra)
            return results[0] if single else results
        results = super().__call__(items, **kwargs)
        return results[0] if single else results

    def preprocess(self, item, request: ExplainRequest):
        if isinstance(item, dict):  # an image with its own target (None: its predicted class)
            image, target = item["image"], item["target"]
        else:
            image, target = item, None if request.callable_target is not None else request.target
        prepared = stages.preprocess(self.explainer, image, target)
        return {"pixel_values": prepared.pixel_values[None].to(self.dtype), "prepared": [prepared]}

    def _forward(self, model_inputs, request: ExplainRequest):
        batch = [p for group in model_inputs["prepared"] for p in (group if isinstance(group, list) else [group])]
        text_inputs = None if request.text is None else self.explainer.text_inputs(request.text)
        passes = stages.forward(self.explainer, batch, request, text_inputs)
        return {"results": [[prepared, passed] for prepared, passed in zip(batch, passes)]}

    def postprocess(self, model_outputs, request: ExplainRequest):
        results = model_outputs["results"]
        prepared, passed = results[0] if isinstance(results[0], list) else results
        return stages.postprocess(self.explainer, prepared, passed, request)


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
    source = str(resolve_source(model)) if isinstance(model, str) else model
    if isinstance(source, str):
        processor, tokenizer = load_processors(source)
        kwargs.setdefault("image_processor", processor)
        kwargs.setdefault("explainer_tokenizer", tokenizer)
    return hf_pipeline(TASK, model=source, **kwargs)


def explanation_pipeline(model: str = DEMO_MODEL, **kwargs) -> ViTExplanationPipeline:
    """``pipeline("vit-explanation", model, ...)``: the name 0.1.0 exported."""
    return pipeline(TASK, model, **kwargs)
