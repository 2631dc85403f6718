"""Where the model's patches lie on the original image, and heat-maps placed exactly there.

An image processor resizes (to a fixed size, a shortest edge, a longest edge or a maximum box),
centre-crops (padding when the image is smaller than the crop) and pads (OWLv2's processor pads the
image bottom and right to a square *before* resizing, so the image fills only the top-left part of
the model input); the model then cuts the
input into ``patch``-sized tiles, dropping any remainder. :class:`Placement` records that geometry
for one image, so a ``(grid_h, grid_w)`` patch map is drawn over exactly the pixels the model saw
(bilinear between patch centres, as ``align_corners=False``) and is zero everywhere else: outside a
centre crop, in padding, and in a remainder strip narrower than a patch.

The resize rules mirror ``transformers``' own (they call its size helpers), so the geometry is what
the processor did, not a guess; ``tests/test_placement.py`` checks it against the processors' outputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

#: Default bound on heat-map pixels: larger images get heat-maps (and overlays) at this many pixels
#: at most, aspect kept; ask for ``full_resolution=True`` to get them at the image's own size.
HEATMAP_MAX_PIXELS = 2048 * 2048


def _size_value(size, key):
    value = getattr(size, key, None) if not isinstance(size, dict) else size.get(key)
    return int(value) if value else None


def resized_size(processor, height: int, width: int) -> tuple[int, int]:
    """``(height, width)`` the processor resizes an image of this size to (unchanged without resizing)."""
    size = getattr(processor, "size", None)
    if not getattr(processor, "do_resize", False) or size is None:
        return height, width
    from transformers.image_transforms import (
        get_resize_output_image_size,
        get_size_with_aspect_ratio,
    )
    from transformers.image_utils import (
        ChannelDimension,
        get_image_size_for_max_height_width,
    )

    shortest, longest = _size_value(size, "shortest_edge"), _size_value(size, "longest_edge")
    max_h, max_w = _size_value(size, "max_height"), _size_value(size, "max_width")
    fixed_h, fixed_w = _size_value(size, "height"), _size_value(size, "width")
    if shortest and longest:
        return tuple(get_size_with_aspect_ratio((height, width), shortest, longest))
    if shortest:
        dummy = np.broadcast_to(np.zeros((), np.uint8), (3, height, width))  # no memory: sizes only
        return tuple(
            get_resize_output_image_size(
                dummy, size=shortest, default_to_square=False, input_data_format=ChannelDimension.FIRST
            )
        )
    if max_h and max_w:
        return tuple(get_image_size_for_max_height_width((height, width), max_h, max_w))
    if fixed_h and fixed_w:
        return fixed_h, fixed_w
    return height, width


def pads_to_square(processor) -> bool:
    """Whether ``processor`` pads each image bottom and right to a square before resizing it (OWLv2's
    ``Owlv2ImageProcessor`` and ``Owlv2ImageProcessorPil`` with ``do_pad``)."""
    owlv2 = any(kind.__name__.startswith("Owlv2ImageProcessor") for kind in type(processor).__mro__)
    return owlv2 and bool(getattr(processor, "do_pad", False))


def _crop_start(length: int, crop: int) -> int:
    """Offset of a centre crop in ``transformers``' ``center_crop`` (negative: padded before it)."""
    start = (length - crop) // 2
    pad = math.ceil((max(crop, length) - length) / 2)
    return max(0, start + pad) - pad


@dataclass(frozen=True)
class Placement:
    """The geometry from one original image to the model's patch grid.

    Attributes:
        image_size: ``(width, height)`` of the original (oriented) image.
        resized: ``(height, width)`` the image spans after the processor's resize, in model-input
            pixels; fractional when the processor padded the image to a square before resizing
            (OWLv2: an ``H × W`` image padded to ``S = max(H, W)`` and resized to ``h × w`` spans
            ``(H·h/S, W·w/S)``, the rest of the input is padding).
        offset: ``(top, left)`` of the model input in resized coordinates (a crop's start; negative
            when the crop padded the image).
        patch: ``(patch_h, patch_w)`` pixels of one patch in model-input coordinates.
        grid: ``(grid_h, grid_w)`` patches.
    """

    image_size: tuple[int, int]
    resized: tuple[float, float]
    offset: tuple[int, int]
    patch: tuple[int, int]
    grid: tuple[int, int]

    @classmethod
    def of(cls, processor, image_size: tuple[int, int], patch: tuple[int, int], grid: tuple[int, int]) -> Placement:
        """The placement of an image of ``image_size = (W, H)`` through ``processor``."""
        width, height = image_size
        if pads_to_square(processor):  # padded to side × side first; the image is its top-left part
            side = max(int(width), int(height))
            square_h, square_w = resized_size(processor, side, side)
            resized = (int(height) * square_h / side, int(width) * square_w / side)
            return cls((int(width), int(height)), resized, (0, 0), tuple(patch), tuple(grid))
        res_h, res_w = resized_size(processor, height, width)
        top = left = 0
        crop = getattr(processor, "crop_size", None)
        if getattr(processor, "do_center_crop", False) and crop is not None:
            top = _crop_start(res_h, _size_value(crop, "height"))
            left = _crop_start(res_w, _size_value(crop, "width"))
        return cls((int(width), int(height)), (int(res_h), int(res_w)), (top, left), tuple(patch), tuple(grid))

    def output_size(self, full_resolution: bool = False, max_pixels: int = HEATMAP_MAX_PIXELS) -> tuple[int, int]:
        """``(width, height)`` of heat-maps and overlays: the image's, or scaled to ``max_pixels``."""
        width, height = self.image_size
        if full_resolution or width * height <= max_pixels:
            return width, height
        scale = math.sqrt(max_pixels / (width * height))
        return max(1, int(width * scale)), max(1, int(height * scale))

    def _axis_weights(self, axis: int, out_length: int) -> np.ndarray:
        """``(out_length, grid)`` bilinear weights of one axis (0 = rows, 1 = columns)."""
        length = self.image_size[1 - axis]
        patch, cells = self.patch[axis], self.grid[axis]
        centres = (np.arange(out_length) + 0.5) * (length / out_length)  # original pixel coordinates
        inside = (centres * (self.resized[axis] / length)) - self.offset[axis]  # model-input coordinates
        seen = (inside >= 0) & (inside < cells * patch)
        position = np.clip(inside / patch - 0.5, 0, cells - 1)
        low = np.floor(position).astype(np.int64)
        high = np.minimum(low + 1, cells - 1)
        frac = (position - low).astype(np.float32)
        weights = np.zeros((out_length, cells), dtype=np.float32)
        rows = np.arange(out_length)
        np.add.at(weights, (rows, low), (1 - frac) * seen)
        np.add.at(weights, (rows, high), frac * seen)
        return weights

    def heatmap(self, mask: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
        """``(grid_h, grid_w)`` patch map → ``(H, W)`` float32 heat-map over the pixels the model saw.

        Args:
            mask: patch values in ``[0, 1]``.
            size: ``(width, height)`` of the output; default the image's own size.
        """
        width, height = self.image_size if size is None else size
        rows = self._axis_weights(0, height)
        cols = self._axis_weights(1, width)
        heat = (rows @ np.asarray(mask, dtype=np.float32)) @ cols.T
        return np.clip(heat, 0.0, 1.0, out=heat)


def shrink_for_processor(image: Image.Image, processor) -> Image.Image:
    """The image resized as the processor will resize it, done on the 8-bit PIL image up front.

    The PIL image processors resize the 8-bit image with PIL's own ``Image.resize`` (same size, same
    filter), so doing it first gives bit-identical model inputs while the processor never converts
    a huge original to arrays. Done only for PIL processors whose size rule gives the same size when
    applied twice (a fixed height and width, or a shortest edge alone); ``max_height``/``max_width``
    and shortest-plus-longest rules can round differently on a second pass, so those images, and
    images the processor does not shrink, are returned unchanged; so are images for processors that
    pad to a square before resizing (OWLv2, which also resizes with its own filter, not PIL's).
    """
    from transformers.image_processing_backends import PilBackend

    size = getattr(processor, "size", None)
    fixed = _size_value(size, "height") and _size_value(size, "width")
    shortest_only = _size_value(size, "shortest_edge") and not _size_value(size, "longest_edge")
    if not isinstance(processor, PilBackend) or not (fixed or shortest_only) or pads_to_square(processor):
        return image  # only where resizing twice is the same as resizing once (bit-identical input)
    res_h, res_w = resized_size(processor, image.height, image.width)
    if res_h * res_w >= image.width * image.height:
        return image
    resample = getattr(processor, "resample", None)
    resample = Image.Resampling.BILINEAR if resample is None else Image.Resampling(int(resample))
    return image.resize((res_w, res_h), resample=resample)
