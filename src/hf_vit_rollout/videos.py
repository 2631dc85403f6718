"""Video files → frames, for the video models (VideoMAE, ViViT, TimeSformer).

An animated GIF is read with Pillow (no extra needed). Other video files (MP4, MOV, AVI, MKV,
WebM, ...) are decoded with PyAV, the FFmpeg bindings, installed by the ``video`` extra
(``pip install "hf-vit-rollout[video]"``). Either way :func:`read_video` returns ``num_frames``
frames evenly spaced from the first to the last (``numpy.linspace(0, count - 1, num_frames)``,
rounded), decoding the file once and keeping only the frames taken.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import InputError
from .images import _check_size, check_path

#: File name endings read as videos (``.gif`` by Pillow, the others by PyAV).
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".gif")


def is_video_file(source) -> bool:
    """Whether ``source`` is a path (``str`` or ``os.PathLike``) whose name ends like a video file."""
    return isinstance(source, (str, os.PathLike)) and Path(source).suffix.lower() in VIDEO_SUFFIXES


def _taken(count: int, num_frames: int, where: str, kind: str) -> np.ndarray:
    """The indices of the ``num_frames`` frames taken out of ``count``, evenly spaced."""
    if count < num_frames:
        raise InputError(
            f"{where} has {count} frame{'s' if count != 1 else ''}; this model takes {num_frames}: give {kind} "
            f"of at least {num_frames} frames (that many are taken, evenly spaced)"
        )
    return np.linspace(0, count - 1, num_frames).round().astype(int)


def _read_gif(path, num_frames: int, where: str) -> list[Image.Image]:
    try:
        with Image.open(path) as clip:
            _check_size(*clip.size, where)  # before decoding any frame
            frames = []
            for i in _taken(int(getattr(clip, "n_frames", 1)), num_frames, where, "an animated GIF"):
                clip.seek(int(i))
                frames.append(clip.convert("RGB"))
    except InputError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, EOFError) as exc:
        raise InputError(f"{where} could not be read as an animated GIF ({exc})") from None
    return frames


def _read_with_pyav(path, num_frames: int, where: str) -> list[Image.Image]:
    try:
        import av
    except ImportError:
        raise InputError(
            f"reading {where} needs PyAV: pip install \"hf-vit-rollout[video]\" (or decode the video with a reader "
            "you trust and pass its frames, a (T, H, W, 3) array or a list of images)"
        ) from None
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InputError(f"{where} has no video stream")
            stream = container.streams.video[0]
            _check_size(stream.codec_context.width, stream.codec_context.height, where)
            count = int(stream.frames or 0)
            if count == 0:  # the container does not say: count the decoded frames first
                count = sum(1 for _ in container.decode(stream))
                container.seek(0)
            wanted = list(_taken(count, num_frames, where, "a video"))
            frames: list[Image.Image] = []
            for index, frame in enumerate(container.decode(stream)):
                while wanted and wanted[0] == index:  # repeated indices (rounding) take the frame again
                    frames.append(frame.to_image().convert("RGB"))
                    wanted.pop(0)
                if not wanted:
                    break
    except InputError:
        raise
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise InputError(f"{where} could not be read as a video ({exc})") from None
    if len(frames) < num_frames:  # the container promised more frames than it decoded
        raise InputError(
            f"{where} decoded to {len(frames)} of the {num_frames} frames taken (its header counts {count}); "
            "the file may be truncated"
        )
    return frames


def read_video(path: str | os.PathLike, num_frames: int, where: str | None = None) -> list[Image.Image]:
    """``num_frames`` RGB frames of the video file ``path``, evenly spaced from first to last.

    Args:
        path: an animated GIF (Pillow) or another video file (PyAV, the ``video`` extra).
        num_frames: how many frames to take (a video model's ``config.num_frames``).
        where: how messages name the file (default its path).

    Raises:
        InputError: a missing or unreadable file, no video stream, fewer frames than ``num_frames``,
            frames over the pixel limit, or PyAV not installed for a file that needs it.
    """
    where = where or repr(str(path))
    check_path(path)
    if Path(path).suffix.lower() == ".gif":
        return _read_gif(path, num_frames, where)
    return _read_with_pyav(path, num_frames, where)
