"""Dense heads: DPT and Depth Anything depth estimation, and DPT semantic segmentation, explained
for a region of their output.

``DPTForSemanticSegmentation`` has the same backbone and neck with a head that predicts class
logits per pixel ``(B, C, H_o, W_o)``; there a region target explains the region's logits of one
class (``target=``, default the class predicted for most of the region's pixels), reduced the same
way, and the explanation's ``label`` names the class.

``DepthAnythingForDepthEstimation`` has the same shape of neck and head over a DINOv2 backbone
(``[CLS, registers, patches]``); it predicts relative inverse depth (larger is nearer), so there the
explained score is the mean of that.

``DPTForDepthEstimation`` (ViT backbone, ``is_hybrid=False``) runs a ViT over ``[CLS, patches]``;
its neck reassembles the token states of several layers into feature maps at their patches'
places, and the head upsamples them to a depth map ``predicted_depth (B, H_d, W_d)`` covering the
model input. A *region target* asks "why is this region predicted at this depth?":

* **Region**: ``region=(x0, y0, x1, y1)`` in the original image's pixels (default: the whole
  image), or a mask ``(H, W)`` of the image's size (:class:`~hf_vit_rollout.request.RegionMask`).
  Depth pixels whose centres fall inside it, mapped through the same
  :class:`~hf_vit_rollout.placement.Placement` as the heat-maps, form the region (for a mask: the
  image pixel under the centre is inside); a region outside the image, or where the processor's
  crop left no pixel the model saw, is an error naming the valid range.
* **Explained score**: ``region_reduce`` (``"mean"`` by default, ``"sum"``, ``"max"``, ``"min"``)
  of the predicted depth over the region (DPT predicts depth; a larger value is farther).
  Gradient methods back-propagate it.
* **Output row**: the neck puts every token back at its patch's place, so the chain's output row
  is uniform over the patch tokens whose centres lie in the region (the patch under the region's
  centre, or a mask's centroid, if the region covers no patch centre). Rollout reads that row of
  its product.
* Methods: the product ones and the input-relevance ones; ``flow``, ``attention`` and ``legrad``
  take one output row for the whole batch and are refused. Hybrid DPT (a BiT convolutional
  backbone) is refused: its tokens are not patches of the image.
* ``DPTForDepthEstimation`` takes square inputs only (its reassembly assumes a square grid).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from ..errors import InputError, TargetError, UnsupportedModelError
from ..request import RegionMask
from .base import Family, relevance_mask
from .tokens import TokenLayout, _pair

_ONE_ROW = (
    "a region target explains its own output row per image, and {what} takes one output row for the whole "
    "batch; use rollout, grad_rollout, gae, transformer_attribution, attnlrp or cp_lrp"
)


@dataclass(frozen=True)
class DenseLayout(TokenLayout):
    """``[CLS, patches]`` with per-image region rows (see the module docstring)."""

    refused_combines: ClassVar[dict] = {
        "flow": _ONE_ROW.format(what="attention flow"),
        "layer": _ONE_ROW.format(what="the raw-attention method"),
        "sum": _ONE_ROW.format(what="LeGrad"),
    }


#: model types whose ``*ForSemanticSegmentation`` checkpoints load with their head and are explained.
SEGMENTER_TYPES = ("dpt",)


@dataclass(frozen=True)
class RegionTarget:
    """One explained region: its box in image pixels (a mask's bounding box) and its score; for a
    segmenter also the explained class ``target`` and the region's majority class ``predicted``."""

    box: tuple[float, float, float, float]
    value: float
    target: int | None = None
    predicted: int | None = None


def _image_to_input(placement, x, y):
    """Original-image pixel coordinates → model-input coordinates."""
    width, height = placement.image_size
    res_h, res_w = placement.resized
    top, left = placement.offset
    return x * res_w / width - left, y * res_h / height - top


def reduce_region(values: torch.Tensor, inside: torch.Tensor, how: str) -> torch.Tensor:
    """``values`` ``(B, H, W)`` reduced over ``inside`` ``(B, H, W)`` bool → ``(B,)``: ``"mean"``,
    ``"sum"``, ``"max"`` or ``"min"`` of each image's region."""
    if how in ("mean", "sum"):
        total = (values * inside).sum((1, 2))
        return total / inside.sum((1, 2)) if how == "mean" else total
    fill = float("-inf") if how == "max" else float("inf")
    masked = values.masked_fill(~inside, fill).flatten(1)
    return masked.amax(1) if how == "max" else masked.amin(1)


class DenseFamily(Family):
    model_types = ("dpt", "depth_anything")

    @staticmethod
    def _encoder(config):
        """The config of the ViT that makes the tokens (Depth Anything: its DINOv2 backbone)."""
        return getattr(config, "backbone_config", None) if config.model_type == "depth_anything" else config

    def patch_size(self, config) -> tuple[int, int]:
        return _pair(self._encoder(config).patch_size)

    def check(self, config) -> None:
        if config.model_type == "depth_anything":
            backbone = getattr(config, "backbone_config", None)
            kind = getattr(backbone, "model_type", None)
            if getattr(config, "use_timm_backbone", False) or kind not in ("dinov2", "dinov2_with_registers"):
                raise UnsupportedModelError(
                    f"this Depth Anything checkpoint's backbone is {kind or 'a timm model'!r}; only DINOv2 backbones "
                    "(dinov2, dinov2_with_registers) are explained"
                )
            return
        if getattr(config, "is_hybrid", False):
            raise UnsupportedModelError(
                "this DPT checkpoint is hybrid (is_hybrid=True): a BiT convolutional backbone makes its tokens, so "
                "they are not patches of the image and attention maps over them do not place on it"
            )

    def layout(self, config, image_size, held=None, inputs=None) -> DenseLayout:
        encoder = self._encoder(config)
        patch_h, patch_w = _pair(encoder.patch_size)
        grid = (int(image_size[0]) // patch_h, int(image_size[1]) // patch_w)
        if getattr(config, "model_type", None) == "dpt" and grid[0] != grid[1]:
            raise InputError(
                f"DPTForDepthEstimation takes square inputs only, but the image processor made a "
                f"{int(image_size[0])}×{int(image_size[1])} input; use a processor that resizes to a square size "
                "(size={'height': S, 'width': S})"
            )
        prefix = 1 + int(getattr(encoder, "num_register_tokens", 0) or 0)
        return DenseLayout(num_prefix_tokens=prefix, grid_size=grid, cls_index=0, pooling="region")

    @staticmethod
    def has_regions(model) -> bool:
        """Whether ``model`` has a dense head (``DPTForDepthEstimation``, ``DPTForSemanticSegmentation``;
        ``DPTModel`` is a backbone)."""
        return hasattr(model, "head") and hasattr(model, "neck")

    @staticmethod
    def is_segmenter(model) -> bool:
        """Whether ``model`` predicts a class per pixel (``DPTForSemanticSegmentation``) rather than depth."""
        return type(model).__name__.endswith("ForSemanticSegmentation")

    # ----------------------------------------------------------------- region targets
    @staticmethod
    def _inside(region, placement, input_size, where):
        """``inside(ys, xs) -> (len(ys), len(xs))`` bool: which model-input points (pixel centres) lie in
        ``region``, and the region's centre in model-input pixels (for a region smaller than a patch)."""
        in_h, in_w = input_size
        if placement is None:  # relevance_maps: the region is in model-input pixels
            width, height = in_w, in_h
            to_input = lambda x, y: (x, y)  # noqa: E731
        else:
            width, height = placement.image_size
            to_input = lambda x, y: _image_to_input(placement, x, y)  # noqa: E731
        if isinstance(region, RegionMask):
            mask = region.pixels
            if mask.shape != (height, width):
                raise TargetError(
                    f"the region mask is {mask.shape[0]}×{mask.shape[1]} but {where} is {height}×{width} (H×W): "
                    "give a mask of the image's size"
                )
            if placement is None:
                to_image = lambda ys, xs: (ys, xs)  # noqa: E731
            else:
                res_h, res_w = placement.resized
                top, left = placement.offset
                to_image = lambda ys, xs: ((ys + top) * height / res_h, (xs + left) * width / res_w)  # noqa: E731

            def inside(ys, xs):
                ys, xs = to_image(np.asarray(ys, dtype=float), np.asarray(xs, dtype=float))
                rows, cols = np.floor(ys).astype(int), np.floor(xs).astype(int)
                row_ok, col_ok = (rows >= 0) & (rows < height), (cols >= 0) & (cols < width)
                picked = mask[np.clip(rows, 0, height - 1)][:, np.clip(cols, 0, width - 1)]
                return picked & row_ok[:, None] & col_ok[None, :]

            rows, cols = np.nonzero(mask)
            return inside, to_input(float(cols.mean()) + 0.5, float(rows.mean()) + 0.5)
        x0, y0, x1, y1 = (0.0, 0.0, float(width), float(height)) if region is None else region
        if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
            raise TargetError(
                f"region {(x0, y0, x1, y1)} lies outside {where}: x must overlap [0, {width}] and y [0, {height}] (image pixels)"
            )
        (ix0, iy0), (ix1, iy1) = to_input(x0, y0), to_input(x1, y1)

        def inside(ys, xs):
            ys, xs = np.asarray(ys), np.asarray(xs)
            return ((ys >= iy0) & (ys < iy1))[:, None] & ((xs >= ix0) & (xs < ix1))[None, :]

        return inside, ((ix0 + ix1) / 2, (iy0 + iy1) / 2)

    def has_classifier(self, model) -> bool:
        """A segmenter's outputs score a class per pixel; a depth model has none."""
        return self.is_segmenter(model) or super().has_classifier(model)

    def check_request(self, explainer, request, queries_later: bool = False) -> None:
        """A depth model takes ``region=`` only, a segmenter ``region=`` and a class ``target=`` (a
        backbone: what any image model takes)."""
        if not self.has_regions(explainer.model):
            return super().check_request(explainer, request, queries_later)
        name = type(explainer.model).__name__
        segmenter = self.is_segmenter(explainer.model)
        given = [k for k in ("target", "text", "top_k", "detection", "min_score") if getattr(request, k) is not None]
        if segmenter and given and given != ["target"]:
            raise TargetError(
                f"{name} predicts a class per pixel: explain a region of it with region=(x0, y0, x1, y1) or "
                f"region=mask and the class with target=, not {given[0]}="
            )
        if not segmenter and given and not (given == ["target"] and request._only_predicted()):
            raise TargetError(
                f"{name} predicts a dense map (depth), not classes: explain a region of it with "
                f"region=(x0, y0, x1, y1) in image pixels or region=mask (default: the whole image), not {given[0]}="
            )
        request.check_model(explainer.num_layers, explainer.num_heads)
        if segmenter:
            if request.callable_target is not None:
                raise TargetError(
                    f"{name} explains a class over a region: give target= a class index or label name, not a callable"
                )
            for target in request.target if request.targets_per_image else (request.target,):
                if target is not None:
                    explainer.resolve_target(target)

    def objectives(self, explainer, outputs, batch, request, layout):
        """``[(scores (B,), explained, rows (B, N))]``: one rank, each image's region (``None`` for a backbone).

        A depth (or logit) pixel or a patch token is in the region when its centre is. The score is
        ``request.region_reduce`` (default the mean) of the region's predicted depths; for a segmenter,
        of the region's logits of the image's target class (default: the class predicted for most of
        the region's pixels).
        """
        if not self.has_regions(explainer.model):
            return None
        segmenter = self.is_segmenter(explainer.model)
        # (B, C, H_o, W_o) class logits, the class chosen per image below; else (B, H_o, W_o) depth
        dense = outputs.logits if segmenter else outputs.predicted_depth
        if not segmenter and dense.dim() == 4:
            dense = dense.squeeze(1)
        device = dense.device
        input_size = tuple(batch[0].pixel_values.shape[-2:])
        in_h, in_w = input_size
        dep_h, dep_w = dense.shape[-2:]
        patch_h, patch_w = explainer.patch_size
        gh, gw = layout.grid_size
        rows = torch.zeros(len(batch), layout.num_tokens, device=device)
        masks, explained, classes, majority = [], [], [], []
        for b, prepared in enumerate(batch):
            where = f"images[{b}]" if prepared.placement is not None else f"pixel_values[{b}]"
            inside, (cx, cy) = self._inside(request.region, prepared.placement, input_size, where)
            mask = inside((np.arange(dep_h) + 0.5) * in_h / dep_h, (np.arange(dep_w) + 0.5) * in_w / dep_w)
            if not mask.any():
                raise TargetError(
                    f"region {request.region!r} of {where} covers no pixel the model saw (the processor's crop left "
                    "none inside it, or it is thinner than one depth pixel); give a larger region, or one inside the crop"
                )
            if segmenter:
                votes = dense[b].detach().argmax(0)[torch.from_numpy(mask).to(device)]
                majority.append(int(torch.bincount(votes, minlength=dense.shape[1]).argmax()))
                target = prepared.target
                classes.append(majority[-1] if target is None else explainer.resolve_target(target))
            masks.append(torch.from_numpy(mask))
            cells = inside((np.arange(gh) + 0.5) * patch_h, (np.arange(gw) + 0.5) * patch_w)
            if not cells.any():  # smaller than a patch: the patch under its centre
                cells[int(np.clip(cy // patch_h, 0, gh - 1)), int(np.clip(cx // patch_w, 0, gw - 1))] = True
            flat = torch.from_numpy(cells.reshape(-1)).to(device)
            rows[b, layout.num_prefix_tokens :][flat] = 1.0 / int(flat.sum())
        masks = torch.stack(masks).to(device)
        if segmenter:  # each image's class: (B, H_o, W_o)
            dense = dense[torch.arange(len(batch), device=device), torch.tensor(classes, device=device)]
        scores = reduce_region(dense, masks, request.region_reduce or "mean")
        for b, prepared in enumerate(batch):
            region = request.region
            if isinstance(region, RegionMask):
                box = region.box
            elif region is None and prepared.placement is not None:
                box = (0.0, 0.0, *map(float, prepared.placement.image_size))
            else:
                box = region
            explained.append(RegionTarget(box, float(scores[b].detach()), *((classes[b], majority[b]) if segmenter else ())))
        return [(scores, explained, rows)]

    def results(self, explainer, prepared, passed, request, index):
        """One :class:`~hf_vit_rollout.Explanation` per image: ``score`` the region's mean depth,
        ``box`` the region (drawn by ``overlay``)."""
        from ..explanation import Explanation

        if not self.has_regions(explainer.model):
            return super().results(explainer, prepared, passed, request, index)

        layout = self.layout(explainer.model.config, tuple(prepared.pixel_values.shape[-2:]))
        region = passed.explained[0]
        mask = relevance_mask(layout.patch_relevance(passed.relevance).clamp(min=0).numpy()[0], index)
        size = prepared.placement.output_size(request.full_resolution)
        reduce = request.region_reduce or "mean"
        if region.target is not None:  # a segmenter: the class explained over the region
            label = explainer.id2label.get(region.target, str(region.target))
        else:
            label = f"{reduce} depth"
        return Explanation(
            image=prepared.image,
            mask=mask,
            heatmap=prepared.placement.heatmap(mask, size),
            method=request.method,
            target=region.target,
            predicted=region.predicted,
            label=label,
            score=region.value,
            token_relevance=passed.relevance[0].numpy(),
            params=request.params(),
            placement=prepared.placement,
            box=region.box,
        )


FAMILIES = (DenseFamily(),)
