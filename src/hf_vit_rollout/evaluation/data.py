"""What ``evaluate`` scores: images, their target classes and object masks, as a flat list of items.

An *item* is one (image, object) pair: an image with one target explains one class; an image with a
list of targets (several labelled objects) gives one item per target, each with its own mask, and
the other objects' masks for class sensitivity. Masks are moved into model-input space by the image
processor itself (same resize and centre crop as the image), so the scores never depend on how the
heat-map is drawn over the original image.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import ExplanationWarning, InputError
from ..images import check_path, decode_image, oriented

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


@dataclass
class Item:
    """One (image, object) pair.

    Attributes:
        image: index into :attr:`EvaluationData.images`.
        target: class index to explain, or ``None`` for the model's prediction.
        mask: ``(h, w)`` bool object mask in model-input space, or ``None``.
        others: masks of the image's other labelled objects (model-input space).
    """

    image: int
    target: int | None = None
    mask: np.ndarray | None = None
    others: list[np.ndarray] = field(default_factory=list)


@dataclass
class EvaluationData:
    """Loaded inputs: RGB images, a name per image, and the items to score."""

    images: list[Image.Image]
    names: list[str]
    items: list[Item]
    masks_given: bool = False

    @property
    def has_masks(self) -> bool:
        return any(item.mask is not None for item in self.items)

    @property
    def has_several_objects(self) -> bool:
        return any(item.others for item in self.items)


def _to_pil(value, where: str) -> Image.Image:
    """An image as the explainer decodes it (:func:`~hf_vit_rollout.images.decode_image`: EXIF
    orientation, 16-bit values, float pixels in [0, 1]), so the scores see the pixels it shows."""
    return decode_image(value, where)


def _mask_picture(value, where: str) -> Image.Image:
    """A mask given as a PIL image or a file, oriented like an image (EXIF), in its own mode."""
    if isinstance(value, Image.Image):
        return oriented(value)
    check_path(value)
    try:
        with Image.open(value) as opened:
            opened.load()
            return oriented(opened.copy())
    except OSError as exc:
        raise InputError(f"{where}: the mask file {str(value)!r} could not be decoded; it is truncated or not an image ({exc})") from None


def image_files(folder: Path) -> list[Path]:
    """The image files directly in ``folder``, sorted by name."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{str(folder)!r} is not a folder")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in {str(folder)!r}")
    return files


def masks_by_stem(images: list[Path], folder: Path) -> list[Path]:
    """The mask file for each image: the file in ``folder`` with the image's stem (any image suffix).

    Raises:
        ValueError: an image without a mask, or a stem with several mask files.
    """
    found: dict[str, list[Path]] = {}
    for path in image_files(folder):
        found.setdefault(path.stem, []).append(path)
    missing = [p.name for p in images if p.stem not in found]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise ValueError(f"no mask in {str(folder)!r} for {shown}: a mask is the file with the image's stem (cat.jpg -> cat.png)")
    doubles = [s for p in images if len(found[s := p.stem]) > 1]
    if doubles:
        raise ValueError(f"several mask files for the stem {doubles[0]!r} in {str(folder)!r}; keep one")
    return [found[p.stem][0] for p in images]


def _as_bool_mask(value, where: str) -> np.ndarray:
    """A mask given as a bool/number array, a PIL image or a file → ``(H, W)`` bool (grey > 127 or > 0.5)."""
    if isinstance(value, (str, Path, Image.Image)):
        return np.asarray(_mask_picture(value, where).convert("L")) > 127
    array = np.asarray(value.detach().cpu() if isinstance(value, torch.Tensor) else value)
    if array.ndim != 2:
        raise ValueError(f"{where}: a mask must be (H, W), got shape {array.shape}")
    if array.dtype == bool:
        return array
    if array.dtype.kind not in "uif":
        raise ValueError(f"{where}: a mask must hold bools or numbers (object > 0.5, uint8 > 127), got dtype {array.dtype}")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        share = float(np.mean(~np.isfinite(array)))
        raise ValueError(
            f"{where}: the mask holds NaN or infinite values ({share:.0%} of its pixels); use 0 for the background "
            "and 1 for the object"
        )
    return array > (127 if array.dtype == np.uint8 else 0.5)


def _split_masks(value) -> list:
    """One image's mask entry → a list with one mask per object.

    A single ``(H, W)`` mask (array, nested list, PIL image, file) is one object; a ``(K, H, W)``
    array or a list of masks is ``K`` objects.
    """
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return list(value) if value.ndim == 3 else [value]
    if isinstance(value, (list, tuple)):
        if value and isinstance(value[0], (list, tuple)) and value[0] and np.isscalar(value[0][0]):
            return [np.asarray(value)]  # a nested-list (H, W) mask, e.g. from a datasets column
        return list(value)
    return [value]


def _object_masks(value, count: int, where: str) -> list[np.ndarray]:
    """One image's masks, one per target."""
    masks = [_as_bool_mask(m, f"{where}[{k}]") for k, m in enumerate(_split_masks(value))]
    if len(masks) != count:
        raise ValueError(f"{where}: {len(masks)} masks for {count} targets; give one mask per target (object)")
    return masks


def masks_to_input(masks: list[np.ndarray], processor) -> np.ndarray:
    """``K`` original-image masks → ``(K, h, w)`` bool masks in model-input space.

    Each mask goes through the image processor like an image (resize, centre crop; no normalisation)
    and is thresholded at half: object parts the processor crops away are not scored.
    """
    pictures = [Image.fromarray(m.astype(np.uint8) * 255).convert("RGB") for m in masks]
    try:
        pixels = processor(images=pictures, do_normalize=False, return_tensors="pt")["pixel_values"]
    except Exception as exc:  # processors raise many types
        raise ValueError(f"the image processor could not map the masks to the model input: {exc}") from exc
    return (pixels[:, 0] > 0.5).numpy()


def _dataset_columns(dataset, targets, masks):
    """A ``datasets.Dataset`` → its image column, and the targets/masks columns named by strings."""
    names = dataset.column_names
    image_column = "image" if "image" in names else next(
        (n for n, f in dataset.features.items() if type(f).__name__ == "Image"), None
    )
    if image_column is None:
        raise ValueError(f"the dataset has no 'image' column nor any Image() feature; its columns are {names}")
    picked = []
    for what, value in (("targets", targets), ("masks", masks)):
        if isinstance(value, str):
            if value not in names:
                raise ValueError(f"{what}={value!r}: the dataset has no such column; its columns are {names}")
            value = dataset[value]
        picked.append(value)
    return dataset[image_column], picked[0], picked[1]


def _listed(value, what: str, count: int) -> list | None:
    if value is None:
        return None
    if isinstance(value, (torch.Tensor, np.ndarray)) and value.ndim <= 1:
        value = value.tolist()
    if isinstance(value, (int, np.integer, str)) and what == "targets":
        return [value] * count
    value = list(value)
    if len(value) != count:
        raise ValueError(f"got {len(value)} {what} for {count} images; give one entry per image")
    return value


def load_inputs(images, targets, masks, explainer) -> EvaluationData:
    """Normalise ``evaluate``'s inputs into :class:`EvaluationData` (see :func:`hf_vit_rollout.evaluate`)."""
    mask_files = None
    if type(images).__name__ == "Dataset" and hasattr(images, "column_names"):
        images, targets, masks = _dataset_columns(images, targets, masks)
    if isinstance(images, (str, Path)):
        files = image_files(Path(images))
        names = [p.stem for p in files]
        if isinstance(masks, (str, Path)):
            mask_files = masks_by_stem(files, Path(masks))
        pil = [_to_pil(p, f"file {str(p)!r}") for p in files]
    else:
        if not isinstance(images, Sequence) and hasattr(images, "__len__") and hasattr(images, "__iter__"):
            images = list(images)  # a datasets Column
        if isinstance(images, Image.Image) or not isinstance(images, Sequence) or len(images) == 0:
            raise ValueError("images must be a non-empty list of images, a folder, or a datasets.Dataset")
        pil = [_to_pil(x, f"images[{i}]") for i, x in enumerate(images)]
        names = [Path(x).stem if isinstance(x, (str, Path)) else str(i) for i, x in enumerate(images)]
    if isinstance(masks, (str, Path)) and mask_files is None:
        raise ValueError("masks given as a folder need images given as a folder (masks pair to images by file stem)")
    targets = _listed(targets, "targets", len(pil))
    masks = mask_files if mask_files is not None else _listed(masks, "masks", len(pil))
    items = []
    for i, image in enumerate(pil):
        wanted = None if targets is None else targets[i]
        several = isinstance(wanted, (list, tuple, np.ndarray))
        classes = [explainer.resolve_target(t) for t in wanted] if several else [None if wanted is None else explainer.resolve_target(wanted)]
        if masks is None:
            items.extend(Item(i, c) for c in classes)
            continue
        where = f"masks[{i}] ({names[i]})"
        if not several and len(_split_masks(masks[i])) > 1:
            raise ValueError(f"{where}: several masks but one target; give a list of targets, one per mask")
        objects = _object_masks(masks[i], len(classes), where)
        for k, mask in enumerate(objects):
            if mask.shape != (image.height, image.width):
                raise ValueError(f"{where}: mask is {mask.shape[1]}×{mask.shape[0]} but the image is {image.width}×{image.height}")
        moved = masks_to_input(objects, explainer.image_processor)
        for k, c in enumerate(classes):
            if not objects[k].any():
                warnings.warn(f"{where}: object {k}'s mask is empty (no pixel marked); mask metrics skip it",
                              ExplanationWarning, stacklevel=3)
            elif not moved[k].any():
                warnings.warn(f"{where}: object {k} lies outside the model's input (cropped away); mask metrics skip it",
                              ExplanationWarning, stacklevel=3)
            others = [moved[j] for j in range(len(classes)) if j != k]
            items.append(Item(i, c, moved[k] if moved[k].any() else None, others))
    return EvaluationData(pil, names, items, masks is not None)
