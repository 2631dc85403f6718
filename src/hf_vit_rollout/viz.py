"""Colour maps and blending: heat-maps as RGB arrays and PIL overlays."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

#: Rows blended at a time by :func:`overlay` (bounds its temporary memory for huge images).
BAND_ROWS = 512


def colour_table(colormap: str = "jet") -> np.ndarray:
    """``(N, 3)`` uint8 RGB entries of a matplotlib colormap (its own lookup table).

    Raises:
        ValueError: for a colormap name matplotlib does not know (the message lists how to find one).
    """
    import matplotlib

    try:
        cmap = matplotlib.colormaps[colormap]
    except KeyError:
        raise ValueError(
            f"unknown colormap {colormap!r}; use a matplotlib name such as 'jet', 'viridis', 'inferno', 'turbo' "
            "(see matplotlib.colormaps)"
        ) from None
    return np.round(cmap(np.arange(cmap.N))[:, :3] * 255).astype(np.uint8)


def _table_index(values: np.ndarray, entries: int) -> np.ndarray:
    """matplotlib's own lookup: ``floor(x·N)``, with ``x = 1`` in the last entry."""
    index = (np.clip(values, 0.0, 1.0) * entries).astype(np.int64)
    return np.minimum(index, entries - 1, out=index)


def colorize(heatmap: np.ndarray, colormap: str = "jet") -> np.ndarray:
    """``(H, W)`` values in ``[0, 1]`` → ``(H, W, 3)`` uint8 RGB through a matplotlib colormap
    (the same colours as ``cmap(x)``, from its lookup table, without float64 copies)."""
    table = colour_table(colormap)
    return table[_table_index(np.asarray(heatmap, dtype=np.float32), len(table))]


def overlay(
    image: Image.Image, heatmap: np.ndarray, colormap: str = "jet", alpha: float = 0.5, colorbar: bool = False
) -> Image.Image:
    """Blend a colour-mapped ``(H, W)`` heat-map onto an RGB image of the same size.

    Args:
        image: RGB ``PIL.Image`` of size ``(W, H)``.
        heatmap: ``(H, W)`` float array in ``[0, 1]``.
        colormap: matplotlib colormap name.
        alpha: weight of the heat-map, in ``[0, 1]``.
        colorbar: add a colour bar on the right (see :func:`add_colorbar`).

    Returns:
        RGB ``PIL.Image`` of size ``(W, H)``, wider with a colour bar.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    if (image.height, image.width) != heatmap.shape:
        raise ValueError(f"heat-map shape {heatmap.shape} does not match image size {(image.height, image.width)}")
    base = np.asarray(image.convert("RGB"))
    table = colour_table(colormap).astype(np.float32)
    out = np.empty_like(base)
    for top in range(0, base.shape[0], BAND_ROWS):
        rows = slice(top, top + BAND_ROWS)
        colour = table[_table_index(np.asarray(heatmap[rows], dtype=np.float32), len(table))]
        blended = (1.0 - alpha) * base[rows].astype(np.float32) + alpha * colour
        out[rows] = np.round(blended).astype(np.uint8)
    blended_image = Image.fromarray(out)
    return add_colorbar(blended_image, colormap) if colorbar else blended_image


def _font(size: int):
    """PIL's built-in font at ``size`` pixels (the fixed bitmap font on Pillow builds without FreeType)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # pragma: no cover - old Pillow or no FreeType
        return ImageFont.load_default()


def add_colorbar(image: Image.Image, colormap: str = "jet", ticks=(0.0, 0.5, 1.0)) -> Image.Image:
    """``image`` with a vertical colour bar on its right: the colormap from 0 (bottom) to 1 (top).

    Heat-maps are scaled so that their maximum is 1, so the bar reads as relevance relative to the
    map's largest value. The bar is as tall as the image; labels scale with it (at least 8 px).

    Args:
        image: an overlay (any mode; drawn as RGB).
        colormap: the matplotlib colormap the overlay was drawn with.
        ticks: values in ``[0, 1]`` to label.

    Returns:
        RGB ``PIL.Image`` of the image's height, wider by the bar and its labels.
    """
    image = image.convert("RGB")
    height = image.height
    pad = max(2, round(height * 0.03))
    bar_width = max(5, round(height * 0.06))
    font = _font(max(8, min(height // 9, 20)))
    measure = ImageDraw.Draw(image)
    labels = [f"{t:g}" for t in ticks]
    boxes = [measure.textbbox((0, 0), text, font=font) for text in labels]
    text_width = max(box[2] - box[0] for box in boxes)
    text_height = max(box[3] - box[1] for box in boxes)
    canvas = Image.new("RGB", (image.width + 3 * pad + bar_width + text_width + pad, height), "white")
    canvas.paste(image, (0, 0))
    top, bottom = text_height // 2 + 1, height - text_height // 2 - 2  # room for the end labels
    span = max(bottom - top, 1)
    values = np.linspace(1.0, 0.0, span + 1, dtype=np.float32)[:, None].repeat(bar_width, axis=1)
    left = image.width + pad * 2
    canvas.paste(Image.fromarray(colorize(values, colormap)), (left, top))
    draw = ImageDraw.Draw(canvas)
    draw.rectangle((left - 1, top - 1, left + bar_width, bottom + 1), outline=(80, 80, 80))
    for tick, text, box in zip(ticks, labels, boxes):
        y = bottom - float(np.clip(tick, 0.0, 1.0)) * span
        draw.line((left + bar_width, y, left + bar_width + pad - 1, y), fill=(80, 80, 80))
        draw.text((left + bar_width + pad, y - (box[1] + box[3]) / 2), text, fill=(0, 0, 0), font=font)
    return canvas


def plot_grid(explanations, ncols: int = 4, colormap: str = "jet", alpha: float = 0.5, titles=None, size: float = 2.6):
    """Overlays of several explanations side by side (e.g. methods, targets or settings compared).

    Args:
        explanations: a sequence of :class:`~hf_vit_rollout.Explanation`.
        ncols: panels per row.
        titles: one title per panel; default each explanation's ``title``.

    Returns:
        The matplotlib ``Figure``.
    """
    import matplotlib.pyplot as plt

    explanations = list(explanations)
    if not explanations:
        raise ValueError("plot_grid needs at least one explanation")
    ncols = max(1, min(ncols, len(explanations)))
    nrows = -(-len(explanations) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows + 0.3), squeeze=False)
    titles = titles or [e.title for e in explanations]
    for ax in axes.ravel():
        ax.axis("off")
    for ax, explanation, title in zip(axes.ravel(), explanations, titles):
        ax.imshow(explanation.overlay(colormap, alpha))
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    return fig


def save_gif(frames, path, duration_ms: int = 600, size: int | None = 256) -> None:
    """Write PIL frames (e.g. overlays over a sweep of discard ratios) as a looping GIF."""
    frames = [f.convert("RGB") for f in frames]
    if not frames:
        raise ValueError("save_gif needs at least one frame")
    if size is not None:
        frames = [f.resize((size, round(size * f.height / f.width)), Image.NEAREST) for f in frames]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=duration_ms, loop=0)


def plot_heads(
    head_maps,
    image: Image.Image | None = None,
    ncols: int = 4,
    colormap: str = "inferno",
    alpha: float = 0.6,
    title: str | None = None,
):
    """Every head of one layer in one figure (the DINO-style per-head attention maps).

    Args:
        head_maps: ``(H, grid_h, grid_w)`` array, one patch map per head (e.g. the output token's
            attention row of each head, from :func:`hf_vit_rollout.methods.head_maps`).
        image: if given, each map is scaled to ``[0, 1]``, upsampled (bilinear) unless it already
            has the image's size (e.g. heat-maps placed on the image by the explainer), and blended
            onto it; else each map is shown as is, with its own colour scale.
        ncols: panels per row.
        colormap: matplotlib colormap name.
        alpha: weight of the map in the overlay.
        title: figure title.

    Returns:
        The matplotlib ``Figure``.
    """
    import matplotlib.pyplot as plt

    maps = np.asarray(head_maps, dtype=np.float32)
    if maps.ndim != 3 or maps.shape[0] == 0:
        raise ValueError(f"head_maps must be a (heads, grid_h, grid_w) array, got shape {maps.shape}")
    heads = maps.shape[0]
    ncols = max(1, min(ncols, heads))
    nrows = -(-heads // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.2 * ncols, 2.2 * nrows + 0.4), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for head, (ax, grid) in enumerate(zip(axes.ravel(), maps)):
        if image is None:
            ax.imshow(grid, cmap=colormap)
        else:
            low, high = float(grid.min()), float(grid.max())
            scaled = (grid - low) / (high - low) if high > low else np.zeros_like(grid)
            if scaled.shape != (image.height, image.width):
                scaled = np.asarray(Image.fromarray(scaled).resize(image.size, Image.BILINEAR))
            ax.imshow(overlay(image, np.clip(scaled, 0.0, 1.0), colormap, alpha))
        ax.set_title(f"head {head}", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
