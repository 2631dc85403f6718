"""Turn whatever a user passes as an image into an RGB ``PIL.Image`` as displayed, or say precisely why not.

Accepted: a path (``str`` / ``os.PathLike``) to a regular file, an ``http(s)://`` URL, a ``PIL.Image`` in
any mode, a numpy array ``(H, W)`` / ``(H, W, C)`` with ``C`` in 1, 3, 4, a torch tensor ``(C, H, W)``,
or a list of those. A ``(B, C, H, W)`` tensor counts as ``B`` images.

Orientation: a file's or PIL image's EXIF orientation (all eight values, mirrored ones too) is
applied before anything else, so the model, the heat-map and the overlay all see the image as a
viewer displays it.

One rule for pixel values, the same for files and arrays (a file's pixels are read as the array
``numpy.asarray(image)`` that PIL gives, so a 16-bit PNG and the same ``uint16`` array are identical):

* 8-bit (``uint8``, PIL's 8-bit modes): used as they are.
* 16-bit (``uint16``, PIL modes ``I;16*``): the high byte, ``v >> 8`` (65535 → 255), which is what
  PIL itself does when it decodes a 16-bit RGB PNG.
* floating point (any float dtype, PIL mode ``F`` from 32-bit float TIFFs): must lie in ``[0, 1]``;
  ``round(v · 255)``.
* any other integer type (PIL mode ``I`` from 32-bit integer TIFFs, ``int32``/``int64`` arrays): must
  lie in 0-255, used as 8-bit values.

Out-of-range values are an :class:`~hf_vit_rollout.InputError` that says how to scale, never a silent
stretch. ``bool`` arrays are refused.
"""

from __future__ import annotations

import io
import os
import stat
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InputError

if TYPE_CHECKING:
    import torch

    from .placement import Placement

#: Refuse images with more pixels than this (decompression-bomb guard), 64 megapixels (e.g. 8000 × 8000).
MAX_PIXELS = 64_000_000


def _describe(obj) -> str:
    return type(obj).__module__ + "." + type(obj).__qualname__


def _check_size(width: int, height: int, where: str) -> None:
    if width < 1 or height < 1:
        raise InputError(f"{where} is empty ({width}×{height} pixels); pass an image with at least one pixel")
    if width * height > MAX_PIXELS:
        raise InputError(
            f"{where} has {width}×{height} = {width * height:,} pixels, more than the limit of {MAX_PIXELS:,} "
            "(decompression-bomb guard); downscale it first or raise hf_vit_rollout.images.MAX_PIXELS"
        )


def _open_bytes(data: bytes | str | os.PathLike, where: str, not_image: str | None = None) -> Image.Image:
    source = io.BytesIO(data) if isinstance(data, bytes) else data
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as img:
                _check_size(img.width, img.height, where)
                img.load()
            return oriented(img)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputError(f"{where} is too large to decode safely (decompression-bomb guard): {exc}") from None
    except UnidentifiedImageError:
        raise InputError(not_image or f"{where} is not an image file PIL can read (PNG, JPEG, TIFF, BMP, WebP, ...)") from None
    except OSError as exc:
        raise InputError(f"{where} could not be decoded; the file is truncated or corrupt ({exc})") from None


def _load_path(path: str | os.PathLike) -> Image.Image:
    text = os.fspath(path)
    if text.startswith(("http://", "https://")):
        return _open_bytes(_download(text), f"image at {text}")
    check_path(text)
    return _open_bytes(text, f"file {text!r}")


def check_path(path: str | os.PathLike) -> None:
    """Fail at once for a path that is missing, a directory, or not a regular file (a named pipe,
    device or socket would block or never end).

    Raises:
        FileNotFoundError: no such file.
        InputError: a directory or a non-regular file.
    """
    text = os.fspath(path)
    if text.startswith(("http://", "https://")):
        return
    try:
        mode = os.stat(text).st_mode
    except FileNotFoundError:
        raise FileNotFoundError(f"image file not found: {text!r}") from None
    except OSError as exc:
        raise InputError(f"cannot read {text!r}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(mode):
        raise InputError(f"{text!r} is a directory; pass image files (e.g. sorted(Path(dir).glob('*.jpg')))")
    if not stat.S_ISREG(mode):
        kind = "named pipe" if stat.S_ISFIFO(mode) else "socket" if stat.S_ISSOCK(mode) else "device or special file"
        raise InputError(f"{text!r} is a {kind}, not a regular file; pass an image file")


#: EXIF tag of the orientation (1 = as stored; 2-8 = mirrored and/or rotated).
_ORIENTATION = 0x0112


def oriented(img: Image.Image) -> Image.Image:
    """``img`` as displayed: its EXIF orientation applied (the same object when there is none)."""
    try:
        orientation = img.getexif().get(_ORIENTATION, 1)
    except Exception:  # noqa: BLE001 - unreadable EXIF: keep the pixels as stored
        return img
    if orientation in (2, 3, 4, 5, 6, 7, 8):
        return ImageOps.exif_transpose(img)
    return img


def _download(url: str) -> bytes:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=20) as response:  # noqa: S310 - http(s) only, checked above
            return response.read()
    except (urllib.error.URLError, OSError) as exc:
        raise InputError(
            f"could not download {url} ({exc}); if this machine is offline, download the image elsewhere "
            "and pass its file path"
        ) from None


def _to_rgb(img: Image.Image, where: str = "image") -> Image.Image:
    """Any PIL mode → RGB. Transparent pixels are composited over white; 16-bit, 32-bit and float
    modes follow the module's pixel-value rule."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        return _from_array(np.asarray(img), f"{where} (PIL mode {img.mode!r})")
    if img.mode == "La":  # premultiplied alpha converts only via LA
        img = img.convert("LA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def _from_array(arr: np.ndarray, where: str) -> Image.Image:
    if arr.dtype == bool or arr.dtype.kind not in "uif":
        raise InputError(f"{where} has dtype {arr.dtype}; pass uint8 (0-255) or float (0-1) pixels")
    if arr.ndim == 3 and arr.shape[-1] not in (1, 3, 4) and arr.shape[0] in (1, 3, 4):
        raise InputError(
            f"{where} has shape {arr.shape}, which looks channels-first; numpy images are (H, W, C): "
            "use arr.transpose(1, 2, 0)"
        )
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
        raise InputError(f"{where} has shape {arr.shape}; expected (H, W), (H, W, 1), (H, W, 3) or (H, W, 4)")
    _check_size(arr.shape[1], arr.shape[0], where)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)):
            raise InputError(f"{where} contains NaN or infinite values")
        if arr.min() < 0 or arr.max() > 1:
            raise InputError(
                f"{where} is a float array with values in [{arr.min():.3g}, {arr.max():.3g}]; float pixels "
                "must lie in [0, 1] (divide uint8-range values by 255)"
            )
        arr = np.round(arr * 255).astype(np.uint8)
    elif arr.dtype == np.uint16:
        arr = (arr >> 8).astype(np.uint8)
    elif arr.dtype != np.uint8:
        if arr.min() < 0 or arr.max() > 255:
            raise InputError(
                f"{where} has {arr.dtype} values in [{arr.min()}, {arr.max()}]; integer pixels other than uint8 "
                "and uint16 must lie in 0-255 (pass 16-bit data as uint16, or scale to uint8)"
            )
        arr = arr.astype(np.uint8)
    img = Image.fromarray(np.ascontiguousarray(arr))
    return _to_rgb(img)


def _tensor_images(tensor, where: str) -> list[Image.Image]:
    t = tensor.detach().cpu()
    if t.dim() == 4:
        return [_from_tensor(x, f"{where}[{i}]") for i, x in enumerate(t)]
    return [_from_tensor(t, where)]


def _from_tensor(t, where: str) -> Image.Image:
    if t.dim() == 2:
        t = t.unsqueeze(0)
    if t.dim() != 3 or t.shape[0] not in (1, 3, 4):
        raise InputError(
            f"{where} is a tensor of shape {tuple(t.shape)}; expected (C, H, W) or (B, C, H, W) with C in 1, 3, 4"
        )
    if t.is_floating_point():
        t = t.float()
    return _from_array(t.permute(1, 2, 0).numpy(), where)


def load_image(image, where: str = "image") -> Image.Image:
    """One input → RGB ``PIL.Image``.

    Raises:
        FileNotFoundError: a path that does not exist.
        InputError: anything else that is not a usable image, with the reason and what to do.
    """
    if isinstance(image, Image.Image):
        _check_size(image.width, image.height, where)
        try:
            return _to_rgb(oriented(image), where)
        except (OSError, ValueError) as exc:
            raise InputError(f"{where}: PIL image in mode {image.mode!r} could not be converted to RGB: {exc}") from None
    if isinstance(image, (str, os.PathLike)):
        return _to_rgb(_load_path(image), f"file {os.fspath(image)!r}")
    if isinstance(image, np.ndarray):
        return _from_array(image, where)
    if _is_tensor(image):
        images = _tensor_images(image, where)
        if len(images) != 1:
            raise InputError(f"{where} is a batch of {len(images)} images; pass it as the whole input")
        return images[0]
    raise InputError(
        f"{where} is a {_describe(image)}; pass a file path, PIL.Image, numpy (H, W, C) array or torch (C, H, W) tensor"
    )


def decode_image(value, where: str, dtype=None) -> Image.Image:
    """One image as ``evaluate`` and ``explain_dataset`` take it → RGB ``PIL.Image`` (the explainer's rule for pixels and orientation).

    Everything :func:`load_image` takes, and what a data-set cell may hold besides: a ``PIL.Image`` (``Image()`` feature), a ``{"bytes", "path"}`` dict
    (``Image(decode=False)``), raw bytes, a path or URL, a numpy array or torch tensor, or nested
    lists (``Array3D`` and ``List`` features in the default format), read as an array of ``dtype``.

    Raises:
        InputError: an empty cell or one that holds no image, naming ``where``.
        FileNotFoundError: a path that does not exist.
    """
    if value is None:
        raise InputError(f"{where} is empty (None); every row needs an image")
    if isinstance(value, dict):
        data, path = value.get("bytes"), value.get("path")
        if data is None and not path:
            raise InputError(f"{where} is a dict without image bytes or a path ({', '.join(map(repr, value))})")
        value = data if data is not None else path
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        not_image = f"{where} holds {len(data)} bytes that are not an image file PIL can read"
        return _to_rgb(_open_bytes(data, where, not_image), where)
    elif isinstance(value, (list, tuple)):
        try:
            value = np.asarray(value, dtype=dtype)
        except (ValueError, TypeError) as exc:
            raise InputError(f"{where} is a nested list that is not a regular (H, W[, C]) array of numbers: {exc}") from None
    return load_image(value, where)


def _is_tensor(obj) -> bool:
    return type(obj).__module__.startswith("torch") and hasattr(obj, "detach")


def image_sources(images) -> tuple[list, bool]:
    """Split an input into one source per image, checked but not decoded, and ``was_single``.

    Paths are checked at once (missing, directory, not a regular file), so a bad path fails before
    any image is decoded or explained; decoding happens later, a batch at a time (:func:`load_image`).

    Raises:
        InputError: an empty list or batch, a bad path.
        FileNotFoundError: a missing file.
    """
    if _is_tensor(images) and images.dim() == 4:
        if images.shape[0] == 0:
            raise InputError("got an empty batch tensor; pass at least one image")
        return list(images), False
    if isinstance(images, Sequence) and not isinstance(images, (str, bytes)):
        if len(images) == 0:
            raise InputError("got an empty list of images; pass at least one image")
        sources, single = list(images), False
    else:
        sources, single = [images], True
    for source in sources:
        if isinstance(source, (str, os.PathLike)):
            check_path(source)
    return sources, single


def load_images(images) -> tuple[list[Image.Image], bool]:
    """Inputs → ``(list of RGB images, was_single)``. ``was_single`` tells whether to return one result."""
    sources, single = image_sources(images)
    where = "image" if single else "images[{}]"
    return [load_image(x, where.format(i)) for i, x in enumerate(sources)], single


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

    def batched_inputs(self) -> dict | None:
        """:attr:`inputs` as a batch of one (``None`` when there are none)."""
        return None if self.inputs is None else {k: v[None] for k, v in self.inputs.items()}
