"""Video: VideoMAE and ViViT, global attention over tubelets; maps with a time axis.

Both cut a clip of ``T`` frames into ``t × p × p`` tubelets with one ``Conv3d`` and flatten its
``(T', h, w)`` output grid (``T' = T / t``), so token ``k`` of the tubelets is tubelet
``(k // (h·w), (k // w) % h, k % w)``: time-major, then row-major within a frame. Every layer
attends globally over all tubelets (and ViViT's class token), exactly like a ViT over more
tokens, so every method works unchanged; only the token grid gains a time axis.

* **VideoMAE** (``VideoMAEForVideoClassification``, ``VideoMAEModel``): no class token. With
  ``use_mean_pooling`` (the fine-tuned checkpoints) the explained output is the mean of all
  tubelet tokens; without it the classifier reads token 0 (the top-left tubelet of the first
  frames), which is then the explained row.
* **ViViT** (``VivitForVideoClassification``, ``VivitModel``): a class token before the tubelets;
  the classifier reads it.
* **Input**: one clip is a list of frames (paths, PIL images or ``(H, W, 3)`` arrays) or a
  ``(T, H, W, 3)`` array/tensor; a list of clips is a batch. ``T`` must be the checkpoint's
  ``num_frames`` (its position embeddings are fixed to it): sample that many frames first.
* **Output**: a :class:`VideoExplanation` with ``mask (T', h, w)`` (scaled by the clip's maximum,
  so frames compare), one heat-map per input frame (frame ``i`` shows tubelet ``i // t``),
  per-frame overlays, an animated GIF and a frame-strip ``plot()``; ``save(folder)`` and
  ``VideoExplanation.load(folder)`` store it as PNG frames, NPY arrays and a JSON manifest.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image

from ..errors import InputError
from ..explanation import (
    _same_array,
    _same_image,
    open_save_folder,
    read_manifest,
    save_arrays,
    write_manifest,
)
from ..placement import Placement
from ..tokens import OneStepPerLayer, _pair


@dataclass(frozen=True)
class VideoLayout(OneStepPerLayer):
    """``[prefix tokens, T' × h × w tubelets]``, time-major.

    Attributes:
        time: ``T'`` tubelets along time; grid_size: ``(h, w)``.
    """

    time: int
    grid_size: tuple[int, int]
    num_prefix_tokens: int
    cls_index: int | None
    pooling: str
    hierarchical: ClassVar[bool] = False

    @property
    def num_tokens(self) -> int:
        return self.num_prefix_tokens + self.time * self.grid_size[0] * self.grid_size[1]

    def output_weights(self, dtype=torch.float32, device=None) -> torch.Tensor:
        """One-hot on the class token (ViViT) or token 0 (VideoMAE without mean pooling); else uniform."""
        weights = torch.zeros(self.num_tokens, dtype=dtype, device=device)
        if self.pooling == "cls":
            weights[self.cls_index] = 1.0
        elif self.pooling == "first":
            weights[self.num_prefix_tokens] = 1.0
        else:
            weights[self.num_prefix_tokens :] = 1.0 / (self.num_tokens - self.num_prefix_tokens)
        return weights

    def patch_relevance(self, relevance: torch.Tensor) -> torch.Tensor:
        """``(B, N)`` → ``(B, T', h, w)``."""
        return relevance[:, self.num_prefix_tokens :].reshape(-1, self.time, *self.grid_size)

    def attention_mismatch(self, layer: int, attention: torch.Tensor) -> str | None:
        if attention.shape[-1] == self.num_tokens:
            return None
        return (
            f"layer {layer} attends over {attention.shape[-1]} tokens, but the config describes "
            f"{self.num_prefix_tokens} prefix tokens + {self.time}×{self.grid_size[0]}×{self.grid_size[1]} tubelets"
        )

    def layer_map(self, method_map: Callable, layer: int, attention: torch.Tensor, grad, settings: tuple) -> torch.Tensor:
        return method_map(attention, grad, *settings, self.cls_index)



@dataclass(eq=False)
class VideoExplanation:
    """Where a video model looked, for one clip and one target.

    Attributes:
        frames: the input frames as RGB ``PIL.Image`` (original size).
        mask: ``(T', h, w)`` float32 tubelet relevance, scaled so the clip's maximum is 1.
        heatmaps: ``(T, H, W)`` float32, one heat-map per input frame (frame ``i`` shows tubelet
            ``i // tubelet_size``), placed over the pixels the model saw.
        method, target, label, score, predicted, token_relevance, params: as for
            :class:`~hf_vit_rollout.Explanation`.
        tubelet_size: frames per tubelet ``t``.
        placement: where the model's patch grid lies on each frame.
    """

    frames: list
    mask: np.ndarray
    heatmaps: np.ndarray
    method: str
    target: int | None = None
    label: str | None = None
    score: float | None = None
    predicted: int | None = None
    token_relevance: np.ndarray | None = None
    params: dict[str, Any] = field(default_factory=dict)
    tubelet_size: int = 1
    placement: Placement | None = field(default=None, repr=False)

    def __eq__(self, other) -> bool:
        """Equal when every field is: arrays compared element-wise, frames pixel by pixel."""
        if not isinstance(other, VideoExplanation):
            return NotImplemented
        if any(not _same_array(getattr(self, a), getattr(other, a)) for a in _VIDEO_ARRAYS):
            return False
        plain = (*_VIDEO_PLAIN, "params", "placement")
        return (all(getattr(self, a) == getattr(other, a) for a in plain) and len(self.frames) == len(other.frames)
                and all(_same_image(a, b) for a, b in zip(self.frames, other.frames)))

    __hash__ = None  # mutable, like every dataclass with arrays

    def save(self, folder: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write the explanation to ``folder`` (created): PNG and GIF for people, NPY and JSON for :meth:`load`.

        Files: ``frames/frame_000.png``, ... (the input frames as explained), ``overlay.gif`` (the
        animated overlay), ``mask.npy`` ``(T', h, w)``, ``heatmaps.npy`` ``(T, H, W)``,
        ``token_relevance.npy`` (when present), and ``video_explanation.json`` (method, target, label,
        score, predicted, tubelet size, params, placement), written last: a folder without it is an
        unfinished save.

        Args:
            overwrite: replace an earlier save in ``folder``; without it a non-empty folder is refused.

        Returns:
            The folder's path.

        Raises:
            FileExistsError: ``folder`` is a file, or is not empty and ``overwrite`` is false.
        """
        folder = open_save_folder(folder, overwrite, VIDEO_MANIFEST, "video explanation")
        frames = folder / "frames"
        if frames.is_dir():
            for old in frames.glob("frame_*.png"):
                old.unlink()
        frames.mkdir(exist_ok=True)
        for i, frame in enumerate(self.frames):
            frame.save(frames / f"frame_{i:03d}.png")
        self.save_gif(folder / "overlay.gif")
        arrays = save_arrays(self, _VIDEO_ARRAYS, folder)
        plain = {name: getattr(self, name) for name in _VIDEO_PLAIN}
        write_manifest(folder, VIDEO_MANIFEST, {**plain, "frames": len(self.frames)}, self.params, self.placement, arrays)
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike) -> VideoExplanation:
        """Read a video explanation written by :meth:`save` (equal to the one saved).

        Raises:
            FileNotFoundError: no such folder, or no ``video_explanation.json`` in it (not a saved
                video explanation, or a save that did not finish).
            ValueError: a folder written by a newer version of the package.
        """
        folder = Path(folder)

        def missing(folder: Path) -> str:
            if not folder.is_dir():
                return "no such folder"
            if (folder / "explanation.json").is_file():
                return "it holds an image explanation (load it with Explanation.load)"
            return f"it has no {VIDEO_MANIFEST} (not a saved video explanation, or an unfinished save)"

        manifest, arrays, placement = read_manifest(folder, VIDEO_MANIFEST, "a video explanation", missing)
        frames = []
        for i in range(manifest["frames"]):
            with Image.open(folder / "frames" / f"frame_{i:03d}.png") as frame:
                frame.load()
            frames.append(frame)
        return cls(
            frames=frames,
            params=manifest["params"],
            placement=placement,
            **{name: manifest[name] for name in _VIDEO_PLAIN},
            **{name: arrays.get(name) for name in _VIDEO_ARRAYS},
        )

    def __repr__(self) -> str:
        shape = "x".join(map(str, self.mask.shape))
        return (
            f"VideoExplanation(method={self.method!r}, target={self.target!r}, label={self.label!r}, "
            f"score={'None' if self.score is None else f'{self.score:.4g}'}, frames={len(self.frames)}, mask={shape})"
        )

    @property
    def title(self) -> str:
        parts = [self.method]
        if self.label is not None:
            parts.append(self.label if self.target is not None else f"pred: {self.label}")
        if self.score is not None:
            parts.append(f"{self.score:.2f}")
        return " · ".join(parts)

    def overlays(self, colormap: str = "jet", alpha: float = 0.5) -> list[Image.Image]:
        """One overlay per input frame (the frame's heat-map blended onto it)."""
        from .. import viz

        out = []
        for frame, heat in zip(self.frames, self.heatmaps):
            height, width = heat.shape
            shown = frame if frame.size == (width, height) else frame.resize((width, height), Image.BILINEAR)
            out.append(viz.overlay(shown, heat, colormap, alpha, False))
        return out

    def save_gif(self, path: str | os.PathLike | io.BytesIO, duration_ms: int = 120, colormap: str = "jet", alpha: float = 0.5):
        """Write the overlays as an animated GIF (looping), ``duration_ms`` per frame; returns ``path``."""
        frames = self.overlays(colormap, alpha)
        frames[0].save(path, format="GIF", save_all=True, append_images=frames[1:], duration=duration_ms, loop=0)
        return path

    def plot(self, colormap: str = "jet", alpha: float = 0.5, max_columns: int = 8):
        """A frame strip: the first frame of each tubelet (top) and its overlay (bottom), at most
        ``max_columns`` tubelets evenly spaced. Returns the matplotlib ``Figure``."""
        import matplotlib.pyplot as plt

        time = self.mask.shape[0]
        shown = sorted({round(i) for i in np.linspace(0, time - 1, min(time, max_columns))})
        overlays = self.overlays(colormap, alpha)
        fig, axes = plt.subplots(2, len(shown), figsize=(2.2 * len(shown), 4.6), squeeze=False, constrained_layout=True)
        for column, tubelet in enumerate(shown):
            frame = tubelet * self.tubelet_size
            axes[0, column].imshow(self.frames[frame])
            axes[0, column].set_title(f"frame {frame}")
            axes[1, column].imshow(overlays[frame])
            axes[1, column].set_title(f"tubelet {tubelet}")
        for ax in axes.ravel():
            ax.axis("off")
        fig.suptitle(self.title)
        return fig


#: The file whose presence marks a complete saved video explanation (written last by ``save``).
VIDEO_MANIFEST = "video_explanation.json"
#: Fields stored as ``.npy`` files and as JSON values by :meth:`VideoExplanation.save`.
_VIDEO_ARRAYS = ("mask", "heatmaps", "token_relevance")
_VIDEO_PLAIN = ("method", "target", "label", "score", "predicted", "tubelet_size")


def _is_frame(item) -> bool:
    if isinstance(item, (Image.Image, str, os.PathLike)):
        return True
    return hasattr(item, "ndim") and item.ndim in (2, 3)


def video_sources(videos) -> tuple[list, bool]:
    """Inputs → ``(list of clips, was_single)``: a clip is a ``(T, H, W, 3)`` array, a list of frames or
    the path of a video file (:func:`~hf_vit_rollout.videos.read_video`)."""
    from ..videos import is_video_file

    if is_video_file(videos):
        return [videos], True
    if isinstance(videos, (list, tuple)) and videos and all(is_video_file(item) for item in videos):
        return list(videos), False
    if hasattr(videos, "ndim"):
        if videos.ndim == 4:
            return [videos], True
        if videos.ndim == 5:
            return list(videos), False
        raise InputError(
            f"a video is a (T, H, W, 3) array or a list of frames; got an array of shape {tuple(videos.shape)}"
        )
    if isinstance(videos, (list, tuple)) and videos:
        if all(_is_frame(item) for item in videos):
            return [list(videos)], True
        if all(isinstance(item, (list, tuple)) or getattr(item, "ndim", 0) == 4 for item in videos):
            return list(videos), False
    raise InputError(
        "a video model takes a clip (a (T, H, W, 3) array, a list of frames: paths, PIL images or (H, W, 3) "
        f"arrays, or a video file's path) or a list of clips; got {type(videos).__name__}"
    )


class VideoFamily:
    model_types = ("videomae", "vivit")
    refused = False
    input_shape = "(B, T, C, H, W)"

    def check(self, config) -> None:
        """Every VideoMAE and ViViT checkpoint is explained."""

    @staticmethod
    def _tubelet(config) -> tuple[int, int, int]:
        if getattr(config, "model_type", None) == "vivit":
            t, ph, pw = config.tubelet_size
            return int(t), int(ph), int(pw)
        ph, pw = _pair(config.patch_size)
        return int(config.tubelet_size), ph, pw

    def layout(self, config, image_size, held=None, inputs=None) -> VideoLayout:
        t, ph, pw = self._tubelet(config)
        grid = (int(image_size[0]) // ph, int(image_size[1]) // pw)
        time = int(config.num_frames) // t
        if config.model_type == "vivit":
            return VideoLayout(time, grid, 1, 0, "cls")
        pooling = "mean" if getattr(config, "use_mean_pooling", True) else "first"
        return VideoLayout(time, grid, 0, None, pooling)

    def patch_size(self, config) -> tuple[int, int]:
        return self._tubelet(config)[1:]

    def attention_setup(self, vision_root):
        from ..window_capture import attention_setup

        return attention_setup(vision_root, vision_root.config.model_type)

    def call_kwargs(self, vision_root, pixel_values: torch.Tensor) -> dict:
        return {}

    sources = staticmethod(video_sources)

    def prepare(self, explainer, source, target, where):
        """One clip → a :class:`~hf_vit_rollout.stages.PreparedImage` with ``(T, C, H, W)`` pixels
        and the list of frames as its image."""
        from ..images import load_image
        from ..stages import PreparedImage

        config = explainer.model.config
        where = where.replace("images[", "videos[")
        if isinstance(source, (str, os.PathLike)):  # a video file: num_frames taken, evenly spaced
            from ..videos import read_video

            source = read_video(source, int(config.num_frames), f"{where} ({os.fspath(source)!r})")
        frames = list(source) if not hasattr(source, "ndim") else [f for f in source]
        frames = [load_image(f.numpy() if isinstance(f, torch.Tensor) else f, f"{where} frame {i}") for i, f in enumerate(frames)]
        if len(frames) != int(config.num_frames):
            raise InputError(
                f"{where} has {len(frames)} frames; this {type(explainer.model).__name__} takes exactly "
                f"{config.num_frames} (num_frames in its config; its position embeddings are fixed to it). Sample "
                f"{config.num_frames} frames, e.g. frames[i] for i in numpy.linspace(0, len(frames) - 1, "
                f"{config.num_frames}).round().astype(int)"
            )
        if len({f.size for f in frames}) != 1:
            raise InputError(f"the frames of {where} differ in size ({sorted({f.size for f in frames})}); give frames of one size")
        try:
            pixel_values = explainer.image_processor([frames], return_tensors="pt")["pixel_values"][0]
        except Exception as exc:
            raise ValueError(f"the image processor could not prepare {where}: {exc}") from exc
        layout = self.layout(config, tuple(pixel_values.shape[-2:]))
        placement = Placement.of(explainer.image_processor, frames[0].size, self.patch_size(config), layout.grid_size)
        return PreparedImage(frames, pixel_values, placement, target)

    def results(self, explainer, prepared, passed, request, index):
        """One :class:`VideoExplanation` per explained target (a list with ``top_k``)."""
        from ..stages import _mask  # the stages import the families

        layout = self.layout(explainer.model.config, tuple(prepared.pixel_values.shape[-2:]))
        maps = layout.patch_relevance(passed.relevance).clamp(min=0).numpy()
        tubelet = self._tubelet(explainer.model.config)[0]
        size = prepared.placement.output_size(request.full_resolution)
        probabilities = passed.probabilities
        predicted = None if probabilities is None else int(probabilities.argmax())
        results = []
        for rank, target in enumerate(passed.explained):
            mask = _mask(maps[rank], index)
            last = len(mask) - 1  # frames past the last whole tubelet show the last one
            heatmaps = np.stack([prepared.placement.heatmap(mask[min(i // tubelet, last)], size) for i in range(len(prepared.image))])
            shown = target if target is not None else predicted
            results.append(
                VideoExplanation(
                    frames=prepared.image,
                    mask=mask,
                    heatmaps=heatmaps,
                    method=request.method,
                    target=target,
                    label=explainer.id2label.get(shown) if shown is not None else None,
                    score=None if probabilities is None or shown is None else float(probabilities[shown]),
                    predicted=predicted,
                    token_relevance=passed.relevance[rank].numpy(),
                    params=request.params(),
                    tubelet_size=tubelet,
                    placement=prepared.placement,
                )
            )
        return results if request.top_k is not None else results[0]


FAMILIES = (VideoFamily(),)
