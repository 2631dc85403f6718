"""DETR and Conditional DETR: a CNN backbone, a transformer encoder over its feature grid, and a
decoder whose object queries each predict one box; one map per detection.

``DetrForObjectDetection`` (and ``ConditionalDetrForObjectDetection``) flattens the backbone's last
feature map, ``h×w`` cells row-major (``h = ceil(H/s)``, ``w = ceil(W/s)`` for the padded
``H×W`` input and the backbone's stride ``s``, 32 for a ResNet's fourth stage), into the encoder's
``N = h·w`` image tokens. Each decoder layer runs self-attention over the ``Q`` object queries, then
cross-attention from the queries to the encoder's output. Query ``q``'s last state predicts class
logits and a box ``(cx, cy, w, h)`` relative to the image before padding.

* **Detection target**, as for YOLOS (:mod:`hf_vit_rollout.families.detection`): ``detection=q``
  names object query ``q`` (``0 <= q < Q``); ``min_score=s`` explains every query whose score is at
  least ``s``, most confident first; neither: the most confident query. A query's class is its best
  class: DETR's softmax over ``C + 1`` classes with no-object left out (as in
  ``post_process_object_detection``), Conditional DETR's sigmoid over its ``C`` classes (it has no
  no-object class); its score is that probability.
* **Methods**: ``gae`` is Chefer et al. 2021b's encoder-decoder rule
  (:mod:`hf_vit_rollout.methods.encoder_decoder`) with ``Ā = mean_h (∇A ⊙ A)⁺`` for the logit of the
  query's class; ``rollout`` applies the same rules without gradients, ``Ā`` the head-fused
  attention (``head_fusion`` applies, no weak attentions are discarded). Both read row ``q`` of
  ``R_qi``. Every other method is refused with its reason (see :data:`REFUSED_METHODS`).
* **Heat-map**: the ``h×w`` relevance is placed with cells of ``s×s`` input pixels from the input's
  top-left corner, so it lies over the pixels the model saw; padding added by the processor
  (``pad_size``) is never drawn over the image, and its ``pixel_mask`` is passed to the model.
* **Boxes** are returned in original-image pixels ``(x0, y0, x1, y1)``, as
  ``post_process_object_detection`` computes them with ``target_sizes`` the image sizes.
* Only checkpoints with a ``transformers`` backbone are explained: timm backbones
  (``use_timm_backbone=True``, the default of the original ``facebook/detr-resnet-50``; its
  ``revision="no_timm"`` has a ``transformers`` ResNet) are refused, as are backbones other than ResNet,
  whose stride is not derived here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch

from ..errors import UnsupportedModelError
from .detection import YolosFamily
from .tokens import Layout

#: Why each method other than ``gae`` and ``rollout`` is refused for DETR-like detectors.
REFUSED_METHODS = {
    "grad_rollout": "classic gradient rollout multiplies one token set's maps layer by layer; DETR's relevance "
    "crosses from image tokens to object queries",
    "transformer_attribution": "its LRP rules are written for ViT blocks, not for DETR's encoder and decoder layers "
    "and CNN backbone",
    "attnlrp": "its LRP rules are written for ViT blocks, not for DETR's CNN backbone and encoder-decoder layers",
    "cp_lrp": "its LRP rules are written for ViT blocks, not for DETR's CNN backbone and encoder-decoder layers",
    "libragrad": "its gradient rules are written for ViT blocks, not for DETR's CNN backbone and encoder-decoder layers",
    "flow": "attention flow needs one token graph, and DETR's queries and image tokens are two",
    "attention": "the raw-attention method reads one output token's row of one layer, and a DETR query is not a token "
    "of the encoder",
    "legrad": "LeGrad reads every layer out through the classifier, and DETR's encoder layers have no readout",
}


@dataclass(frozen=True)
class EncoderDecoderLayout(Layout):
    """The encoder's ``h×w`` image tokens and the decoder's ``Q`` object queries.

    Attributes:
        grid_size: ``(h, w)`` cells of the backbone's last feature map.
        num_queries: ``Q``.
    """

    grid_size: tuple[int, int]
    num_queries: int
    num_prefix_tokens: int = 0
    cls_index: int | None = None
    pooling: str = "detection"

    @property
    def num_patches(self) -> int:
        return self.grid_size[0] * self.grid_size[1]

    @property
    def num_tokens(self) -> int:
        """The image tokens (a map's relevance covers these; the queries hold none)."""
        return self.num_patches

    def patch_relevance(self, relevance: torch.Tensor) -> torch.Tensor:
        """``(B, N)`` image-token relevance → ``(B, h, w)``."""
        return relevance.reshape(-1, *self.grid_size)


def _stride(backbone) -> int:
    """The input pixels per cell of a ``transformers`` ResNet backbone's last output stage."""
    stages = list(getattr(backbone, "stage_names", None) or [])
    outputs = list(getattr(backbone, "out_features", None) or stages[-1:])
    last = stages.index(outputs[-1])  # "stem" is 0, "stage1" is 1, ...
    stride = 4  # the embedder: a stride-2 convolution and a stride-2 max-pool
    for stage in range(1, last + 1):
        if stage > 1 or getattr(backbone, "downsample_in_first_stage", False):
            stride *= 2
    return stride


def _cells(length: int, stride: int) -> int:
    """Cells of a stride-2 convolution chain (each rounds up: padding ``k // 2``) over ``length`` pixels."""
    cells = length
    for _ in range(int(math.log2(stride))):
        cells = (cells + 1) // 2
    return cells


class DetrFamily(YolosFamily):
    model_types = ("detr", "conditional_detr")

    @staticmethod
    def is_detector_model(model) -> bool:
        return hasattr(model, "class_labels_classifier") and hasattr(model, "bbox_predictor")

    def check(self, config) -> None:
        """Refuse timm backbones and non-ResNet backbones, with the reason."""
        backbone = getattr(config, "backbone_config", None)
        kind = getattr(backbone, "model_type", None) if backbone is not None else None
        name = config.model_type
        if getattr(config, "use_timm_backbone", False) or kind == "timm_backbone" or backbone is None:
            raise UnsupportedModelError(
                f"this {name!r} checkpoint runs a timm backbone (use_timm_backbone=True or a 'timm_backbone' config), which "
                "cannot be loaded here (timm needs torchvision); load a checkpoint with a transformers backbone, e.g. "
                "facebook/detr-resnet-50 with revision='no_timm'"
            )
        if kind != "resnet":
            raise UnsupportedModelError(
                f"this {name!r} checkpoint has a {kind!r} backbone; only ResNet backbones are explained, since the encoder's "
                "grid (and so where the heat-map lies on the image) is derived from the ResNet's strides"
            )

    @staticmethod
    def patch_size(config) -> tuple[int, int]:
        stride = _stride(config.backbone_config)
        return stride, stride

    def layout(self, config, image_size, held=None, inputs=None) -> EncoderDecoderLayout:
        stride = _stride(config.backbone_config)
        grid = (_cells(int(image_size[0]), stride), _cells(int(image_size[1]), stride))
        return EncoderDecoderLayout(grid, int(config.num_queries))

    def attention_setup(self, vision_root):
        """The encoder's self-attention, then each decoder layer's self- and cross-attention, in forward order."""
        if not self.is_detector_model(vision_root):
            raise UnsupportedModelError(
                f"{type(vision_root).__name__} has no detection heads; load the checkpoint as DetrForObjectDetection "
                "(or ConditionalDetrForObjectDetection) to explain its detections"
            )
        model = vision_root.model
        modules = [(f"model.encoder.layers.{i}.self_attn", layer.self_attn, 1) for i, layer in enumerate(model.encoder.layers)]
        for i, layer in enumerate(model.decoder.layers):
            modules.append((f"model.decoder.layers.{i}.self_attn", layer.self_attn, 1))
            modules.append((f"model.decoder.layers.{i}.encoder_attn", layer.encoder_attn, 1))
        return [], {}, modules

    def detection_count(self, explainer) -> int:
        return int(explainer.model.config.num_queries)

    detection_noun = "object queries"

    def check_detector_settings(self, explainer, request) -> None:
        """Refuse the methods and settings that have no meaning here, naming what does."""
        name = type(explainer.model).__name__
        if request.method in REFUSED_METHODS:
            raise ValueError(
                f"method {request.method!r} is not available for {name}: {REFUSED_METHODS[request.method]}; use 'gae' "
                "(Chefer et al. 2021b's encoder-decoder rules) or 'rollout' (the same rules without gradients)"
            )
        if request.start_layer:
            raise ValueError(f"start_layer= is not supported for {name}: the rules need every encoder and decoder layer")
        if request.discard_ratio:
            raise ValueError(
                f"discard_ratio= is not supported for {name}: the encoder-decoder rules discard no attention (pass 0 or "
                "leave it out)"
            )

    def scores(self, outputs) -> torch.Tensor:
        """``(B, Q, C)`` class probabilities: softmax without no-object (DETR), sigmoid (Conditional DETR)."""
        logits = outputs.logits.detach().float()
        return logits.sigmoid() if self._sigmoid(outputs) else logits.softmax(-1)[..., :-1]

    @staticmethod
    def _sigmoid(outputs) -> bool:
        """Whether the outputs are Conditional DETR's (sigmoid class scores, no no-object class)."""
        return type(outputs).__name__.startswith("ConditionalDetr")

    # ------------------------------------------------------------------------------- stages
    def extra_inputs(self, processed, pixel_values) -> dict:
        """``{pixel_mask (H, W)}``: 1 on the image, 0 on the processor's padding (all 1 without padding)."""
        if "pixel_mask" in processed:
            return {"pixel_mask": processed["pixel_mask"][0]}
        return {"pixel_mask": torch.ones(pixel_values.shape[-2:], dtype=torch.long)}

    def forward(self, explainer, batch: list, request, positions: list[int]) -> list:
        """One forward pass for ``batch`` (images of one input size) under capture, then per rank of
        explained detections one backward pass (``gae``) and the rules; see the module docstring."""
        from ..capture import AttentionCapture, CaptureError
        from ..methods.encoder_decoder import attention_cam, encoder_decoder_relevance, gradient_cam
        from ..passes import ImagePass, batch_inputs, check_finite

        config = explainer.model.config
        encoder_layers, decoder_layers = int(config.encoder_layers), int(config.decoder_layers)
        pixel_values = explainer.on_model(torch.stack([p.pixel_values for p in batch]))
        inputs = batch_inputs(batch)
        layout = explainer.layout(tuple(pixel_values.shape[-2:]))
        tokens, queries = layout.num_tokens, layout.num_queries
        maps: list[torch.Tensor] = []

        def on_attention(layer: int, attention: torch.Tensor) -> None:
            if layer < encoder_layers:
                expected, kind = (tokens, tokens), "encoder self-attention"
            elif (layer - encoder_layers) % 2 == 0:
                expected, kind = (queries, queries), "decoder self-attention"
            else:
                expected, kind = (queries, tokens), "decoder cross-attention"
            if tuple(attention.shape[-2:]) != expected:
                raise CaptureError(
                    f"layer {layer} ({kind}) attends {tuple(attention.shape[-2:])}, but the config describes {expected}: "
                    f"{layout.grid_size[0]}×{layout.grid_size[1]} image tokens and {queries} object queries"
                )
            maps.append(attention if gradients else attention.detach())

        def relevance_of(cams: list[torch.Tensor]) -> torch.Tensor:
            """``(B, Q, N)`` from the layers' maps in forward order: the encoder's, then (self, cross) per decoder layer."""
            return encoder_decoder_relevance(cams[:encoder_layers], list(zip(cams[encoder_layers::2], cams[encoder_layers + 1 :: 2])))

        gradients = request.spec.needs_gradient
        per_image = isinstance(request.detection, tuple)
        wanted = [p.target if per_image else request.detection for p in batch]
        capture = AttentionCapture(explainer.model, on_attention, explainer.vision_root, explainer.attention_modules)
        rows = torch.arange(len(batch))
        relevance = []
        with capture, torch.enable_grad() if gradients else torch.no_grad():
            if gradients:  # the maps carry gradients even when every weight is frozen
                pixel_values = pixel_values.detach().requires_grad_(True)
            try:
                outputs = explainer.run_model(pixel_values, None, inputs)
                check_finite(outputs.logits, "model outputs", positions)
                if len(maps) != encoder_layers + 2 * decoder_layers:
                    raise CaptureError(
                        f"{len(maps)} attention layers ran, but the config describes {encoder_layers} encoder and "
                        f"{decoder_layers} decoder layers"
                    )
                frozen = [i for i, a in enumerate(maps) if gradients and not a.requires_grad]
                if frozen:
                    raise RuntimeError(
                        f"attention layer {frozen[0]} of {type(explainer.model).__name__} carries no gradient: with every "
                        "weight frozen (requires_grad=False) the first decoder layer's self-attention depends on nothing "
                        f"that does (its queries are fixed embeddings), and {request.method!r} needs its gradient. Leave "
                        "the weights' requires_grad on (the explainer never changes them), or use 'rollout'"
                    )
                chosen = self.choose(outputs, wanted, request.min_score)
                count = max((len(c) for c in chosen), default=0)
                explained = [[c[r] if r < len(c) else None for c in chosen] for r in range(count)]
                if not gradients:
                    cams = [attention_cam(a, request.head_fusion) for a in maps]
                    product = relevance_of(cams)
                for rank, found in enumerate(explained):
                    picked = [f or (c[0] if c else None) for f, c in zip(found, chosen)]  # fillers: the image's first
                    index = torch.tensor([p.index if p else 0 for p in picked], device=outputs.logits.device)
                    if gradients:
                        label = torch.tensor([p.label if p else 0 for p in picked], device=outputs.logits.device)
                        scores = outputs.logits[rows.to(index.device), index, label]
                        check_finite(scores, "explained scores", positions)
                        grads = torch.autograd.grad(scores.sum(), maps, retain_graph=rank < count - 1)
                        cams = [gradient_cam(a.detach(), g) for a, g in zip(maps, grads)]
                        product = relevance_of(cams)
                    relevance.append(product[rows.to(product.device), index.to(product.device)])
            finally:
                maps.clear()
        stacked = torch.stack(relevance, 1).detach().float().cpu() if relevance else torch.zeros(len(batch), 0, tokens)
        check_finite(stacked, "relevance maps", positions)
        per_rank = list(zip(*explained)) if explained else [()] * len(batch)
        return [ImagePass(stacked[i], list(per_rank[i]), None) for i in range(len(batch))]

    def results(self, explainer, prepared, passed, request, index):
        """The detections' :class:`~hf_vit_rollout.Explanation`\\ s (as for YOLOS), recording the discard
        ratio the rules used (none) rather than rollout's default for ViTs."""
        if request.discard_ratio is None:
            request = replace(request, discard_ratio=0.0)
        return super().results(explainer, prepared, passed, request, index)

    @staticmethod
    def image_box(box: tuple, placement, input_size: tuple[int, int]) -> tuple[float, float, float, float]:
        """``(cx, cy, w, h)`` relative to the image before padding → ``(x0, y0, x1, y1)`` on the original image."""
        cx, cy, w, h = box
        width, height = placement.image_size
        xs = [(cx + s * w / 2) * width for s in (-1, 1)]
        ys = [(cy + s * h / 2) * height for s in (-1, 1)]
        return (float(np.clip(xs[0], 0, width)), float(np.clip(ys[0], 0, height)),
                float(np.clip(xs[1], 0, width)), float(np.clip(ys[1], 0, height)))


FAMILIES = (DetrFamily(),)

