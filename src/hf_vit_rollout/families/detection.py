"""Detection: YOLOS, whose detection tokens sit beside the patch tokens; one map per detection.

``YolosForObjectDetection`` runs a ViT over ``[CLS, patches (row-major), det_0 ... det_{D-1}]``
and predicts, from each detection token's last state, class logits ``(C + 1)`` (the last one is
"no object") and a box ``(cx, cy, w, h)`` relative to the model input. Detection ``d`` is
explained like a class of a ViT, with the detection token's row as the output row:

* **Detection target**: ``target=d`` names detection token ``d`` (``0 <= d < D``); its class is the
  model's own choice ``c = argmax`` of the softmax over the real classes (no-object left out, as in
  the processor's ``post_process_object_detection``), and its score that probability.
  ``min_score=s`` explains every detection whose score is at least ``s``, most confident first;
  ``target=None`` without ``min_score`` explains the most confident detection.
* **What a gradient method explains**: the logit of class ``c`` at detection ``d`` (the box
  regression is not explained); the chain's output row is one-hot on token ``1 + h·w + d``.
  Rollout reads the same row of its (class-agnostic) product.
* **Relevance** comes out over the patch tokens; CLS and the detection tokens are prefix/suffix
  tokens whose relevance stays in ``token_relevance``.
* **Boxes** are returned in original-image pixels ``(x0, y0, x1, y1)``, through the same
  :class:`~hf_vit_rollout.placement.Placement` as the heat-map, and drawn by
  :meth:`~hf_vit_rollout.Explanation.overlay`.
* Methods: the product ones (``rollout``, ``grad_rollout``, ``gae``, ``transformer_attribution``) and
  the input-relevance ones (``attnlrp``, ``cp_lrp``); ``flow``, ``attention`` and ``legrad`` take one
  output row for the whole batch and are refused here.
"""

from __future__ import annotations

import logging
import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from ..errors import TargetError
from .base import Family, relevance_mask
from .tokens import OneStepPerLayer, _pair

logger = logging.getLogger(__name__)

_ONE_ROW = (
    "YOLOS explains one detection token's row per map, and {what} takes one output row for the whole batch; "
    "use rollout, grad_rollout, gae, transformer_attribution, attnlrp or cp_lrp"
)

_PATCH_ROW = (
    "OWL-ViT and OWLv2 explain one box's patch-token row per map, and {what} takes one output row for the whole "
    "batch; use rollout, grad_rollout or gae"
)


@dataclass(frozen=True)
class DetectionLayout(OneStepPerLayer):
    """``[CLS, grid patches, D detection tokens]``.

    Attributes:
        grid_size: ``(h, w)`` patches.
        num_detection_tokens: ``D``.
    """

    grid_size: tuple[int, int]
    num_detection_tokens: int
    num_prefix_tokens: int = 1
    cls_index: int | None = None
    pooling: str = "detection"
    refused_combines: ClassVar[dict] = {
        "flow": _ONE_ROW.format(what="attention flow"),
        "layer": _ONE_ROW.format(what="the raw-attention method"),
        "sum": _ONE_ROW.format(what="LeGrad"),
    }

    @property
    def num_patches(self) -> int:
        return self.grid_size[0] * self.grid_size[1]

    @property
    def num_tokens(self) -> int:
        return 1 + self.num_patches + self.num_detection_tokens

    def detection_weights(self, detections: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
        """``(B,)`` detection indices → ``(B, N)`` one-hot rows on those detection tokens."""
        weights = torch.zeros(detections.shape[0], self.num_tokens, dtype=dtype, device=detections.device)
        weights[torch.arange(detections.shape[0]), 1 + self.num_patches + detections] = 1.0
        return weights

    def output_weights(self, dtype=torch.float32, device=None) -> torch.Tensor:
        """Placeholder row (detection 0); the stages set each explained detection's row."""
        return self.detection_weights(torch.zeros(1, dtype=torch.long, device=device), dtype)[0]

    def patch_relevance(self, relevance: torch.Tensor) -> torch.Tensor:
        return relevance[:, 1 : 1 + self.num_patches].reshape(-1, *self.grid_size)

    def attention_mismatch(self, layer: int, attention: torch.Tensor) -> str | None:
        if attention.shape[-1] == self.num_tokens:
            return None
        return (
            f"layer {layer} attends over {attention.shape[-1]} tokens, but the config describes 1 + "
            f"{self.grid_size[0]}×{self.grid_size[1]} patches + {self.num_detection_tokens} detection tokens"
        )

    def layer_map(self, method_map: Callable, layer: int, attention: torch.Tensor, grad, settings: tuple) -> torch.Tensor:
        return method_map(attention, grad, *settings, None)



@dataclass(frozen=True)
class Detection:
    """One explained detection: token ``index``, its class, probability and box (model-input units)."""

    index: int
    label: int
    score: float
    box: tuple[float, float, float, float]  # (cx, cy, w, h) relative to the model input


class YolosFamily(Family):
    model_types = ("yolos",)
    detection_noun = "detection tokens"  # what detection= indexes, for messages

    @staticmethod
    def is_detector_model(model) -> bool:
        """Whether ``model`` has the detection heads (``YolosModel`` is a backbone)."""
        return hasattr(model, "class_labels_classifier")

    def detection_count(self, explainer) -> int:
        return int(explainer.model.config.num_detection_tokens)

    @staticmethod
    def label_name(explainer, request, label: int) -> str | None:
        return explainer.id2label.get(label)

    def check(self, config) -> None:
        """Every YOLOS checkpoint is explained (``YolosModel`` as a backbone, its detection tokens kept)."""

    def layout(self, config, image_size, held=None, inputs=None) -> DetectionLayout:
        patch_h, patch_w = _pair(config.patch_size)
        grid = (int(image_size[0]) // patch_h, int(image_size[1]) // patch_w)
        return DetectionLayout(grid, int(config.num_detection_tokens))

    # ----------------------------------------------------------------- detection targets
    def check_request(self, explainer, request, queries_later: bool = False) -> None:
        """A detector takes ``detection=`` or ``min_score=`` (OWL-ViT: with ``text=`` queries); a
        backbone (``YolosModel``) what any image model takes."""
        if not self.is_detector_model(explainer.model):
            return super().check_request(explainer, request, queries_later)
        name = type(explainer.model).__name__
        self._refuse_region(explainer, request)
        asked = ("target", "top_k") if self.needs_text else ("target", "text", "top_k")
        given = [k for k in asked if getattr(request, k) is not None]
        if given and not (given == ["target"] and request._only_predicted()):
            raise TargetError(
                f"{name} is a detector: name the detection to explain with detection=index (0 to "
                f"{self.detection_count(explainer) - 1}) or explain every detection above a score with "
                f"min_score=, not {given[0]}="
            )
        if self.needs_text and (request.text is None and not queries_later or explainer.tokenizer is None):
            raise TargetError(
                f"{name} detects what text queries name: pass text=['a photo of a cat', ...] (one query or a list), "
                "with the checkpoint's tokenizer loaded"
            )
        self.check_target(explainer, request.detection)
        self.check_detector_settings(explainer, request)
        request.check_model(explainer.num_layers, explainer.num_heads)

    def check_detector_settings(self, explainer, request) -> None:
        """Refuse a detector's methods or settings that this family cannot explain (DETR); every one here."""

    def check_target(self, explainer, target) -> None:
        """A detection index in range (``None``: the most confident detection)."""
        count = self.detection_count(explainer)
        if isinstance(target, tuple):
            for one in target:
                self.check_target(explainer, one)
            return
        if target is None:
            return
        if not isinstance(target, numbers.Integral) or isinstance(target, bool):
            raise TargetError(
                f"a detection target is the index of a detection token (0 to {count - 1}), or None for the most "
                f"confident detection; got {target!r} (to explain every detection above a score pass min_score=)"
            )
        if not 0 <= int(target) < count:
            raise TargetError(
                f"detection {target} is out of range: this {type(explainer.model).__name__} has {count} "
                f"{self.detection_noun} (0 to {count - 1})"
            )

    @staticmethod
    def scores(outputs) -> torch.Tensor:
        """``(B, D, C)`` class probabilities of every detection, no-object left out (softmax over ``C + 1``)."""
        return outputs.logits.detach().float().softmax(-1)[..., :-1]

    def best(self, outputs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(rank, score, label)``, each ``(B, D)``: every detection's best class, its probability,
        and what orders detections by confidence (here the probability itself)."""
        best, labels = self.scores(outputs).max(-1)
        return best, best, labels

    def choose(self, outputs, targets: list, min_score: float | None) -> list[list[Detection]]:
        """Per image, the detections to explain: the one named, the most confident one, or every one
        scoring at least ``min_score`` (most confident first; possibly none)."""
        rank, best, labels = self.best(outputs)
        boxes = outputs.pred_boxes.detach().float()
        chosen = []
        for b, target in enumerate(targets):
            if min_score is not None:
                order = torch.argsort(rank[b], descending=True, stable=True)
                indices = [int(d) for d in order if float(best[b, d]) >= min_score]
            elif target is None:
                indices = [int(rank[b].argmax())]
            else:
                indices = [int(target)]
            chosen.append(
                [Detection(d, int(labels[b, d]), float(best[b, d]), tuple(float(v) for v in boxes[b, d])) for d in indices]
            )
        return chosen

    @staticmethod
    def image_box(box: tuple, placement, input_size: tuple[int, int]) -> tuple[float, float, float, float]:
        """``(cx, cy, w, h)`` relative to the model input → ``(x0, y0, x1, y1)`` on the original image."""
        cx, cy, w, h = box
        in_h, in_w = input_size
        top, left = placement.offset
        res_h, res_w = placement.resized
        width, height = placement.image_size
        xs = [((cx + s * w / 2) * in_w + left) * width / res_w for s in (-1, 1)]
        ys = [((cy + s * h / 2) * in_h + top) * height / res_h for s in (-1, 1)]
        return (float(np.clip(xs[0], 0, width)), float(np.clip(ys[0], 0, height)),
                float(np.clip(xs[1], 0, width)), float(np.clip(ys[1], 0, height)))

    def objectives(self, explainer, outputs, batch, request, layout):
        """A detector's ``[(scores (B,), explained, output rows (B, N))]``, one per rank (``None`` for a
        backbone).

        Rank ``r`` holds each image's ``r``-th chosen detection (:meth:`choose`); an image with fewer
        detections repeats a filler (its first, or detection 0) whose ``explained`` entry is ``None``,
        dropped in :meth:`results`. Each rank's score is the logit of the detection's class.
        """
        if not self.is_detector_model(explainer.model):
            return None
        per_image = isinstance(request.detection, tuple)  # one per image: it rides with its image as its target
        wanted = [p.target if per_image else request.detection for p in batch]
        chosen = self.choose(outputs, wanted, request.min_score)
        ranks = []
        rows = torch.arange(len(batch), device=outputs.logits.device)
        for rank in range(max((len(c) for c in chosen), default=0)):
            picked = [c[rank] if rank < len(c) else (c[0] if c else None) for c in chosen]
            index = torch.tensor([p.index if p else 0 for p in picked], device=rows.device)
            label = torch.tensor([p.label if p else 0 for p in picked], device=rows.device)
            explained = [c[rank] if rank < len(c) else None for c in chosen]
            ranks.append((outputs.logits[rows, index, label], explained, layout.detection_weights(index)))
        return ranks

    def results(self, explainer, prepared, passed, request, index: int):
        """One :class:`~hf_vit_rollout.Explanation` per explained detection (a list with ``min_score``,
        else the one); a backbone's as any image model's."""
        from ..explanation import Explanation

        if not self.is_detector_model(explainer.model):
            return super().results(explainer, prepared, passed, request, index)
        input_size = tuple(prepared.pixel_values.shape[-2:])
        layout = explainer.layout(input_size, prepared.batched_inputs())
        patches = layout.patch_relevance(passed.relevance).clamp(min=0).numpy()
        size = prepared.placement.output_size(request.full_resolution)
        results = []
        for rank, found in enumerate(passed.explained):
            if found is None:  # a filler rank of a batch whose other images had more detections
                continue
            mask = relevance_mask(patches[rank], index)
            results.append(
                Explanation(
                    image=prepared.image,
                    mask=mask,
                    heatmap=prepared.placement.heatmap(mask, size),
                    method=request.method,
                    target=found.label,
                    label=self.label_name(explainer, request, found.label),
                    score=found.score,
                    predicted=found.label,
                    token_relevance=passed.relevance[rank].numpy(),
                    params=request.params(),
                    placement=prepared.placement,
                    detection=found.index,
                    box=self.image_box(found.box, prepared.placement, input_size),
                )
            )
        if request.min_score is not None:
            if not results:
                logger.info("image %d: no detection scores at least %s", index, request.min_score)
            return results
        return results[0]




# ------------------------------------------------------------------------------ OWL-ViT
@dataclass(frozen=True)
class PatchDetectionLayout(DetectionLayout):
    """``[CLS, grid patches]`` where every patch token predicts one box (OWL-ViT, OWLv2)."""

    num_detection_tokens: int = 0
    refused_combines: ClassVar[dict] = {
        name: _PATCH_ROW.format(what=what)
        for name, what in (("flow", "attention flow"), ("layer", "the raw-attention method"), ("sum", "LeGrad"))
    }

    def method_refusal(self, spec, layer: int) -> str | None:
        """The LRP methods: their rules cover ViT blocks and a classifier, not OWL's heads."""
        if spec.rules is None:
            return None
        return (
            "the LRP rules cover the vision tower's blocks and a linear classifier, but OWL-ViT and OWLv2 score a box "
            "through their own heads (the patch state times the class token, a layer norm, a projection compared "
            "with the text queries' embeddings), which have no rules yet; use rollout, grad_rollout or gae"
        )

    def detection_weights(self, detections: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
        """``(B,)`` detection (= patch) indices → ``(B, N)`` one-hot rows on those patch tokens."""
        weights = torch.zeros(detections.shape[0], self.num_tokens, dtype=dtype, device=detections.device)
        weights[torch.arange(detections.shape[0]), 1 + detections] = 1.0
        return weights


class OwlViTFamily(YolosFamily):
    """OWL-ViT: open-vocabulary detection, one box per patch token, classes named by text queries.

    ``OwlViTForObjectDetection`` runs a CLIP vision tower over ``[CLS, patches]``; the state of patch
    token ``1 + d`` (times the class token's, then a layer norm) predicts box ``d`` and its logits
    against every text query. ``text=["a cat", "a dog"]`` gives the queries; a detection's class is
    the query with the highest logit (the processor's choice), its score that logit's sigmoid, and
    the explained score is that query's logit at box ``d``. The chain's output row is one-hot on patch token ``1 + d`` (the class token's share reaches
    gradient methods through their gradients). ``detection=d`` ranges over the patches.
    """

    model_types = ("owlvit_vision_model",)
    needs_text = True
    one_box_per_patch = True  # thousands of boxes on a real checkpoint: the app asks for an index
    #: the detector's attribute holding the image-text model (whose ``vision_model`` is explained)
    wrapper = "owlvit"
    detection_noun = "boxes, one per patch"

    def layout(self, config, image_size, held=None, inputs=None) -> PatchDetectionLayout:
        patch_h, patch_w = _pair(config.patch_size)
        grid = (int(image_size[0]) // patch_h, int(image_size[1]) // patch_w)
        return PatchDetectionLayout(grid)

    @staticmethod
    def is_detector_model(model) -> bool:
        return hasattr(model, "class_head") and hasattr(model, "box_head")

    def attention_setup(self, vision_root):
        from ..capture import find_attention_modules
        from ..errors import UnsupportedModelError

        tower = getattr(getattr(vision_root, self.wrapper, None), "vision_model", None) or getattr(vision_root, "vision_model", vision_root)
        modules = find_attention_modules(tower)
        if not modules:
            raise UnsupportedModelError(f"{type(vision_root).__name__} has no {self.name} vision attention modules")
        return [], {}, modules

    name = "OWL-ViT"

    def detection_count(self, explainer) -> int:
        model = explainer.model
        return int(model.num_patches_height * model.num_patches_width)

    @staticmethod
    def best(outputs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(rank, score, label)``, each ``(B, P)``: the query with the highest logit (as the processor's
        ``post_process_object_detection`` picks it), that logit's sigmoid, and the logit itself to
        order boxes (sigmoids near 1 tie in float32; the logits do not)."""
        logits, labels = outputs.logits.detach().float().max(-1)
        return logits, logits.sigmoid(), labels

    def tile_text(self, text_inputs: dict, batch: int) -> dict:
        """The ``(Q, L)`` tokenised queries repeated for every image: ``(B·Q, L)``."""
        return {k: v.repeat(batch, 1) for k, v in text_inputs.items()}

    @staticmethod
    def label_name(explainer, request, label: int) -> str | None:
        texts = [request.text] if isinstance(request.text, str) else list(request.text or ())
        return texts[label] if label < len(texts) else None


class Owlv2Family(OwlViTFamily):
    """OWLv2: OWL-ViT's heads and token layout, on images padded to a square before resizing.

    ``Owlv2ForObjectDetection`` is explained exactly as OWL-ViT (one box per patch token, the
    explained score the logit of the box's best query). Its image processor pads each image bottom
    and right to a square (``S = max(H, W)``) and resizes that square; the heat-map is the part of
    the patch grid over the image (:func:`~hf_vit_rollout.placement.pads_to_square`), and boxes,
    predicted relative to the padded square, come back in original-image pixels through the same
    placement. OWLv2's objectness head (``objectness_logits``) is not what is explained.
    """

    model_types = ("owlv2_vision_model",)
    wrapper = "owlv2"
    name = "OWLv2"


FAMILIES = (YolosFamily(), OwlViTFamily(), Owlv2Family())
