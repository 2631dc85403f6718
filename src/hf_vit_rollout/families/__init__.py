"""What the package knows about each kind of checkpoint, one module per kind of token layout.

A *family* is an object that answers, for the ``model_type`` values it registers:

* ``check(config)``: refuse a variant that cannot be explained, with the reason
  (:class:`~hf_vit_rollout.errors.UnsupportedModelError`);
* ``layout(config, image_size, held, inputs)``: the token layout of one input (an object answering
  the questions :class:`~hf_vit_rollout.tokens.TokenLayout` answers); ``inputs`` are the per-image
  model inputs besides ``pixel_values`` (SigLIP 2's mask and spatial shapes), batched;
* optionally ``prepare(explainer, source, target, where) -> PreparedImage`` for inputs that are
  not one image, or processors whose output is not one ``(C, H, W)`` tensor (SigLIP 2, video);
  ``sources(inputs) -> (list, single)`` to split a call's inputs (video: clips, not frames);
  ``results(explainer, prepared, passed, request, index)`` for results that are not an
  :class:`~hf_vit_rollout.Explanation` (video); ``patch_size(config)`` where the config has none;
* ``attention_setup(vision_root)``: ``(window blocks, forward kwargs, attention modules)`` for the
  capture (:mod:`hf_vit_rollout.capture`);
* ``call_kwargs(vision_root, pixel_values)``: keyword arguments a forward pass of this input needs (ViT-MAE's
  fixed noise), ``{}`` for most.
* optionally ``forward(explainer, batch, request, positions) -> [ImagePass]`` for a pass whose relevance
  does not fold one token set layer by layer (DETR: encoder, decoder and cross-attention rules), and
  ``check_request(explainer, request)`` to refuse a detector's methods or settings when the call is made.

Families registered here take precedence over the older tables in :mod:`hf_vit_rollout.tokens`
and :mod:`hf_vit_rollout.window_capture`, which still hold the ViT, DeiT, DINOv2, BEiT, CLIP,
SigLIP and Swin families.

Modules:
    grid: global-attention ViTs that need more than the shared table: Data2Vec-Vision (attention
        recorded without switching its kernel), ViT-MAE encoders without masking.
    patches: SigLIP 2 (variable-resolution patch sequences with an attention mask).
    windowed: ViTDet (window and global blocks mixed, the windows folded like Swin's).
    detection: YOLOS (detection tokens beside the patches; one map per detection); OWL-ViT and OWLv2
        (one box per patch token, classes named by text queries).
    encoder_decoder: DETR and Conditional DETR (a CNN's feature grid, an encoder and a decoder of object
        queries; Chefer et al. 2021b's encoder-decoder rules; one map per detection).
    video: VideoMAE and ViViT (global attention over tubelets; maps with a time axis).
    timesformer: TimeSformer (divided space-time attention, its temporal and spatial attention
        folded into token space as two chain steps per layer).
    dense: DPT depth estimation (region targets over ``predicted_depth``).
    refused: Hiera and timm checkpoints, with the reason.
"""

from __future__ import annotations

from . import dense, detection, encoder_decoder, grid, patches, refused, timesformer, video, windowed

#: model_type -> family object (see the module docstring for what it answers).
FAMILIES: dict = {}
for _module in (grid, patches, windowed, detection, encoder_decoder, video, timesformer, dense, refused):
    for _family in _module.FAMILIES:
        for _type in _family.model_types:
            FAMILIES[_type] = _family


def family_for(config):
    """The registered family of ``config`` (its vision config for image-text models), or ``None``."""
    vision = getattr(config, "vision_config", None) or config
    return FAMILIES.get(getattr(vision, "model_type", None))


def registered_model_types() -> list[str]:
    """``model_type`` values registered here that are explained (refused ones left out)."""
    return sorted(t for t, f in FAMILIES.items() if not getattr(f, "refused", False))


def refuse_unless_class_scores(explainer, door: str) -> None:
    """Refuse, for ``door`` (``"evaluate"``, ``"explain_dataset"``), a model whose output is not one
    class score per image: a detector, a dense (depth) model or a video model.

    Raises:
        UnsupportedModelError: naming the model, its kind and what to use instead.
    """
    from ..errors import UnsupportedModelError

    family = getattr(explainer, "family", None)
    if getattr(explainer, "is_detector", False):
        kind = "a detector (its scores belong to boxes, not to the image)"
    elif getattr(family, "has_regions", lambda model: False)(explainer.model):
        kind = "a dense model (it predicts a map, not classes)"
    elif getattr(family, "input_shape", "").count(",") == 4:
        kind = "a video model (it explains clips, not images)"
    else:
        return
    raise UnsupportedModelError(
        f"{door} works with image classifiers and image-text models; {type(explainer.model).__name__} is {kind}. "
        "Explain it with the explainer itself (detection=, min_score=, region= or a clip)"
    )
