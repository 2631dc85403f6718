"""The three stages every front door runs, as in ``transformers`` pipelines.

``preprocess`` (one image: load, orient, process, remember where its pixels went) →
``forward`` (a batch: one forward pass under capture, the backward passes the method needs, the
method's layer maps folded into token relevance) → ``postprocess`` (one image: relevance → mask →
heat-map at a bounded size). :class:`~hf_vit_rollout.RolloutExplainer`, the ``vit-explanation``
pipeline, the CLI and the app all call these, with one :class:`~hf_vit_rollout.request.ExplainRequest`.
"""

from __future__ import annotations

import logging
import math
import warnings
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from .capture import AttentionCapture, CaptureError, refuse_inside_target, running_target
from .errors import ExplanationWarning, NonFiniteError, TargetError
from .explanation import Explanation
from .images import load_image
from .lrp import RULE_SETS, RelevanceContext
from .methods import (
    check_layer,
    check_start_layer,
    flow_from_layers,
    head_maps,
    raw_attention_layer,
    shift_to_patch_minimum,
)
from .methods.chain import ChainFold
from .placement import Placement, shrink_for_processor
from .readout import LayerReadout, readout_layers
from .request import ExplainRequest

logger = logging.getLogger(__name__)


@dataclass
class PreparedImage:
    """One image after ``preprocess``.

    Attributes:
        image: the RGB original as displayed (EXIF orientation applied).
        pixel_values: ``(C, H, W)`` model input.
        placement: where the model's patches lie on ``image``.
        target: this image's target as given (index, label name or ``None``), resolved in ``forward``.
        inputs: model inputs besides ``pixel_values``, unbatched (SigLIP 2's mask and spatial
            shape), or ``None``.
    """

    image: Image.Image
    pixel_values: torch.Tensor
    placement: Placement
    target: int | str | None = None
    inputs: dict | None = None


def batch_inputs(batch: list[PreparedImage]) -> dict | None:
    """The images' extra model inputs stacked into a batch (``None`` when they have none)."""
    if not batch or batch[0].inputs is None:
        return None
    return {name: torch.stack([p.inputs[name] for p in batch]) for name in batch[0].inputs}


def _one(inputs: dict | None) -> dict | None:
    return None if inputs is None else {k: v[None] for k, v in inputs.items()}


@dataclass
class ImagePass:
    """One image after ``forward``: ``(k, N)`` token relevance for each of its ``k`` explained targets;
    ``heads``: ``(H, N)`` per-head relevance (method ``"attention"`` with ``head=None``), else ``None``."""

    relevance: torch.Tensor
    explained: list
    probabilities: np.ndarray | None
    heads: torch.Tensor | None = None


def preprocess(explainer, source, target=None, where: str = "image") -> PreparedImage:
    """Load and process one image (see :func:`~hf_vit_rollout.images.load_image` for inputs)."""
    family = getattr(explainer, "family", None)
    if hasattr(family, "prepare"):  # not one image, or not one (C, H, W) tensor (SigLIP 2, video)
        return family.prepare(explainer, source, target, where)
    image = load_image(source, where)
    processor = explainer.image_processor
    try:
        pixel_values = processor(images=shrink_for_processor(image, processor), return_tensors="pt")["pixel_values"][0]
    except Exception as exc:  # processors raise many types for odd images
        raise ValueError(f"the image processor could not prepare {where}: {exc}") from exc
    layout = explainer.layout(tuple(pixel_values.shape[-2:]))
    placement = Placement.of(processor, image.size, explainer.patch_size, layout.grid_size)
    return PreparedImage(image, pixel_values, placement, target)


# ------------------------------------------------------------------------------------------ forward
def _check_scores(scores, batch: int) -> torch.Tensor:
    """A callable target's output: a ``(B,)`` floating tensor on the autograd graph, all finite."""
    if not isinstance(scores, torch.Tensor) or scores.dim() != 1 or scores.shape[0] != batch:
        shape = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
        raise TargetError(f"a callable target must return a ({batch},) tensor of scores, one per image, got {shape}")
    if not scores.is_floating_point():
        raise TargetError(f"a callable target must return floating-point scores, got dtype {scores.dtype}")
    if not torch.isfinite(scores.detach()).all():  # the outputs it was given were finite (checked first)
        raise TargetError(
            "the callable target's scores are NaN or infinite, though the model outputs it was given are finite; "
            "there is no gradient to explain"
        )
    if not scores.requires_grad:
        raise TargetError(
            "the callable target's scores carry no gradient: compute them from the model outputs it is given, "
            "without .detach(), .item(), numpy or torch.no_grad()"
        )
    return scores


def _objectives(explainer, outputs, batch: list[PreparedImage], request: ExplainRequest, stacked: int = 1):
    """``[(scores (S·B,), explained targets)]``, one per rank (``top_k`` ranks, else one).

    ``stacked``: the outputs hold ``S`` read-out layers' rows, layer-major, the last ``B`` being the
    model's own (:class:`~hf_vit_rollout.readout.LayerReadout`); the classes are chosen from those,
    and each layer's score is that class's score in its own rows.
    """
    count = len(batch)
    if request.callable_target is not None:
        with running_target():
            scores = request.callable_target(outputs)
        return [(_check_scores(scores, stacked * count), [None] * count)]
    if request.text is not None:
        return [(outputs.logits_per_image[:, 0], [None] * count)]
    logits = explainer.logits_of(outputs)
    if request.spec.score == "probability" and getattr(explainer.model.config, "problem_type", None) != "multi_label_classification":
        logits = logits.softmax(-1)  # the class's probability (a multi-label model's sigmoid logit is kept)
    layers = logits.view(stacked, count, -1)
    final = layers[-1].detach()
    if request.top_k is not None:
        k = min(request.top_k, logits.shape[-1])
        ranked = final.topk(k, dim=-1).indices
        return [(layers.gather(2, ranked[None, :, r : r + 1].expand(stacked, -1, 1)).reshape(-1), ranked[:, r].tolist()) for r in range(k)]
    chosen = [int(final[i].argmax()) if p.target is None else explainer.resolve_target(p.target) for i, p in enumerate(batch)]
    index = torch.tensor(chosen, device=logits.device)
    return [(layers.gather(2, index[None, :, None].expand(stacked, -1, 1)).reshape(-1), chosen)]


def _detections(explainer, outputs, batch: list[PreparedImage], request: ExplainRequest, layout):
    """Detection models: ``[(scores (B,), explained, output rows (B, N))]``, one per rank.

    Rank ``r`` holds each image's ``r``-th chosen detection (:meth:`YolosFamily.choose`); an image
    with fewer detections repeats a filler (its first, or detection 0) whose ``explained`` entry is
    ``None``, dropped in ``postprocess``. Each rank's score is the logit of the detection's class.
    """
    per_image = isinstance(request.detection, tuple)  # one per image: it rides with its image as its target
    wanted = [p.target if per_image else request.detection for p in batch]
    chosen = explainer.family.choose(outputs, wanted, request.min_score)
    ranks = []
    rows = torch.arange(len(batch), device=outputs.logits.device)
    for rank in range(max((len(c) for c in chosen), default=0)):
        picked = [c[rank] if rank < len(c) else (c[0] if c else None) for c in chosen]
        index = torch.tensor([p.index if p else 0 for p in picked], device=rows.device)
        label = torch.tensor([p.label if p else 0 for p in picked], device=rows.device)
        explained = [c[rank] if rank < len(c) else None for c in chosen]
        ranks.append((outputs.logits[rows, index, label], explained, layout.detection_weights(index)))
    return ranks


def _ranked_rows(explainer, outputs, batch: list[PreparedImage], request: ExplainRequest, layout):
    """Objectives that come with their own output rows (detections, dense regions), else ``None``."""
    if explainer.is_detector:
        return _detections(explainer, outputs, batch, request, layout)
    family = getattr(explainer, "family", None)
    if not getattr(family, "has_regions", lambda model: False)(explainer.model):
        return None
    return family.objectives(explainer, outputs, batch, request, layout)


def _output_numbers(explainer, outputs) -> torch.Tensor | None:
    """The tensor of ``outputs`` whose rows are the images' results: the logits (``logits_per_image``
    for image-text models), else the pooled or last hidden state of a backbone."""
    for name in ("logits", "logits_per_image", "pooler_output", "last_hidden_state"):
        value = getattr(outputs, name, None)
        if isinstance(value, torch.Tensor):
            return value
    return None


def check_finite(values: torch.Tensor | None, what: str, positions: list[int], stacked: int = 1) -> None:
    """Refuse NaN or infinite numbers in a pass: the one check every stage's numbers go through.

    Args:
        values: ``(S·B, ...)`` rows per image (``S`` read-out layers stacked layer-major), or ``None``.
        what: what they are, for the message (``"model outputs"``, ``"explained scores"``, ``"relevance"``).
        positions: each of the ``B`` images' position in the call's input.

    Raises:
        NonFiniteError: naming the images whose rows hold NaN or infinity.
    """
    if values is None:
        return
    count = len(positions)
    rows = values.detach().reshape(stacked, count, -1)
    bad = (~torch.isfinite(rows)).any(-1).any(0).nonzero().flatten().tolist()
    if bad:
        shown = [positions[i] for i in bad]
        raise NonFiniteError(
            f"the {what} are NaN or infinite for image(s) {shown}, so there is no map to show. Check the model "
            "(its weights, dtype: float16 overflows easily) and the inputs for non-finite values",
            shown,
        )


class _Folds:
    """What the method needs from the pass, combined into token relevance, one fold per explained rank.

    Driven by the method's :class:`~hf_vit_rollout.methods.MethodSpec` only: ``needs`` says which
    backward passes run and what the attention hooks keep; ``combine`` how layers become relevance
    (``"product"``: a :class:`ChainFold`; ``"flow"``: the maps kept for the max-flow; ``"layer"``: one
    layer's map kept; ``"input"``: the LRP relevance at the first encoder layer's input; ``"sum"``:
    one ``(B, N)`` row per read-out layer, added up from ``start_layer``).

    The layout turns a layer's attention into its chain step(s): for a global-attention ViT one
    ``(B, N, N)`` map per layer; for a windowed model (Swin) each block's folded window attention,
    plus the patch mergings' maps, known before the pass (:mod:`hf_vit_rollout.window_layout`).
    """

    def __init__(self, layout, request: ExplainRequest, weights: torch.Tensor, buffer_mib: float, batch: int, num_layers: int):
        self.spec, self.request, self.weights, self.layout = request.spec, request, weights, layout
        if layout.hierarchical and self.spec.combine in ("flow", "layer"):
            raise ValueError(
                f"method {self.spec.name!r} combines layers by {self.spec.combine!r}, which needs one token set "
                "in every layer; this windowed model changes its tokens between stages, so use a method that "
                "multiplies per-layer maps, adds them up or reads the input relevance (rollout, grad_rollout, gae, "
                "transformer_attribution, attnlrp, cp_lrp, libragrad, legrad)"
            )
        refused = getattr(layout, "refused_combines", {}).get(self.spec.combine)
        if refused:
            raise ValueError(f"method {self.spec.name!r} is not available here: {refused}")
        if layout.hierarchical and request.start_layer:
            raise ValueError(
                "start_layer= is not supported for windowed models (Swin): their chain changes tokens between "
                "stages, so a chain started inside it has no token set to start from"
            )
        self.buffer_bytes = buffer_mib * 2**20
        self.batch = batch
        self.layer = check_layer(-1 if request.layer is None else request.layer, num_layers)
        self.start_layer = check_start_layer(request.start_layer or 0, num_layers)
        refusal = getattr(layout, "method_refusal", None)  # a layout that refuses by what a method needs
        refused = refusal(self.spec, self.layer) if refusal is not None else None
        if refused:
            raise ValueError(f"method {self.spec.name!r} is not available here: {refused}")
        self.relevance_context = None  # set in forward when the method needs LRP relevance
        self.readout: LayerReadout | None = None  # set in forward when the method reads every layer out
        self.folds: list = []
        self.grads: dict[int, torch.Tensor] = {}
        self.first_attention: list[torch.Tensor] = []
        self.readout_maps: list[torch.Tensor] = []  # "sum" methods: the read-out layers' maps
        self.new_fold()

    def new_fold(self) -> None:
        if self.spec.combine == "product":
            backward = bool(self.spec.needs & {"attention_gradient", "attention_relevance"})
            direction = "backward" if backward else "forward"
            fold = ChainFold(self.weights, direction, buffer_bytes=self.buffer_bytes, start_layer=self.start_layer)
            for step, fixed in self.layout.fixed_maps(self.batch, device=self.weights.device).items():
                fold.add(step, fixed)
            self.folds.append(fold)
        else:
            self.folds.append({})

    def store(self, layer: int, attention: torch.Tensor, grad: torch.Tensor | None) -> None:
        request = self.request
        ratio = getattr(self.layout, "ratio_for", lambda request: request.ratio)(request)  # a family's own default
        layer_map = self.layout.layer_map(self.spec.layer_map, layer, attention, grad, (request.head_fusion, ratio))
        fold = self.folds[-1]
        if isinstance(fold, dict):
            fold[layer] = layer_map
        else:
            fold.add(self.layout.step(layer), layer_map)

    def on_attention(self, layer: int, attention: torch.Tensor) -> None:
        problem = self.layout.attention_mismatch(layer, attention)
        if problem is not None:
            raise CaptureError(problem)
        combine, needs = self.spec.combine, self.spec.needs
        if combine == "input":
            return
        frozen = attention.detach()
        if combine == "layer":
            if layer == self.layer:  # a layout with windows gives the layer's (B, H, N, N) map
                self.folds[-1]["layer"] = getattr(self.layout, "full_attention", lambda _, a: a)(layer, frozen)
            return
        if not needs & {"attention_gradient", "attention_relevance"}:
            self.store(layer, frozen, None)
            return
        if not attention.requires_grad:
            raise RuntimeError("attention maps carry no gradient; do not call the explainer under torch.inference_mode()")
        attention.register_hook(lambda grad: self.on_backward(layer, frozen, grad))
        if layer == 0:
            self.first_attention.append(attention)
        if self.readout is not None and layer in self.readout.indices:
            self.readout_maps.append(attention)

    def on_backward(self, layer: int, frozen: torch.Tensor, grad: torch.Tensor) -> None:
        """A layer's gradient (ordinary pass) or relevance density (relevance pass) arrived."""
        if "attention_relevance" not in self.spec.needs:
            self.store(layer, frozen, grad)
        elif self.relevance_context.switch.relevance:
            self.store(layer, frozen * grad, self.grads.pop(layer))  # the map's LRP relevance, its gradient
        else:
            self.grads[layer] = grad

    def backward(self, scores: torch.Tensor, num_layers: int, retain_graph: bool) -> None:
        """The backward passes the method needs, for one rank of explained ``scores``."""
        needs, fold, context = self.spec.needs, self.folds[-1], self.relevance_context
        steps = self.layout.num_steps(num_layers)
        if "layer_readout" in needs:  # each map's gradient comes from its own layer's readout only
            torch.autograd.grad(scores.sum(), self.readout_maps, retain_graph=retain_graph, allow_unused=True)
            return
        if "attention_gradient" in needs:
            if "attention_relevance" not in needs:
                fold.start_backward(steps)
            torch.autograd.grad(scores.sum(), self.first_attention, retain_graph=retain_graph or context is not None)
        if "attention_relevance" in needs:
            fold.start_backward(steps)
            context.relevance_grad(scores, self.first_attention, retain_graph=retain_graph)
        if "input_relevance" in needs:
            (density,) = context.relevance_grad(scores, [context.inputs], retain_graph=retain_graph)
            fold["input"] = (context.inputs * density).sum(dim=-1).detach()

    def relevance(self, fold, num_layers: int, progress: bool) -> torch.Tensor:
        combine = self.spec.combine
        if combine == "product":
            return fold.relevance(self.layout.num_steps(num_layers))
        if combine == "flow":
            return flow_from_layers([fold[i] for i in range(num_layers)], self.weights, progress=progress)
        if combine == "input":
            return fold["input"]
        if combine == "sum":
            return self.summed(fold, num_layers)
        layer_map = raw_attention_layer(fold["layer"], self.request.head, self.request.head_fusion)
        return torch.einsum("i,bij->bj", self.weights.to(layer_map.dtype), layer_map)

    def summed(self, fold: dict, num_layers: int) -> torch.Tensor:
        """``(B, N)``: the read-out layers' rows from ``start_layer`` on, added up, minus their minimum
        over the patch tokens (LeGrad's min-max normalisation, completed by the max-scaled mask)."""
        rows = [self.on_first_stage(fold[layer], layer) for layer in sorted(fold) if layer >= self.start_layer]
        if not rows:
            raise CaptureError(f"no read-out layer's attention received a gradient (layers {sorted(fold)})")
        return shift_to_patch_minimum(torch.stack(rows).sum(0), self.layout.num_prefix_tokens)

    def on_first_stage(self, row: torch.Tensor, layer: int) -> torch.Tensor:
        """A block's ``(B, N_s)`` row carried down to the first stage's tokens through the patch
        mergings, each token's value split equally among its children (identity for a ViT)."""
        if not self.layout.hierarchical:
            return row
        for stage in reversed(range(self.layout.blocks[layer].stage)):
            merge = self.layout.merge_map(stage, row.shape[0], dtype=row.dtype, device=row.device)
            row = torch.bmm(row.unsqueeze(1), merge).squeeze(1)
        return row

    def heads(self) -> torch.Tensor | None:
        """``(B, H, N)``: every head's row of the chosen layer (``"layer"`` methods with ``head=None``)."""
        if self.spec.combine != "layer" or self.request.head is not None:
            return None
        return head_maps(self.folds[0]["layer"].float(), self.weights)


def _pass_context(explainer, spec, layout):
    """What the pass needs attached to the model besides the capture: the LRP rules of a relevance
    method, the layer readout of LeGrad, or nothing (a no-op context)."""
    if spec.rules is not None:
        return RelevanceContext(explainer.model, RULE_SETS[spec.rules], explainer.vision_root, explainer.attention_modules)
    if "layer_readout" in spec.needs:
        return LayerReadout(*readout_layers(explainer.vision_root, explainer.attention_modules, explainer.window_blocks, layout))
    return nullcontext()


def forward(
    explainer, batch: list[PreparedImage], request: ExplainRequest, text_inputs: dict | None = None, positions: list[int] | None = None
) -> list[ImagePass]:
    """Forward passes for ``batch`` under capture, plus the backward passes the method needs per rank:
    one pass per input size (a processor that does not resize gives several), results in batch order.

    ``positions``: each image's position in the caller's input, for error messages (default ``0..B-1``).

    Raises:
        NonFiniteError: the model's outputs, the explained scores or the relevance hold NaN or infinity.
        RuntimeError: a method that needs gradients under ``torch.inference_mode()``.
    """
    positions = list(range(len(batch))) if positions is None else positions
    refuse_inside_target("another explanation")
    if request.spec.needs_gradient and torch.is_inference_mode_enabled():
        raise RuntimeError(
            f"method {request.method!r} takes gradients, which torch.inference_mode() forbids; call the explainer "
            "outside inference_mode (it needs no torch.no_grad() either: it never changes the model's weights), "
            "or use a method without gradients (rollout, attention, flow)"
        )
    sizes: dict[tuple, list[int]] = {}
    for i, prepared in enumerate(batch):
        sizes.setdefault(tuple(prepared.pixel_values.shape), []).append(i)
    if len(sizes) == 1:
        return _forward_one_size(explainer, batch, request, text_inputs, positions)
    passes: list = [None] * len(batch)
    for members in sizes.values():
        group = _forward_one_size(explainer, [batch[i] for i in members], request, text_inputs, [positions[i] for i in members])
        for i, passed in zip(members, group):
            passes[i] = passed
    return passes


def _forward_one_size(explainer, batch: list[PreparedImage], request: ExplainRequest, text_inputs, positions: list[int]) -> list[ImagePass]:
    """:func:`forward` for images of one input size: one forward pass."""
    family_forward = getattr(getattr(explainer, "family", None), "forward", None)
    if family_forward is not None:  # a pass with its own relevance rules (DETR's encoder and decoder)
        return family_forward(explainer, batch, request, positions)
    pixel_values = explainer.on_model(torch.stack([p.pixel_values for p in batch]))
    inputs = batch_inputs(batch)
    layout = explainer.layout(tuple(pixel_values.shape[-2:]), inputs)
    weights = layout.output_weights(device=pixel_values.device)
    folds = _Folds(layout, request, weights, explainer.rollout_buffer_mib, len(batch), explainer.num_layers)
    needs_gradient = request.spec.needs_gradient
    capture = AttentionCapture(explainer.model, folds.on_attention, explainer.vision_root, explainer.attention_modules)
    with explainer.windows_for(tuple(pixel_values.shape[-2:])), capture, _pass_context(explainer, request.spec, layout) as added:
        folds.relevance_context = added if isinstance(added, RelevanceContext) else None
        folds.readout = added if isinstance(added, LayerReadout) else None
        stacked = 1 if folds.readout is None else folds.readout.count
        with torch.enable_grad() if needs_gradient else torch.no_grad():
            if needs_gradient:
                pixel_values = pixel_values.detach().requires_grad_(True)
            try:
                outputs = explainer.run_model(pixel_values, text_inputs, inputs)
                check_finite(_output_numbers(explainer, outputs), "model outputs", positions, stacked)
                detections = _ranked_rows(explainer, outputs, batch, request, layout)
                if needs_gradient:
                    if detections is not None:
                        objectives = detections
                    else:
                        objectives = [(s, e, None) for s, e in _objectives(explainer, outputs, batch, request, stacked)]
                    for rank, (scores, _, rows) in enumerate(objectives):
                        check_finite(scores, "explained scores", positions, stacked)
                        if rank:
                            folds.new_fold()
                        if rows is not None and isinstance(folds.folds[-1], ChainFold):
                            folds.folds[-1].output_weights = rows  # this rank's detection tokens
                        folds.backward(scores, capture.num_layers, retain_graph=rank < len(objectives) - 1)
                    objectives = [(None, explained) for _, explained, _ in objectives]
            finally:  # the graph's hooks refer to the folds: break the cycle through the C++ graph
                folds.first_attention.clear()
                folds.readout_maps.clear()
                folds.relevance_context = folds.readout = None
            num_layers = capture.num_layers
    if num_layers == 0:
        raise CaptureError(f"no attention layer ran in {type(explainer.model).__name__}'s forward pass")
    if detections is not None and not needs_gradient:  # rollout: each detection's row of one product
        rows = []
        for _, _, weights in detections:
            folds.folds[0].output_weights = weights
            rows.append(folds.relevance(folds.folds[0], num_layers, request.progress))
        objectives = [(None, explained) for _, explained, _ in detections]
        relevance = torch.stack(rows, 1) if rows else torch.zeros(len(batch), 0, layout.num_tokens)
    elif detections == []:  # no image has a detection above min_score
        relevance = torch.zeros(len(batch), 0, layout.num_tokens)
    else:
        relevance = torch.stack([folds.relevance(f, num_layers, request.progress) for f in folds.folds], 1)
    relevance = relevance.detach().float().cpu()
    check_finite(relevance, "relevance maps", positions)
    heads = folds.heads()
    heads = None if heads is None else heads.detach().float().cpu()
    check_finite(heads, "per-head maps", positions)
    if detections is not None:
        explained = list(zip(*[e for _, e in objectives])) if detections else [()] * len(batch)
    else:
        explained = list(zip(*[e for _, e in objectives])) if needs_gradient else [(None,)] * len(batch)
    logits = explainer.logits_of(outputs, required=False)
    logits = None if logits is None else logits[-len(batch) :]  # a layer readout stacks every layer's rows first
    probabilities = None if logits is None else explainer.probabilities(logits.detach().float()).cpu().numpy()
    return [
        ImagePass(
            relevance[i],
            list(explained[i]),
            None if probabilities is None else probabilities[i],
            None if heads is None else heads[i],
        )
        for i in range(len(batch))
    ]


# ------------------------------------------------------------------------------------------ postprocess
def _mask(patch: np.ndarray, index: int) -> np.ndarray:
    peak = float(patch.max())
    if peak > 0 and math.isfinite(peak):
        return (patch / peak).astype(np.float32)
    warnings.warn(
        f"image {index}: no patch received any relevance, so its mask is all zeros (the explained score does not "
        "depend on the patches, or the method's settings discard every contribution)",
        ExplanationWarning,
        stacklevel=2,
    )
    return np.zeros_like(patch, dtype=np.float32)


def postprocess(explainer, prepared: PreparedImage, passed: ImagePass, request: ExplainRequest, index: int = 0):
    """One :class:`Explanation` per explained target of one image (a list when ``top_k`` is set)."""
    family = getattr(explainer, "family", None)
    if hasattr(family, "results"):  # results of another kind (video, dense regions)
        return family.results(explainer, prepared, passed, request, index)
    return standard_results(explainer, prepared, passed, request, index)


def standard_results(explainer, prepared: PreparedImage, passed: ImagePass, request: ExplainRequest, index: int = 0):
    """:func:`postprocess` for images: one :class:`Explanation` per explained target."""
    layout = explainer.layout(tuple(prepared.pixel_values.shape[-2:]), _one(prepared.inputs))
    patches = layout.patch_relevance(passed.relevance).clamp(min=0).numpy()
    size = prepared.placement.output_size(request.full_resolution)
    probabilities = passed.probabilities
    predicted = None if probabilities is None else int(probabilities.argmax())
    head_heatmaps = None
    if passed.heads is not None:
        head_patches = layout.patch_relevance(passed.heads).clamp(min=0).numpy()
        head_heatmaps = np.stack([prepared.placement.heatmap(_mask(p, index), size) for p in head_patches])
    if getattr(explainer, "is_detector", False):
        return _detection_results(explainer, prepared, passed, request, patches, size, index)
    results = []
    for rank, target in enumerate(passed.explained):
        mask = _mask(patches[rank], index)
        shown = target if target is not None else predicted
        results.append(
            Explanation(
                image=prepared.image,
                mask=mask,
                heatmap=prepared.placement.heatmap(mask, size),
                method=request.method,
                target=target,
                label=request.text if request.text is not None else explainer.id2label.get(shown) if shown is not None else None,
                score=None if probabilities is None or shown is None else float(probabilities[shown]),
                predicted=predicted,
                token_relevance=passed.relevance[rank].numpy(),
                params=request.params(),
                placement=prepared.placement,
                head_heatmaps=head_heatmaps,
            )
        )
    return results if request.top_k is not None else results[0]


def _detection_results(explainer, prepared, passed, request, patches, size, index):
    """One :class:`Explanation` per explained detection (a list with ``min_score``, else the one)."""
    results = []
    input_size = tuple(prepared.pixel_values.shape[-2:])
    for rank, found in enumerate(passed.explained):
        if found is None:  # a filler rank of a batch whose other images had more detections
            continue
        mask = _mask(patches[rank], index)
        results.append(
            Explanation(
                image=prepared.image,
                mask=mask,
                heatmap=prepared.placement.heatmap(mask, size),
                method=request.method,
                target=found.label,
                label=explainer.family.label_name(explainer, request, found.label),
                score=found.score,
                predicted=found.label,
                token_relevance=passed.relevance[rank].numpy(),
                params=request.params(),
                placement=prepared.placement,
                detection=found.index,
                box=explainer.family.image_box(found.box, prepared.placement, input_size),
            )
        )
    if request.min_score is not None:
        if not results:
            logger.info("image %d: no detection scores at least %s", index, request.min_score)
        return results
    return results[0]
