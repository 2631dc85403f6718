"""Typed explanation results."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from . import viz
from .placement import Placement


@dataclass(eq=False)
class Explanation:
    """Where the model looked, for one image and one target.

    Attributes:
        image: the input as an RGB ``PIL.Image`` (original size).
        mask: ``(grid_h, grid_w)`` float32 patch relevance, scaled so its maximum is 1 (all zeros if
            no patch received relevance).
        heatmap: ``(H, W)`` float32 mask placed (bilinear between patch centres) over exactly the
            pixels the model saw, zero elsewhere (cut away by a centre crop, padding, or a remainder
            strip narrower than a patch). ``(H, W)`` is the image's size, or for images larger than
            :data:`~hf_vit_rollout.placement.HEATMAP_MAX_PIXELS` that size scaled down (aspect
            kept) unless the call asked for ``full_resolution=True``; :meth:`heatmap_at` draws it at
            any size.
        method: the method's registry name (``"rollout"``, ``"grad_rollout"``, ``"gae"``, ``"flow"``).
        target: explained class index, or ``None`` for class-agnostic methods.
        label: name of ``target`` (or of the predicted class for class-agnostic methods), if the model
            has a classifier.
        score: probability of ``label`` (softmax, or sigmoid for multi-label models), if any.
        predicted: the model's top class index, if it has a classifier.
        token_relevance: ``(N,)`` float32 raw relevance of every token, prefix tokens included.
        params: the settings used (head_fusion, discard_ratio, ...).
        placement: where the model's patch grid lies on ``image`` (``None`` for explanations made
            without an image, e.g. from ``relevance_maps``).
        head_heatmaps: ``(heads, H, W)`` float32 per-head heat-maps, placed like ``heatmap`` (method
            ``"attention"`` only; see :meth:`plot_heads`), else ``None``.
    """

    image: Image.Image
    mask: np.ndarray
    heatmap: np.ndarray
    method: str
    target: int | None = None
    label: str | None = None
    score: float | None = None
    predicted: int | None = None
    token_relevance: np.ndarray | None = None
    params: dict[str, Any] = field(default_factory=dict)
    placement: Placement | None = field(default=None, repr=False)
    head_heatmaps: np.ndarray | None = field(default=None, repr=False)

    def __eq__(self, other) -> bool:
        """Equal when every field is: arrays compared element-wise, images pixel by pixel."""
        if not isinstance(other, Explanation):
            return NotImplemented
        arrays = ("mask", "heatmap", "token_relevance", "head_heatmaps")
        if any(not _same_array(getattr(self, a), getattr(other, a)) for a in arrays):
            return False
        plain = ("method", "target", "label", "score", "predicted", "params", "placement")
        return all(getattr(self, a) == getattr(other, a) for a in plain) and self.image == other.image

    __hash__ = None  # mutable, like every dataclass with arrays

    def heatmap_at(self, size: tuple[int, int] | None = None) -> np.ndarray:
        """The heat-map drawn at ``size = (width, height)`` (default: the image's full size)."""
        if self.placement is None:
            raise ValueError("this explanation has no placement (it was made without an image)")
        return self.placement.heatmap(self.mask, size)

    def overlay(self, colormap: str = "jet", alpha: float = 0.5, colorbar: bool = False) -> Image.Image:
        """The heat-map, colour-mapped with a matplotlib ``colormap``, blended onto the image.

        The overlay has the heat-map's size: the image's own, or a bounded one for very large
        images (the image is scaled down to it first, so memory stays bounded).
        """
        image = self.image
        height, width = self.heatmap.shape
        if image.size != (width, height):
            image = image.resize((width, height), Image.BILINEAR, reducing_gap=3.0)
        return viz.overlay(image, self.heatmap, colormap, alpha, colorbar)  # colorbar: a bar at the right

    @property
    def title(self) -> str:
        """Short description: method, label and score."""
        parts = [self.method]
        if self.label is not None:
            parts.append(self.label if self.target is not None else f"pred: {self.label}")
        if self.score is not None:
            parts.append(f"{self.score:.2f}")
        return " · ".join(parts)

    def plot(self, colormap: str = "jet", alpha: float = 0.5, axes=None):
        """Image, heat-map with colour bar, and overlay side by side (matplotlib).

        Args:
            axes: three matplotlib axes to draw on; a new figure is made if ``None``.

        Returns:
            The matplotlib ``Figure``.
        """
        import matplotlib.pyplot as plt

        if axes is None:
            fig, axes = plt.subplots(1, 3, figsize=(10, 3.6), constrained_layout=True)
        else:
            fig = axes[0].figure
        axes[0].imshow(self.image)
        axes[0].set_title("image")
        shown = axes[1].imshow(self.heatmap, cmap=colormap, vmin=0, vmax=1)
        axes[1].set_title("heat-map")
        fig.colorbar(shown, ax=axes[1], fraction=0.046, pad=0.04)
        axes[2].imshow(self.overlay(colormap, alpha))
        axes[2].set_title(self.title)
        for ax in axes:
            ax.axis("off")
        return fig

    def plot_heads(self, colormap: str = "inferno", alpha: float = 0.6, ncols: int = 4):
        """Every head of the explained layer in one figure, each blended onto the image.

        Raises:
            ValueError: the explanation carries no per-head maps (only ``method="attention"`` does).
        """
        if self.head_heatmaps is None:
            raise ValueError(
                f"this {self.method!r} explanation has no per-head maps; explain with method='attention' "
                "(and head=None) to plot every head of a layer"
            )
        layer = self.params.get("layer")
        title = f"attention, layer {layer}" if layer is not None else "attention"
        image = self.image
        height, width = self.head_heatmaps.shape[-2:]
        if image.size != (width, height):  # heat-maps of very large images are at a bounded size
            image = image.resize((width, height), Image.BILINEAR, reducing_gap=3.0)
        return viz.plot_heads(self.head_heatmaps, image, ncols, colormap, alpha, title)

def _same_array(a, b) -> bool:
    if a is None or b is None:
        return a is b
    return a.shape == b.shape and bool(np.array_equal(a, b))
