"""What every family answers, with the answers most families share.

:class:`Family` is the whole interface the explainer and the stages ask (see
:mod:`hf_vit_rollout.families`); a family overrides what its token layout, capture or outputs make
different. The defaults are those of an image classifier or backbone over one ``(C, H, W)`` image:
the model's own attention modules, no extra forward arguments, one
:class:`~hf_vit_rollout.Explanation` per explained class.
"""

from __future__ import annotations

import math
import warnings
from contextlib import nullcontext

import numpy as np
import torch

from ..errors import ExplanationWarning, InputError, TargetError, UnsupportedModelError
from ..explanation import Explanation
from ..images import PreparedImage, image_sources, load_image
from ..placement import Placement, shrink_for_processor
from .tokens import _pair


def relevance_mask(patch: np.ndarray, index: int) -> np.ndarray:
    """``patch`` relevance scaled to a maximum of 1; all zeros, with a warning naming image ``index``,
    when no patch has any."""
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


class Family:
    """One kind of checkpoint, for the ``model_type`` values in :attr:`model_types`.

    Attributes:
        model_types: the ``model_type`` values (of the vision config) this family answers for.
        refused: whether these checkpoints are refused (:meth:`check` raises, with the reason).
        needs_text: whether a detector's classes are named by text queries (OWL-ViT).
        one_box_per_patch: whether a detector has a box per patch token (OWL-ViT: too many to list).
        is_video: whether the model explains clips (``(B, T, C, H, W)`` inputs), not images.
        input_shape: the shape of a batch of model inputs, for messages.
    """

    model_types: tuple[str, ...] = ()
    refused = False
    needs_text = False
    one_box_per_patch = False
    is_video = False
    input_shape = "(B, C, H, W)"

    # ------------------------------------------------------------------ the config
    def check(self, config) -> None:
        """Raise :class:`~hf_vit_rollout.errors.UnsupportedModelError` for a variant that cannot be
        explained; every variant is explained by default."""

    def _probe_layout(self, config) -> None:
        """:meth:`check` by the layout: a config whose layout cannot be read is refused with the
        reason (an input-size refusal of the 1-pixel probe is not the config's fault)."""
        try:
            self.layout(config, (1, 1))
        except InputError:
            return
        except ValueError as exc:
            raise UnsupportedModelError(str(exc)) from None

    def layout(self, config, image_size, held=None, inputs=None):
        """The token layout of an ``image_size = (height, width)`` input (an object answering what
        :class:`~hf_vit_rollout.TokenLayout` answers). ``held``: the window geometry the model's blocks
        hold (:meth:`held`); ``inputs``: batched model inputs besides ``pixel_values``."""
        raise NotImplementedError(f"{type(self).__name__} does not say its token layout")

    def patch_size(self, config) -> tuple[int, int]:
        """``(patch_h, patch_w)`` pixels per patch."""
        return _pair(config.patch_size)

    # ------------------------------------------------------------------ the capture
    def attention_setup(self, vision_root):
        """``(window blocks, forward kwargs, attention modules)`` for the capture: no blocks, no
        keyword arguments and the model's self-attention modules
        (:func:`~hf_vit_rollout.capture.find_attention_modules`).

        Raises:
            UnsupportedModelError: the model exposes no attention modules.
        """
        from ..capture import find_attention_modules

        modules = find_attention_modules(vision_root)
        if not modules:
            raise UnsupportedModelError(
                f"{type(vision_root).__name__} has no global self-attention modules exposing attention maps, so "
                "attention rollout cannot explain it"
            )
        return [], {}, modules

    def held(self, blocks) -> list[tuple[int, int]] | None:
        """The ``(window, shift)`` the model's window ``blocks`` hold between calls; ``None`` without blocks."""
        return None

    def forward_context(self, explainer, input_size: tuple[int, int]):
        """Context for forward passes of ``input_size`` inputs (windowed models: their window geometry)."""
        return nullcontext()

    def call_kwargs(self, vision_root, pixel_values: torch.Tensor) -> dict:
        """Keyword arguments a forward pass of ``pixel_values`` needs (ViT-MAE's fixed noise); none here."""
        return {}

    def tile_text(self, text_inputs: dict, batch: int) -> dict:
        """Tokenised text for a batch of ``batch`` images (OWL-ViT repeats its queries); as given here."""
        return text_inputs

    # ------------------------------------------------------------------ inputs and targets
    def sources(self, images) -> tuple[list, bool]:
        """A call's inputs → ``(list of sources, single)`` (:func:`~hf_vit_rollout.images.image_sources`)."""
        return image_sources(images)

    def has_classifier(self, model) -> bool:
        """Whether ``model``'s outputs score classes (a classification head; ``id2label`` names them)."""
        return any(hasattr(model, name) for name in ("classifier", "cls_classifier", "class_labels_classifier"))

    def is_detector_model(self, model) -> bool:
        """Whether ``model`` predicts boxes (``detection=`` and ``min_score=`` name what to explain)."""
        return False

    def has_regions(self, model) -> bool:
        """Whether ``model`` predicts a dense map whose regions are explained (``region=``)."""
        return False

    @staticmethod
    def _refuse_region(explainer, request) -> None:
        """Refuse ``region=`` / ``region_reduce=`` for a model that predicts no dense map."""
        if request.region is not None or request.region_reduce is not None:
            given = "region=" if request.region is not None else "region_reduce="
            raise TargetError(
                f"{given} names a region of a dense prediction (DPT depth); {type(explainer.model).__name__} predicts none"
            )

    def check_request(self, explainer, request, queries_later: bool = False) -> None:
        """Refuse settings this model cannot explain (an image classifier, backbone or image-text model
        here), then the layer, head and class settings. ``queries_later``: an open-vocabulary
        detector's ``text=`` queries may be missing (the pipeline's defaults; each call gives its own).

        Raises:
            TargetError: a setting for another kind of model, or a target the model does not have.
        """
        name = type(explainer.model).__name__
        self._refuse_region(explainer, request)
        if isinstance(request.text, tuple):
            raise TargetError(f"text= takes one description for {name}; a list of queries is for open-vocabulary detectors (OWL-ViT)")
        if request.detection is not None or request.min_score is not None:
            raise TargetError(
                f"detection= and min_score= name detections of a detection model (YOLOS); {name} predicts no boxes"
            )
        if request.text is not None and (not explainer.is_image_text_model or explainer.tokenizer is None):
            raise TargetError(
                f"text= needs an image-text model such as CLIP loaded with its tokenizer; {name} "
                "has no text tower (use target= with a class instead)"
            )
        if request.top_k is not None and explainer.num_labels == 0:
            raise TargetError(f"top_k needs a classifier; {name} has none")
        request.check_model(explainer.num_layers, explainer.num_heads)
        targets = request.target if request.targets_per_image else (request.target,)
        for target in targets:
            if target is not None and not callable(target):
                explainer.resolve_target(target)

    # ------------------------------------------------------------------ the three stages
    def prepare(self, explainer, source, target, where: str) -> PreparedImage:
        """One image → its ``(C, H, W)`` model input and where its patches lie on it."""
        image = load_image(source, where)
        processor = explainer.image_processor
        try:
            out = processor(images=shrink_for_processor(image, processor), return_tensors="pt")
        except Exception as exc:  # processors raise many types for odd images
            raise ValueError(f"the image processor could not prepare {where}: {exc}") from exc
        pixel_values = out["pixel_values"][0]
        layout = explainer.layout(tuple(pixel_values.shape[-2:]))
        placement = Placement.of(processor, image.size, explainer.patch_size, layout.grid_size)
        return PreparedImage(image, pixel_values, placement, target, self.extra_inputs(out, pixel_values))

    def extra_inputs(self, processed, pixel_values) -> dict | None:
        """Model inputs of one image besides ``pixel_values``, from the processor's output
        ``processed`` (batch of one), unbatched; ``None`` for most families (DETR: its ``pixel_mask``)."""
        return None

    def forward(self, explainer, batch, request, positions):
        """The forward pass of ``batch`` (images of one input size) when this family's relevance does not
        fold one token set layer by layer (DETR): one :class:`~hf_vit_rollout.passes.ImagePass` per
        image; ``None``: the stages' own pass."""
        return None

    def objectives(self, explainer, outputs, batch, request, layout):
        """Objectives that come with their own output rows, ``[(scores (B,), explained, rows (B, N))]``
        per rank (detections, dense regions); ``None``: the explained classes' scores."""
        return None

    def results(self, explainer, prepared, passed, request, index: int):
        """One :class:`~hf_vit_rollout.Explanation` per explained target of one image (a list when
        ``top_k`` is set)."""
        layout = explainer.layout(tuple(prepared.pixel_values.shape[-2:]), prepared.batched_inputs())
        patches = layout.patch_relevance(passed.relevance).clamp(min=0).numpy()
        size = prepared.placement.output_size(request.full_resolution)
        probabilities = passed.probabilities
        predicted = None if probabilities is None else int(probabilities.argmax())
        head_heatmaps = None
        if passed.heads is not None:
            head_patches = layout.patch_relevance(passed.heads).clamp(min=0).numpy()
            head_heatmaps = np.stack([prepared.placement.heatmap(relevance_mask(p, index), size) for p in head_patches])
        results = []
        for rank, target in enumerate(passed.explained):
            mask = relevance_mask(patches[rank], index)
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
