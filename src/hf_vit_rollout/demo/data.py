"""Synthetic images with known answers: drawn shapes on cluttered, textured backgrounds.

Every sample has one or two objects of *different* classes, and for each object a pixel mask, so an
explanation can be scored against ground truth (pointing game, energy in the mask, class
sensitivity). Everything is drawn from a seed; nothing comes from the network.

Each class has its own shape *and* its own hue family (hue ``label / 10`` of the colour wheel, ±9°,
random saturation and brightness); backgrounds and clutter are grey. Shape alone is learnable, but
not by a tiny ViT trained from scratch in a quarter of an hour on two CPU cores: the hue family
makes the demo model reach high accuracy in that budget, and the evidence for a class still lies
only on its object, which is what the localization benchmark scores.

>>> sample = make_sample(seed=3)
>>> sample.image.size, sample.labels, sample.masks.shape            # doctest: +SKIP
((64, 64), [4, 7], (2, 64, 64))
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

#: The ten classes, in label order.
CLASSES = (
    "circle",
    "square",
    "triangle",
    "plus",
    "star",
    "ring",
    "crescent",
    "arrow",
    "ell",
    "frame",
)

IMAGE_SIZE = 64

#: Objects are rotated by a uniform angle in [-MAX_ROTATION, MAX_ROTATION] radians (30°).
MAX_ROTATION = math.radians(30)


@dataclass
class Sample:
    """One generated image.

    Attributes:
        image: RGB ``PIL.Image`` of ``IMAGE_SIZE × IMAGE_SIZE``.
        labels: class indices of the objects, in drawing order (distinct).
        masks: ``(num_objects, H, W)`` bool array, the visible pixels of each object.
        boxes: ``(num_objects, 4)`` ``(cx, cy, size, angle)`` of each object.
    """

    image: Image.Image
    labels: list[int]
    masks: np.ndarray
    boxes: np.ndarray

    @property
    def multi_hot(self) -> np.ndarray:
        target = np.zeros(len(CLASSES), dtype=np.float32)
        target[self.labels] = 1.0
        return target


def _rotate(points, cx, cy, angle):
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in points]


def _polygon(kind: str, r: float) -> list[list[tuple[float, float]]]:
    """Outline(s) of a shape of radius ``r`` centred at the origin; extra outlines are holes."""
    if kind == "square":
        return [[(-r, -r), (r, -r), (r, r), (-r, r)]]
    if kind == "frame":
        q = 0.5 * r
        return [[(-r, -r), (r, -r), (r, r), (-r, r)], [(-q, -q), (q, -q), (q, q), (-q, q)]]
    if kind == "triangle":
        return [[(r * math.cos(a), r * math.sin(a)) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)]]
    if kind == "plus":
        w = 0.35 * r
        return [[(-w, -r), (w, -r), (w, -w), (r, -w), (r, w), (w, w), (w, r), (-w, r), (-w, w), (-r, w), (-r, -w), (-w, -w)]]
    if kind == "star":
        pts = []
        for k in range(10):
            rad = r if k % 2 == 0 else 0.42 * r
            a = -math.pi / 2 + k * math.pi / 5
            pts.append((rad * math.cos(a), rad * math.sin(a)))
        return [pts]
    if kind == "arrow":
        w = 0.28 * r
        return [[(-r, -w), (0.1 * r, -w), (0.1 * r, -0.75 * r), (r, 0), (0.1 * r, 0.75 * r), (0.1 * r, w), (-r, w)]]
    if kind == "ell":
        w = 0.4 * r
        return [[(-r, -r), (-r + 2 * w, -r), (-r + 2 * w, r - 2 * w), (r, r - 2 * w), (r, r), (-r, r)]]
    raise ValueError(kind)


def _draw_shape(draw: ImageDraw.ImageDraw, kind: str, cx, cy, r, angle, fill, background=0) -> None:
    if kind == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif kind == "ring":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
        draw.ellipse((cx - 0.5 * r, cy - 0.5 * r, cx + 0.5 * r, cy + 0.5 * r), fill=background)
    elif kind == "crescent":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
        ox, oy = 0.55 * r * math.cos(angle), 0.55 * r * math.sin(angle)
        draw.ellipse((cx + ox - 0.85 * r, cy + oy - 0.85 * r, cx + ox + 0.85 * r, cy + oy + 0.85 * r), fill=background)
    else:
        outlines = _polygon(kind, r)
        draw.polygon(_rotate(outlines[0], cx, cy, angle), fill=fill)
        for hole in outlines[1:]:
            draw.polygon(_rotate(hole, cx, cy, angle), fill=background)


def _grey(rng: np.random.Generator, low: float, high: float) -> np.ndarray:
    """A random, nearly neutral colour (a faint tint at most)."""
    return rng.uniform(low, high) + rng.uniform(-12, 12, 3)


def class_colour(rng: np.random.Generator, label: int) -> tuple[int, int, int]:
    """A saturated colour from the class's hue family (hue ``label / 10`` of the wheel, ±9°)."""
    hue = (label / len(CLASSES) + rng.uniform(-0.025, 0.025)) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, rng.uniform(0.65, 1.0), rng.uniform(0.6, 1.0))
    return int(r * 255), int(g * 255), int(b * 255)


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    """Smooth grey gradient + noise texture + random grey clutter strokes and dots (no class hues)."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    c0, c1 = _grey(rng, 50, 205), _grey(rng, 50, 205)
    t = (xx * rng.uniform(-1, 1) + yy * rng.uniform(-1, 1))[..., None]
    t = (t - t.min()) / (np.ptp(t) + 1e-6)
    base = c0 * (1 - t) + c1 * t
    base += rng.normal(0, rng.uniform(4, 14), (size, size, 3))
    img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(rng.integers(3, 8)):
        colour = tuple(int(v) for v in np.clip(_grey(rng, 0, 255), 0, 255))
        x0, y0, x1, y1 = (float(v) for v in rng.uniform(0, size, 4))
        draw.line((x0, y0, x1, y1), fill=colour, width=int(rng.integers(1, 3)))
    for _ in range(rng.integers(2, 6)):
        colour = tuple(int(v) for v in np.clip(_grey(rng, 0, 255), 0, 255))
        x, y, r = (float(v) for v in (*rng.uniform(0, size, 2), rng.uniform(1.0, 2.5)))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
    return img


def make_sample(seed: int, num_objects: int | None = None, size: int = IMAGE_SIZE) -> Sample:
    """Draw one image (deterministic in ``seed``).

    Args:
        seed: random seed.
        num_objects: 1 or 2; ``None`` picks either with equal chance.
        size: image side in pixels.
    """
    rng = np.random.default_rng(seed)
    count = int(rng.integers(1, 3)) if num_objects is None else int(num_objects)
    if count not in (1, 2):
        raise ValueError(f"num_objects must be 1 or 2, got {num_objects}")
    labels = [int(v) for v in rng.choice(len(CLASSES), size=count, replace=False)]
    image = _background(rng, size)
    masks, boxes = [], []
    placed: list[tuple[float, float, float]] = []
    for label in labels:
        for _ in range(100):
            r = float(rng.uniform(0.17, 0.25) * size)
            cx, cy = (float(v) for v in rng.uniform(r + 1, size - r - 1, 2))
            if all(math.hypot(cx - px, cy - py) > r + pr + 2 for px, py, pr in placed):
                break
        placed.append((cx, cy, r))
        angle = float(rng.uniform(-MAX_ROTATION, MAX_ROTATION))
        colour = class_colour(rng, label)
        mask_img = Image.new("L", (size, size), 0)
        _draw_shape(ImageDraw.Draw(mask_img), CLASSES[label], cx, cy, r, angle, fill=255)
        mask = np.asarray(mask_img) > 127
        solid = Image.new("RGB", (size, size), colour)
        image.paste(solid, (0, 0), Image.fromarray((mask * 255).astype(np.uint8)))
        masks.append(mask)
        boxes.append((cx, cy, r, angle))
    # a later object may cover part of an earlier one: masks hold visible pixels only
    for k in range(len(masks) - 1):
        for later in masks[k + 1 :]:
            masks[k] = masks[k] & ~later
    return Sample(image=image, labels=labels, masks=np.stack(masks), boxes=np.array(boxes, dtype=np.float32))


def make_dataset(num_samples: int, seed: int = 0, num_objects: int | None = None) -> list[Sample]:
    """``num_samples`` samples with seeds ``seed, seed+1, ...``."""
    return [make_sample(seed + i, num_objects) for i in range(num_samples)]


#: Seeds at or above this are held out: the training script never draws them.
HELD_OUT_SEED = 10_000_000


def mask_boxes(masks: np.ndarray) -> np.ndarray:
    """The tight box of each mask: ``(N, H, W)`` bool → ``(N, 4)`` ``(x0, y0, x1, y1)`` in pixel edges.

    ``x0``/``y0`` is the left/top edge of the first column/row holding a mask pixel and ``x1``/``y1``
    the right/bottom edge of the last one (so a single pixel at ``(x, y)`` gives ``(x, y, x + 1, y + 1)``).
    The demo detector is trained on these boxes.

    Raises:
        ValueError: a mask is empty (an object wholly covered by a later one has no box).
    """
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim != 3:
        raise ValueError(f"masks must be (N, H, W), got shape {masks.shape}")
    boxes = np.zeros((len(masks), 4), dtype=np.float32)
    for k, mask in enumerate(masks):
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        if rows.size == 0:
            raise ValueError(f"mask {k} is empty: it has no box")
        boxes[k] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
    return boxes


def detection_targets(sample: Sample) -> tuple[list[int], np.ndarray]:
    """A sample's visible objects as detection targets: their labels and ``(N, 4)`` normalised
    ``(cx, cy, w, h)`` boxes (the tight box of each mask over the image side, as YOLOS predicts
    them). An object wholly covered by a later one is left out."""
    keep = [k for k in range(len(sample.labels)) if sample.masks[k].any()]
    corners = mask_boxes(sample.masks[keep]) if keep else np.zeros((0, 4), dtype=np.float32)
    height, width = sample.masks.shape[1:]
    scale = np.array([width, height, width, height], dtype=np.float32)
    x0, y0, x1, y1 = (corners / scale).T
    return [sample.labels[k] for k in keep], np.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], axis=1)
