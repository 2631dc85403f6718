"""A real ``transformers`` pipeline: ``pipeline("vit-explanation", model=...)``.

Importing :mod:`hf_vit_rollout` registers the task, so the pipeline's own machinery — model and
processor loading (``from_pretrained``), ``device``, ``batch_size`` and data-set iteration — works as
for any other task, and each input yields an :class:`~hf_vit_rollout.Explanation`::

    import hf_vit_rollout  # registers "vit-explanation"
    from transformers import pipeline

    explain = pipeline("vit-explanation", model="demo", method="gae")
    explanation = explain("cat.png", target="tabby")
    explanations = explain(["a.png", "b.png"], batch_size=8)

Parameters given at creation or per call: ``method``, ``head_fusion``, ``discard_ratio``, ``target``
(one target for every image of the call).
"""

from __future__ import annotations

from transformers import AutoModel, AutoModelForImageClassification, Pipeline
from transformers.pipelines import PIPELINE_REGISTRY

from .explainer import DEMO_MODEL, RolloutExplainer, demo_model_path
from .images import load_image

TASK = "vit-explanation"


class ViTExplanationPipeline(Pipeline):
    """Pipeline that explains images with :class:`~hf_vit_rollout.RolloutExplainer` methods."""

    _load_processor = False
    _load_image_processor = True
    _load_feature_extractor = False
    _load_tokenizer = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.explainer = RolloutExplainer(self.model, self.image_processor)

    def _sanitize_parameters(self, target=None, method=None, head_fusion=None, discard_ratio=None, **kwargs):
        forward = {"target": target, "method": method, "head_fusion": head_fusion, "discard_ratio": discard_ratio}
        forward = {key: value for key, value in forward.items() if value is not None}
        explainer = getattr(self, "explainer", None)
        if explainer is not None:  # validate the merged settings now, at the boundary
            merged = {**getattr(self, "_forward_params", {}), **forward}
            explainer._settings(merged.get("method"), merged.get("head_fusion"), merged.get("discard_ratio"), merged.get("target"))
        return {}, forward, {}

    def preprocess(self, image):
        picture = load_image(image)
        pixel_values = self.image_processor(images=picture, return_tensors="pt")["pixel_values"]
        return {"pixel_values": pixel_values.to(self.dtype), "images": [picture]}

    def _forward(self, model_inputs, target=None, method=None, head_fusion=None, discard_ratio=None):
        images = model_inputs["images"]
        images = [img for group in images for img in (group if isinstance(group, list) else [group])]
        spec, fusion, ratio = self.explainer._settings(method, head_fusion, discard_ratio, target)
        targets = self.explainer._resolve_targets(target, len(images))
        # the capture enables gradients itself for gradient methods, inside the pipeline's no_grad
        explanations = self.explainer._explain_pixels(model_inputs["pixel_values"], images, targets, spec, fusion, ratio, False)
        return {"explanations": explanations}

    def postprocess(self, model_outputs):
        explanations = model_outputs["explanations"]
        return explanations[0] if isinstance(explanations, list) else explanations


def register() -> None:
    """Register the ``"vit-explanation"`` task with ``transformers`` (idempotent)."""
    if TASK not in PIPELINE_REGISTRY.get_supported_tasks():
        PIPELINE_REGISTRY.register_pipeline(
            TASK,
            pipeline_class=ViTExplanationPipeline,
            pt_model=(AutoModelForImageClassification, AutoModel),
            type="image",
        )


def explanation_pipeline(model: str = DEMO_MODEL, **kwargs) -> ViTExplanationPipeline:
    """``pipeline("vit-explanation", ...)`` that also understands ``model="demo"`` and loads the
    PIL image processor explicitly (no torchvision needed)."""
    from transformers import AutoImageProcessor, pipeline

    register()
    source = str(demo_model_path()) if str(model) == DEMO_MODEL else model
    if "image_processor" not in kwargs and isinstance(source, str):
        kwargs["image_processor"] = AutoImageProcessor.from_pretrained(source, backend="pil")
    return pipeline(TASK, model=source, **kwargs)
