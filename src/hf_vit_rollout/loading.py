"""Loading a checkpoint the ``transformers`` way, shared by the explainer and the pipeline.

One rule for every front door: a checkpoint saved as ``*ForImageClassification`` loads with its
head; anything else (a backbone such as ``Dinov2Model``, a CLIP model) loads as ``AutoModel``, so a
backbone is never given a randomly initialised classifier. ``"demo"`` names the checkpoint shipped
in the package.
"""

from __future__ import annotations

from pathlib import Path

from .errors import InputError, UnsupportedModelError
from .tokens import layout_from_config

#: Name that resolves to the checkpoint shipped in the package.
DEMO_MODEL = "demo"

#: Name that resolves to the small Swin shipped in the package.
DEMO_SWIN_MODEL = "demo-swin"

#: Keyword arguments of ``from_pretrained`` that concern finding files (passed to every loader).
HUB_KWARGS = (
    "cache_dir",
    "force_download",
    "local_files_only",
    "proxies",
    "revision",
    "subfolder",
    "token",
    "trust_remote_code",
)


def demo_model_path() -> Path:
    """Directory of the shipped demo checkpoint (a standard Hugging Face checkpoint folder)."""
    return Path(__file__).resolve().parent / "demo" / "checkpoint"


def demo_swin_path() -> Path:
    """Directory of the shipped demo Swin checkpoint."""
    return Path(__file__).resolve().parent / "demo" / "checkpoint_swin"


def resolve_source(name_or_path) -> str | Path:
    """``"demo"`` / ``"demo-swin"`` → a shipped checkpoint; a missing local path → ``OSError`` with what to pass."""
    if str(name_or_path) == DEMO_MODEL:
        return demo_model_path()
    if str(name_or_path) == DEMO_SWIN_MODEL:
        return demo_swin_path()
    text = str(name_or_path)
    if (Path(text).is_absolute() or text.startswith((".", "~"))) and not Path(text).expanduser().is_dir():
        raise OSError(
            f"could not load a checkpoint from {text!r}: no such directory. Pass an existing checkpoint "
            f"directory (with config.json), a Hub id, or {DEMO_MODEL!r}."
        )
    return name_or_path


def check_family(config) -> None:
    """Raise :class:`UnsupportedModelError` for architectures without global self-attention."""
    from .families import family_for

    family = family_for(config)
    if family is not None:
        family.check(getattr(config, "vision_config", None) or config)
        return
    try:
        layout_from_config(config, (1, 1))
    except InputError:  # an explainable family that only refuses this 1-pixel probe
        return
    except ValueError as exc:
        raise UnsupportedModelError(str(exc)) from None


def load_config(name_or_path, **hf_kwargs):
    """The checkpoint's config, checked to be an explainable family (before any weights load)."""
    from transformers import AutoConfig

    source = resolve_source(name_or_path)
    try:
        config = AutoConfig.from_pretrained(source, **{k: v for k, v in hf_kwargs.items() if k in HUB_KWARGS})
    except OSError as exc:
        raise OSError(
            f"could not load a checkpoint from {str(name_or_path)!r}: {exc}\n"
            "Pass an existing local checkpoint directory, a Hub id reachable from this machine "
            f"(offline: one already in the cache, with local_files_only=True), or {DEMO_MODEL!r}."
        ) from exc
    for key, value in hf_kwargs.items():  # settings from_pretrained would write into the config (mask_ratio=0.0)
        if key not in HUB_KWARGS and not key.startswith("_") and key in config.to_dict():
            setattr(config, key, value)
    check_family(config)
    return config


def is_classifier(config) -> bool:
    """Whether the checkpoint was saved with an image-classification head."""
    return any("ForImageClassification" in a for a in (getattr(config, "architectures", None) or []))


#: Parts of architecture names that load with their head, and the auto class that loads them.
HEADS = {
    "ForImageClassification": "AutoModelForImageClassification",
    "ForObjectDetection": "AutoModelForObjectDetection",
    "ForVideoClassification": "AutoModelForVideoClassification",
    "ForDepthEstimation": "AutoModelForDepthEstimation",
    "ForSemanticSegmentation": "AutoModelForSemanticSegmentation",
}


def load_model(name_or_path, **hf_kwargs):
    """The model, with its head if it was saved with one (image or video classification, object
    detection, depth estimation; semantic segmentation where the package explains it: DPT), else as
    a backbone (``AutoModel``)."""
    import transformers

    config = load_config(name_or_path, **hf_kwargs)
    architectures = getattr(config, "architectures", None) or []
    from .families.dense import SEGMENTER_TYPES

    heads = [auto for part, auto in HEADS.items() if any(part in a for a in architectures)
             and (part != "ForSemanticSegmentation" or config.model_type in SEGMENTER_TYPES)]
    auto = getattr(transformers, heads[0] if heads else "AutoModel")
    saved = getattr(transformers, architectures[0], None) if heads else None
    if saved is not None and type(config) not in auto._model_mapping:  # e.g. OWL-ViT: a zero-shot detector
        auto = saved
    return auto.from_pretrained(resolve_source(name_or_path), **hf_kwargs)


def load_processors(name_or_path, **hf_kwargs):
    """``(image_processor, tokenizer or None)``: the PIL image processor (no torchvision needed)."""
    from transformers import AutoImageProcessor

    source = resolve_source(name_or_path)
    hub = {k: v for k, v in hf_kwargs.items() if k in HUB_KWARGS}
    processor = AutoImageProcessor.from_pretrained(source, backend="pil", **hub)
    tokenizer = None
    if getattr(load_config(name_or_path, **hf_kwargs), "text_config", None) is not None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(source, **hub)
    return processor, tokenizer


class ExplainableModel:
    """``from_pretrained`` for the ``vit-explanation`` pipeline task: the loading rule above.

    ``transformers.pipeline`` loads a task's model through the classes registered for it; this one
    applies :func:`load_model`, so a backbone checkpoint stays a backbone in the pipeline too.
    """

    @classmethod
    def from_pretrained(cls, name_or_path, **hf_kwargs):
        hf_kwargs.pop("_from_pipeline", None)
        return load_model(name_or_path, **hf_kwargs)
