"""Typed explanation results, and how they are stored on disk.

An :class:`Explanation` converts to a plain dict (:meth:`~Explanation.to_dict`), to its heat-map
as an array (``np.asarray(explanation)``), and saves to a folder of PNG, NPY and JSON files that
:meth:`~Explanation.load` reads back equal (``==``)::

    explanation.save("cat_gae")          # image.png, heatmap.png, overlay.png, mask.npy, ..., explanation.json
    again = Explanation.load("cat_gae")
    assert again == explanation
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from . import viz
from .placement import Placement

#: Version of the folder layout written by :meth:`Explanation.save`.
SAVE_FORMAT = 1
#: The file whose presence marks a complete saved explanation (written last).
SAVE_MANIFEST = "explanation.json"


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
        detection: detection models (YOLOS): the explained detection token's index, else ``None``;
            ``target``/``label``/``score`` are then its predicted class and probability.
        box: detection models: that detection's box ``(x0, y0, x1, y1)`` in the image's pixels (drawn
            by :meth:`overlay`), else ``None``.
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
    detection: int | None = None
    box: tuple[float, float, float, float] | None = None

    def __eq__(self, other) -> bool:
        """Equal when every field is: arrays compared element-wise, images pixel by pixel."""
        if not isinstance(other, Explanation):
            return NotImplemented
        arrays = ("mask", "heatmap", "token_relevance", "head_heatmaps")
        if any(not _same_array(getattr(self, a), getattr(other, a)) for a in arrays):
            return False
        plain = ("method", "target", "label", "score", "predicted", "params", "placement", "detection", "box")
        return all(getattr(self, a) == getattr(other, a) for a in plain) and _same_image(self.image, other.image)

    __hash__ = None  # mutable, like every dataclass with arrays

    def __repr__(self) -> str:
        """One line: method, target, label, score and the shapes (never the arrays themselves)."""
        parts = [f"method={self.method!r}", f"target={self.target!r}", f"label={self.label!r}"]
        if self.detection is not None:
            parts.insert(1, f"detection={self.detection}")
        parts.append(f"score={self.score:.4g}" if self.score is not None else "score=None")
        if self.predicted is not None and self.predicted != self.target:
            parts.append(f"predicted={self.predicted}")
        parts.append(f"mask={'x'.join(map(str, self.mask.shape))}")
        parts.append(f"heatmap={'x'.join(map(str, self.heatmap.shape))}")
        if self.image is not None:
            parts.append(f"image={self.image.width}x{self.image.height}")
        if self.params:
            parts.append(f"params={self.params!r}")
        return f"Explanation({', '.join(parts)})"

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        """``np.asarray(explanation)``: the ``(H, W)`` float32 heat-map (a copy only when asked or needed)."""
        heatmap = self.heatmap
        if dtype is not None and np.dtype(dtype) != heatmap.dtype:
            if copy is False:
                raise ValueError(f"the heat-map is {heatmap.dtype}; converting it to {np.dtype(dtype)} needs a copy")
            return heatmap.astype(dtype)
        return heatmap.copy() if copy else heatmap

    def to_dict(self) -> dict[str, Any]:
        """Every field by name: arrays as numpy arrays, ``image`` as the ``PIL.Image``, ``placement``
        as a dict of its fields (``None`` without one). Scalars and ``params`` as they are."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["placement"] = None if self.placement is None else dataclasses.asdict(self.placement)
        out["params"] = dict(self.params)
        return out

    def save(self, folder: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write the explanation to ``folder`` (created): PNG for people, NPY and JSON for :meth:`load`.

        Files: ``image.png`` (the input as explained), ``heatmap.png`` (8-bit grey view of the
        heat-map), ``overlay.png``, ``mask.npy``, ``heatmap.npy``, ``token_relevance.npy`` and
        ``head_heatmaps.npy`` (when present), and ``explanation.json`` (method, target, label, score,
        predicted, params, placement), written last: a folder without it is an unfinished save.

        Args:
            overwrite: replace an earlier save in ``folder``; without it a non-empty folder is refused.

        Returns:
            The folder's path.

        Raises:
            FileExistsError: ``folder`` is a file, or is not empty and ``overwrite`` is false.
        """
        folder = open_save_folder(folder, overwrite, SAVE_MANIFEST, "explanation")
        self.image.save(folder / "image.png")
        Image.fromarray(_to_uint8(self.heatmap), mode="L").save(folder / "heatmap.png")
        self.overlay().save(folder / "overlay.png")
        arrays = save_arrays(self, _ARRAY_FIELDS, folder)
        plain = {name: getattr(self, name) for name in _PLAIN_FIELDS}
        if self.detection is not None:
            plain["detection"] = self.detection
        if self.box is not None:  # a detection's box or a dense model's region
            plain["box"] = list(self.box)
        write_manifest(folder, SAVE_MANIFEST, {**plain}, self.params, self.placement, arrays)
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike) -> Explanation:
        """Read an explanation written by :meth:`save` (equal to the one saved).

        Raises:
            FileNotFoundError: no such folder, or no ``explanation.json`` in it (not a saved
                explanation, or a save that did not finish).
            ValueError: a folder written by a newer version of the package.
        """
        folder = Path(folder)

        def missing(folder: Path) -> str:
            if not folder.is_dir():
                return "no such folder"
            return f"it has no {SAVE_MANIFEST} (not a saved explanation, or an unfinished save)"

        manifest, arrays, placement = read_manifest(folder, SAVE_MANIFEST, "an explanation", missing)
        with Image.open(folder / "image.png") as image:
            image.load()
        box = manifest.get("box")
        return cls(
            image=image,
            placement=placement,
            params={key: _tuples(value) for key, value in manifest["params"].items()},  # text=, region= tuples
            detection=manifest.get("detection"),
            box=None if box is None else tuple(box),
            **{name: manifest[name] for name in _PLAIN_FIELDS},
            **{name: arrays.get(name) for name in _ARRAY_FIELDS},
        )

    def heatmap_at(self, size: tuple[int, int] | None = None) -> np.ndarray:
        """The heat-map drawn at ``size = (width, height)`` (default: the image's full size)."""
        if self.placement is None:
            raise ValueError("this explanation has no placement (it was made without an image)")
        return self.placement.heatmap(self.mask, size)

    def overlay(self, colormap: str = "jet", alpha: float = 0.5, colorbar: bool = False) -> Image.Image:
        """The heat-map, colour-mapped with a matplotlib ``colormap``, blended onto the image.

        The overlay has the heat-map's size: the image's own, or a bounded one for very large
        images (the image is scaled down to it first, so memory stays bounded). A detection's
        box is drawn on it, with its label and score.
        """
        image = self.image
        height, width = self.heatmap.shape
        if image.size != (width, height):
            image = image.resize((width, height), Image.BILINEAR, reducing_gap=3.0)
        blended = viz.overlay(image, self.heatmap, colormap, alpha, colorbar)  # colorbar: a bar at the right
        if self.box is not None:
            from PIL import ImageDraw

            sx, sy = width / self.image.width, height / self.image.height
            x0, y0, x1, y1 = self.box
            draw = ImageDraw.Draw(blended)
            line = max(1, round(min(width, height) / 150))
            draw.rectangle([x0 * sx, y0 * sy, x1 * sx, y1 * sy], outline=(255, 255, 255), width=line)
            caption = " ".join(str(p) for p in (self.label, None if self.score is None else f"{self.score:.2f}") if p is not None)
            if caption:
                draw.text((x0 * sx + line + 1, y0 * sy + line), caption, fill=(255, 255, 255))
        return blended

    @property
    def title(self) -> str:
        """Short description: method, label and score."""
        parts = [self.method]
        if self.detection is not None:
            parts.append(f"detection {self.detection}")
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

#: Fields stored as ``.npy`` files and as JSON values by :meth:`Explanation.save`.
_ARRAY_FIELDS = ("mask", "heatmap", "token_relevance", "head_heatmaps")
_PLAIN_FIELDS = ("method", "target", "label", "score", "predicted")


def _to_uint8(values: np.ndarray) -> np.ndarray:
    """Values in ``[0, 1]`` → 8-bit grey levels (rounded)."""
    return np.round(np.clip(values, 0.0, 1.0) * 255).astype(np.uint8)


def _tuples(value):
    """JSON lists back to the tuples a :class:`Placement` and ``params`` hold."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def _same_image(a: Image.Image | None, b: Image.Image | None) -> bool:
    """Same mode, size and pixels (PIL's own ``==`` also compares ``info``, such as a JPEG's EXIF)."""
    if a is None or b is None:
        return a is b
    return a.mode == b.mode and a.size == b.size and a.tobytes() == b.tobytes()


def _same_array(a, b) -> bool:
    if a is None or b is None:
        return a is b
    return a.shape == b.shape and bool(np.array_equal(a, b))


def open_save_folder(folder: str | os.PathLike, overwrite: bool, manifest: str, what: str) -> Path:
    """Create ``folder`` for a save and remove an earlier save's ``manifest`` from it (an interrupted
    overwrite must not look complete).

    Raises:
        FileExistsError: ``folder`` is a file, or is not empty and ``overwrite`` is false.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise FileExistsError(f"{str(folder)!r} is a file; pass a folder to save the {what} in")
    if folder.is_dir() and any(folder.iterdir()) and not overwrite:
        raise FileExistsError(f"{str(folder)!r} is not empty; pass overwrite=True to replace what is there, or another folder")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / manifest).unlink(missing_ok=True)
    return folder


def save_arrays(owner, names: tuple[str, ...], folder: Path) -> list[str]:
    """Save each of ``owner``'s array attributes ``names`` that is not ``None`` as ``folder/NAME.npy``;
    the names saved."""
    saved = []
    for name in names:
        value = getattr(owner, name)
        if value is not None:
            np.save(folder / f"{name}.npy", value, allow_pickle=False)
            saved.append(name)
    return saved


def write_manifest(folder: Path, name: str, fields: dict, params: dict, placement, arrays: list[str]) -> None:
    """Write a save's manifest as ``folder/name`` atomically (the last file of a save): the format,
    ``fields``, ``params``, ``placement`` (a :class:`Placement` or ``None``) and the saved ``arrays``."""
    manifest = {
        "format": SAVE_FORMAT,
        **fields,
        "params": params,
        "placement": None if placement is None else dataclasses.asdict(placement),
        "arrays": arrays,
    }
    temporary = folder / (name + ".tmp")
    temporary.write_text(json.dumps(manifest, indent=2))
    os.replace(temporary, folder / name)


def read_manifest(folder: Path, name: str, what: str, missing: Callable[[Path], str]) -> tuple[dict, dict, Placement | None]:
    """Read a save written with :func:`write_manifest`: ``(manifest, arrays by name, placement)``.

    Raises:
        FileNotFoundError: ``folder/name`` is missing; the message says why (``missing(folder)``).
        ValueError: a folder written by a newer version of the package.
    """
    path = folder / name
    if not path.is_file():
        raise FileNotFoundError(f"cannot load {what} from {str(folder)!r}: {missing(folder)}")
    manifest = json.loads(path.read_text())
    if manifest.get("format", 0) > SAVE_FORMAT:
        raise ValueError(
            f"{str(folder)!r} was saved in format {manifest['format']}; this version of hf_vit_rollout reads up to "
            f"{SAVE_FORMAT} (upgrade the package)"
        )
    arrays = {key: np.load(folder / f"{key}.npy", allow_pickle=False) for key in manifest["arrays"]}
    placement = manifest["placement"]
    if placement is not None:
        placement = Placement(**{k: _tuples(v) for k, v in placement.items()})
    return manifest, arrays, placement
