"""What the package knows about each kind of checkpoint, one module per kind of token layout.

A *family* is a :class:`~hf_vit_rollout.families.base.Family`: for the ``model_type`` values it
registers it declares its layout, its capture setup, its outputs and its refusals. The explainer
and the stages ask the family of their model (:func:`family_for`) and never branch on which one it
is. What every family answers (the base class's defaults in brackets):

* the config: ``check(config)`` refuses a variant that cannot be explained, with the reason
  (:class:`~hf_vit_rollout.errors.UnsupportedModelError`) [every variant explained];
  ``layout(config, image_size, held, inputs)`` the token layout of one input (a
  :class:`~hf_vit_rollout.families.tokens.Layout` answering the questions
  :class:`~hf_vit_rollout.TokenLayout` answers; ``inputs``: the per-image model inputs besides
  ``pixel_values``, batched); ``patch_size(config)`` [the config's];
* the capture: ``attention_setup(vision_root) -> (window blocks, forward kwargs, attention modules)``
  [no blocks, no kwargs, the model's self-attention modules]; ``held(blocks)`` the window geometry
  the blocks hold and ``forward_context(explainer, input_size)`` the context forward passes run in
  [none]; ``call_kwargs(vision_root, pixel_values)`` what one forward pass needs (ViT-MAE's fixed
  noise) [``{}``]; ``tile_text(text_inputs, batch)`` [as given];
* inputs, targets and outputs: ``sources(images)`` [images]; ``has_classifier(model)`` [a
  classification head]; ``is_detector_model(model)``, ``has_regions(model)`` [``False``];
  ``check_request(explainer, request, queries_later)`` the settings this model takes [an image
  classifier's, backbone's or image-text model's]; ``prepare(explainer, source, target, where)``
  one input → :class:`~hf_vit_rollout.images.PreparedImage` [one image]; ``forward(explainer,
  batch, request, positions) -> [ImagePass]`` a pass whose relevance does not fold one token set
  layer by layer (DETR: encoder, decoder and cross-attention rules) [``None``: the stages' pass];
  ``objectives(explainer, outputs, batch, request, layout)`` objectives with their own output rows
  (detections, regions) [``None``: the classes' scores]; ``results(explainer, prepared, passed,
  request, index)`` [one :class:`~hf_vit_rollout.Explanation` per target];
* flags: ``refused``, ``needs_text`` (OWL-ViT's queries), ``one_box_per_patch`` (OWL-ViT: the app
  asks for a box index), ``is_video``, ``input_shape``.

Modules:
    base: the :class:`~hf_vit_rollout.families.base.Family` interface and its defaults.
    grid: global-attention ViTs (ViT, DeiT, BEiT, DINOv2, DINOv3, CLIP, SigLIP, I-JEPA, ViT-MSN,
        Data2Vec-Vision, ViT-MAE encoders).
    patches: SigLIP 2 (variable-resolution patch sequences with an attention mask).
    windowed: Swin, Swin V2, Donut-Swin, MaskFormer-Swin (windows, patch merging); ViTDet.
    detection: YOLOS (detection tokens beside the patches); OWL-ViT and OWLv2 (one box per patch
        token, classes named by text queries); one map per detection.
    encoder_decoder: DETR and Conditional DETR (a CNN's feature grid, an encoder and a decoder of object
        queries; Chefer et al. 2021b's encoder-decoder rules; one map per detection).
    video: VideoMAE and ViViT (global attention over tubelets; maps with a time axis).
    timesformer: TimeSformer (divided space-time attention, its temporal and spatial attention
        folded into token space as two chain steps per layer).
    dense: DPT and Depth Anything depth estimation, DPT semantic segmentation (region targets).
    refused: Hiera, timm checkpoints and attention-free or non-chaining architectures, with the reason.
    tokens: :class:`~hf_vit_rollout.TokenLayout`, the global-grid layout, and the shared ``Layout``.
    window_layout, windows, window_capture: the Swin family's layout (with each family's window
        rule), token space and capture.
    loading: checkpoint → model and processors.
"""

from __future__ import annotations

from . import dense, detection, encoder_decoder, grid, patches, refused, timesformer, video, windowed
from .base import Family

#: model_type -> family object (see the module docstring for what it answers).
FAMILIES: dict[str, Family] = {}
for _module in (grid, patches, windowed, detection, encoder_decoder, video, timesformer, dense, refused):
    for _family in _module.FAMILIES:
        for _type in _family.model_types:
            FAMILIES[_type] = _family


def vision_config(config):
    """The vision config of an image-text model (CLIP, SigLIP, ...), else ``config`` itself."""
    return getattr(config, "vision_config", None) or config


def family_for(config) -> Family | None:
    """The registered family of ``config`` (its vision config for image-text models), or ``None``."""
    return FAMILIES.get(getattr(vision_config(config), "model_type", None))


def supported_model_types() -> list[str]:
    """``model_type`` values the explainer knows the token layout of (refused ones left out)."""
    return sorted(t for t, f in FAMILIES.items() if not f.refused)


def unknown_model_type(model_type) -> str:
    """The message for a ``model_type`` no family registers."""
    return f"unknown model type {model_type!r}: attention rollout supports {', '.join(supported_model_types())}"


def refuse_unless_class_scores(explainer, door: str) -> None:
    """Refuse, for ``door`` (``"evaluate"``, ``"explain_dataset"``), a model whose output is not one
    class score per image: a detector, a dense (depth) model or a video model.

    Raises:
        UnsupportedModelError: naming the model, its kind and what to use instead.
    """
    from ..errors import UnsupportedModelError

    family = getattr(explainer, "family", None)
    if family is None:  # not an explainer: the door's own checks say so
        return
    if family.is_detector_model(explainer.model):
        kind = "a detector (its scores belong to boxes, not to the image)"
    elif family.has_regions(explainer.model):
        kind = "a dense model (it predicts a map, not classes)"
    elif family.is_video:
        kind = "a video model (it explains clips, not images)"
    else:
        return
    raise UnsupportedModelError(
        f"{door} works with image classifiers and image-text models; {type(explainer.model).__name__} is {kind}. "
        "Explain it with the explainer itself (detection=, min_score=, region= or a clip)"
    )
