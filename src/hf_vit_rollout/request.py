"""One call's settings, validated once into a frozen value that every stage takes.

The explainer, the ``transformers`` pipeline, the CLI and the app all build an :class:`ExplainRequest`
(the explainer's defaults, overridden per call) and hand it to the same stages; nothing below this
module re-checks a setting.
"""

from __future__ import annotations

import difflib
import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

from .errors import TargetError
from .methods import (
    METHODS,
    MethodSpec,
    check_head,
    check_head_fusion,
    check_layer,
    check_start_layer,
)


def check_method(method) -> MethodSpec:
    """A registry name → its :class:`MethodSpec` (close names suggested on a typo)."""
    if not isinstance(method, str) or method not in METHODS:
        close = difflib.get_close_matches(str(method), METHODS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown method {method!r}{hint}; choose one of {', '.join(METHODS)}")
    return METHODS[method]


def _is_number(value) -> bool:
    """Python and numpy ints and floats (``np.float32(0.5)`` included); never a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def check_discard_ratio(discard_ratio) -> float:
    """A fraction in ``[0, 1)`` (any real number type, numpy scalars included) → ``float``."""
    if not _is_number(discard_ratio):
        raise ValueError(f"discard_ratio must be a number in [0, 1), got {discard_ratio!r}")
    if not math.isfinite(discard_ratio) or not 0.0 <= discard_ratio < 1.0:
        raise ValueError(
            f"discard_ratio must lie in [0, 1) (the fraction of weakest attentions dropped per layer), got {discard_ratio}"
        )
    return float(discard_ratio)


def check_count(value, name: str, minimum: int = 1) -> int:
    """A whole number ``>= minimum`` (Python or numpy integer) → ``int``."""
    if not isinstance(value, numbers.Integral) or isinstance(value, (bool, np.bool_)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_megabytes(value, name: str) -> float:
    """A size in MiB ``>= 0`` (``math.inf`` allowed) → ``float``."""
    if not _is_number(value) or math.isnan(value) or value < 0:
        raise ValueError(f"{name} must be a number >= 0 (MiB), got {value!r}")
    return float(value)


def _check_target_item(item, where: str):
    if item is None or isinstance(item, str):
        return item
    if isinstance(item, numbers.Integral) and not isinstance(item, (bool, np.bool_)):
        return int(item)
    raise TargetError(
        f"{where} must be a class index (int), a label name (str) or None (the predicted class), "
        f"got {type(item).__name__} {item!r}"
    )


def normalize_target(target):
    """A user's ``target`` → ``None``, an ``int``, a ``str``, a callable, or a tuple with one per image.

    Accepted per image: a class index (Python or numpy integer), a label name, or ``None`` for the
    predicted class. Lists, tuples, numpy arrays, tensors and other sized sequences (e.g. a
    ``datasets`` column) give one target per image. Dicts and sets are refused: they have no order.

    Raises:
        TargetError: anything else, with what to pass instead.
    """
    if target is None or callable(target):
        return target
    if isinstance(target, (dict, set, frozenset)):
        raise TargetError(
            f"target is a {type(target).__name__}, which has no image order; pass one target for every image, "
            "or a list with one per image"
        )
    if hasattr(target, "tolist") and not isinstance(target, (str, bytes)):  # numpy / torch, scalar or array
        target = target.tolist()
    if isinstance(target, (list, tuple)) or (
        not isinstance(target, (str, bytes)) and hasattr(target, "__iter__") and hasattr(target, "__len__")
    ):
        return tuple(_check_target_item(t, f"target[{i}]") for i, t in enumerate(target))
    return _check_target_item(target, "target")


@dataclass(frozen=True, eq=False)
class RegionMask:
    """A region given as a mask: ``pixels`` ``(H, W)`` bool, ``True`` inside.

    The mask is in the original image's pixels (in model-input pixels for
    :meth:`~hf_vit_rollout.RolloutExplainer.relevance_maps`), so it must have the image's size.
    """

    pixels: np.ndarray

    @property
    def box(self) -> tuple[float, float, float, float]:
        """The mask's bounding box ``(x0, y0, x1, y1)`` in pixels (``x1``, ``y1`` one past the last pixel)."""
        rows, cols = np.nonzero(self.pixels)
        return float(cols.min()), float(rows.min()), float(cols.max() + 1), float(rows.max() + 1)

    def __eq__(self, other) -> bool:
        return isinstance(other, RegionMask) and np.array_equal(self.pixels, other.pixels)

    def __hash__(self) -> int:
        return hash((self.pixels.shape, np.packbits(self.pixels).tobytes()))

    def __repr__(self) -> str:
        height, width = self.pixels.shape
        return f"RegionMask({height}×{width}, {int(self.pixels.sum())} pixels inside)"


def _region_mask(region) -> RegionMask:
    """A 2-D mask (bool or 0/1 array or tensor; a PIL image: pixels above 127 inside) → :class:`RegionMask`."""
    if hasattr(region, "getbands"):  # a PIL image, e.g. a mask saved as PNG (mode "1" or "L")
        pixels = np.asarray(region.convert("L")) > 127
    else:
        values = region.detach().cpu().numpy() if hasattr(region, "detach") else np.asarray(region)
        if values.dtype == bool:
            pixels = values
        elif np.issubdtype(values.dtype, np.number) and np.isin(values, (0, 1)).all():
            pixels = values.astype(bool)
        else:
            raise TargetError(
                "a region mask must hold True/False or 0/1 values (inside/outside); threshold a soft mask "
                f"first (mask > 0.5), got values of dtype {values.dtype}"
            )
    if not pixels.any():
        raise TargetError(f"the region mask ({pixels.shape[0]}×{pixels.shape[1]}) is empty: mark at least one pixel inside")
    return RegionMask(np.ascontiguousarray(pixels))


def check_region(region) -> tuple[float, float, float, float] | RegionMask:
    """A box ``(x0, y0, x1, y1)`` of four finite numbers with ``x0 < x1`` and ``y0 < y1`` → floats;
    a 2-D mask ``(H, W)`` → :class:`RegionMask`."""
    if isinstance(region, RegionMask):
        return region
    if hasattr(region, "getbands") or getattr(region, "ndim", 1) == 2:
        return _region_mask(region)
    values = region.tolist() if hasattr(region, "tolist") else region
    if not isinstance(values, (list, tuple)) or len(values) != 4 or not all(_is_number(v) and math.isfinite(v) for v in values):
        raise TargetError(
            "region must be a box (x0, y0, x1, y1) of four numbers in image pixels, or a 2-D mask of the image's "
            f"size (H, W), got {region!r}"
        )
    x0, y0, x1, y1 = (float(v) for v in values)
    if not (x0 < x1 and y0 < y1):
        raise TargetError(f"region (x0, y0, x1, y1) needs x0 < x1 and y0 < y1, got {tuple(values)}")
    return x0, y0, x1, y1


#: How a region's values are reduced to the explained score.
REGION_REDUCTIONS = ("mean", "sum", "max", "min")


@dataclass(frozen=True)
class ExplainRequest:
    """The settings of one explanation call, validated.

    Attributes:
        method: registry name (see :data:`~hf_vit_rollout.methods.METHODS`).
        head_fusion: ``"mean"``, ``"min"`` or ``"max"``.
        discard_ratio: in ``[0, 1)``, or ``None`` for the method's default (see :attr:`ratio`).
        target: ``None`` (predicted class), an index, a label name, a tuple with one per image, or a
            callable ``score(outputs) -> (B,)`` tensor.
        text: a description to explain the image-text similarity of (image-text models only).
        top_k: explain each of the ``top_k`` most probable classes (one forward pass).
        progress: show progress bars.
        full_resolution: heat-maps at the image's full resolution instead of a bounded one.
        layer: method ``"attention"``: which layer's attention (negative from the end; default -1).
        head: method ``"attention"``: which head, or ``None`` to fuse the heads with ``head_fusion``.
        start_layer: product methods (``rollout``, ``grad_rollout``, ``gae``,
            ``transformer_attribution``): the first layer multiplied in; ``legrad``: the first layer
            added up (default 0).
        detection: detection models (YOLOS, OWL-ViT): the index of the detection to explain (its
            predicted class's logit), or a tuple with one per image; default the most confident one.
        min_score: detection models: explain every detection whose class probability is at least
            this (in ``[0, 1]``), one explanation each. Both work with every method (rollout reads
            the detection token's row).
        region: dense models (DPT, Depth Anything): the region of the predicted depth map to
            explain, a box ``(x0, y0, x1, y1)`` in image pixels or a mask ``(H, W)`` of the image's
            size (bool or 0/1; a PIL image: pixels above 127 inside); default the whole image.
        region_reduce: dense models: how the region's predicted depths become the explained score,
            ``"mean"`` (default), ``"sum"``, ``"max"`` or ``"min"``.

    ``layer``, ``head`` and ``start_layer`` are checked against the model's layer and head counts by
    :meth:`check_model` (the explainer calls it when it builds a request).
    """

    method: str = "rollout"
    head_fusion: str = "mean"
    discard_ratio: float | None = None
    target: Any = None
    text: str | None = None
    top_k: int | None = None
    progress: bool = False
    full_resolution: bool = False
    layer: int | None = None
    head: int | None = None
    start_layer: int | None = None
    detection: int | None = None
    min_score: float | None = None
    region: tuple[float, float, float, float] | RegionMask | None = None
    region_reduce: str | None = None

    def __post_init__(self):
        spec = check_method(self.method)
        object.__setattr__(self, "head_fusion", check_head_fusion(self.head_fusion))
        if self.discard_ratio is not None:
            object.__setattr__(self, "discard_ratio", check_discard_ratio(self.discard_ratio))
        object.__setattr__(self, "target", normalize_target(self.target))
        if self.top_k is not None:
            object.__setattr__(self, "top_k", check_count(self.top_k, "top_k"))
        for name in ("layer", "head", "start_layer"):
            value = getattr(self, name)
            if value is not None:
                if not isinstance(value, numbers.Integral) or isinstance(value, (bool, np.bool_)):
                    raise ValueError(f"{name} must be an integer (negative counts from the end), got {value!r}")
                object.__setattr__(self, name, int(value))
        if self.detection is not None:
            values = self.detection.tolist() if hasattr(self.detection, "tolist") else self.detection
            many = isinstance(values, (list, tuple))
            for value in values if many else [values]:
                if not isinstance(value, numbers.Integral) or isinstance(value, (bool, np.bool_)):
                    raise TargetError(
                        f"detection must be the index of a detection (an integer), or a list with one per image; got {self.detection!r}"
                    )
            object.__setattr__(self, "detection", tuple(int(v) for v in values) if many else int(values))
        if self.min_score is not None:
            if not _is_number(self.min_score) or not 0.0 <= self.min_score <= 1.0:
                raise TargetError(f"min_score must be a probability in [0, 1], got {self.min_score!r}")
            object.__setattr__(self, "min_score", float(self.min_score))
        if self.region is not None:
            object.__setattr__(self, "region", check_region(self.region))
        if self.region_reduce is not None and self.region_reduce not in REGION_REDUCTIONS:
            raise TargetError(
                f"region_reduce must be one of {', '.join(repr(r) for r in REGION_REDUCTIONS)}, got {self.region_reduce!r}"
            )
        for flag in ("progress", "full_resolution"):
            if not isinstance(getattr(self, flag), (bool, np.bool_)):
                raise ValueError(f"{flag} must be True or False, got {getattr(self, flag)!r}")
        self._check_combination(spec)
        self._check_layer_settings(spec)

    def _check_combination(self, spec: MethodSpec) -> None:
        wanted = [name for name in ("target", "text", "top_k", "detection", "min_score", "region") if getattr(self, name) is not None]
        detections = [name for name in wanted if name in ("detection", "min_score")]
        others = [name for name in wanted if name not in ("detection", "min_score", "text")]  # text names detectors' queries
        if wanted[:1] == ["target"] and "region" in wanted and len(wanted) == 2:  # a segmenter's class in a region
            wanted = ["region"]
        if len(wanted) > 1 and (len(detections) > 1 or (detections and others) or "region" in wanted):
            clash = [name for name in wanted if name != "text"] if detections else wanted
            raise TargetError(
                f"give only one of target=, text=, top_k=, detection=, min_score= and region= (text= may name an "
                f"open-vocabulary detector's queries beside detection= or min_score=), not both {clash[0]}= and {clash[1]}="
            )
        if detections:
            wanted = detections
        if len(wanted) > 1:
            raise TargetError(f"give only one of target=, text= and top_k=, not both {wanted[0]}= and {wanted[1]}=")
        if isinstance(self.text, list):
            object.__setattr__(self, "text", tuple(self.text))
        texts = (self.text,) if isinstance(self.text, str) else self.text
        if self.text is not None and (
            not isinstance(texts, tuple) or not texts or not all(isinstance(t, str) and t.strip() for t in texts)
        ):
            raise TargetError(f"text must be a non-empty string (or, for an open-vocabulary detector, a list of them), got {self.text!r}")
        queries = wanted == ["text"] and isinstance(self.text, tuple)  # an open-vocabulary detector's queries
        if wanted and not queries and wanted[0] not in ("detection", "min_score", "region") and not spec.needs_gradient and not self._only_predicted():
            gradient_methods = [name for name, s in METHODS.items() if s.needs_gradient]
            raise TargetError(
                f"method {spec.name!r} is class-agnostic and takes no {wanted[0]}; to explain a class or a text "
                f"use a class-specific method: {', '.join(repr(m) for m in gradient_methods)}"
            )

    def _check_layer_settings(self, spec: MethodSpec) -> None:
        if (self.layer is not None or self.head is not None) and spec.combine != "layer":
            layered = [name for name, s in METHODS.items() if s.combine == "layer"]
            raise ValueError(
                f"layer= and head= choose one attention map, for method {layered[0]!r}; method {spec.name!r} "
                "uses every layer (to leave out early layers of a product method, pass start_layer=)"
            )
        if self.start_layer is not None and not spec.takes_start_layer:
            layered = [name for name, s in METHODS.items() if s.takes_start_layer]
            raise ValueError(
                f"start_layer= applies to the methods that multiply or add up layers ({', '.join(layered)}), "
                f"not to {spec.name!r}"
            )

    def check_model(self, num_layers: int, num_heads: int) -> None:
        """Raise ``ValueError`` if ``layer``, ``head`` or ``start_layer`` is out of the model's range."""
        if self.layer is not None:
            check_layer(self.layer, num_layers)
        if self.head is not None:
            check_head(self.head, num_heads)
        if self.start_layer is not None:
            check_start_layer(self.start_layer, num_layers)

    def _only_predicted(self) -> bool:
        """A target list of ``None`` only asks for nothing class-specific."""
        return isinstance(self.target, tuple) and all(t is None for t in self.target)

    @property
    def spec(self) -> MethodSpec:
        return METHODS[self.method]

    @property
    def ratio(self) -> float:
        """The discard ratio in effect: the given one, else the method's default."""
        return self.spec.default_discard_ratio if self.discard_ratio is None else self.discard_ratio

    @property
    def targets_per_image(self) -> bool:
        return isinstance(self.target, tuple)

    @property
    def callable_target(self) -> Callable | None:
        return self.target if callable(self.target) else None

    def updated(self, **overrides) -> ExplainRequest:
        """A new validated request: ``overrides`` that are not ``None`` replace this one's fields.

        Raises:
            TypeError: an unknown setting name (close names suggested).
        """
        names = [f.name for f in fields(self)]
        for key in overrides:
            if key not in names:
                close = difflib.get_close_matches(key, names, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise TypeError(f"unknown setting {key!r}{hint}; the settings are {', '.join(names)}")
        given = {k: v for k, v in overrides.items() if v is not None}
        objectives = ("target", "text", "top_k", "detection", "min_score", "region")
        if any(k in given for k in objectives):  # a new objective replaces the old one
            given = {**dict.fromkeys(objectives), **given}
        return replace(self, **given)

    def params(self) -> dict:
        """The settings recorded in every :class:`~hf_vit_rollout.Explanation` (``params``)."""
        out = {"head_fusion": self.head_fusion, "discard_ratio": self.ratio}
        combine = self.spec.combine
        if combine == "layer":
            out.update(layer=-1 if self.layer is None else self.layer, head=self.head)
        elif self.spec.takes_start_layer:
            out["start_layer"] = self.start_layer or 0
        if self.text is not None:
            out["text"] = self.text
        for name in ("detection", "min_score", "region_reduce"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        if isinstance(self.region, RegionMask):  # params are JSON: a mask is its bounding box and its size
            out.update(region=self.region.box, region_mask_pixels=int(self.region.pixels.sum()))
        elif self.region is not None:
            out["region"] = self.region
        return out


def check_device(device):
    """The device a user named → a ``torch.device`` this machine has (``None`` stays ``None``).

    Accepts what ``transformers`` accepts: a ``torch.device``; a string (``"cpu"``, ``"cuda"``,
    ``"cuda:1"``, ``"mps"``, ``"xpu:0"``, ...); an integer, ``-1`` for the CPU and ``N >= 0`` for
    accelerator ``N`` (CUDA; Apple's MPS for ``0`` on a Mac). A string of digits (the CLI's
    ``--device 0``) counts as that integer. Unlike ``transformers``, an accelerator index on a machine
    without one is an error, not a silent fall-back to the CPU.

    Raises:
        ValueError: not a device (``"bogus"``, ``True``, ``1.5``), or one this machine lacks
            (``"cuda"`` on a CPU-only build of torch, ``"cuda:3"`` with two GPUs, ``"mps"`` off a Mac,
            ``"meta"``, which holds no weights).
    """
    if device is None:
        return None
    import torch

    if isinstance(device, str) and device.strip().lstrip("-").isdigit():
        device = int(device.strip())
    if isinstance(device, numbers.Integral) and not isinstance(device, (bool, np.bool_)):
        return _accelerator(int(device))
    if not isinstance(device, (str, torch.device)):
        raise ValueError(
            f"device must be a torch.device, a string such as 'cpu' or 'cuda:0', or an integer (-1: CPU, N: GPU N); "
            f"got {type(device).__name__} {device!r}"
        )
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"unknown device {device!r}; use 'cpu', 'cuda', 'cuda:N', 'mps' or an integer (-1: CPU, N: GPU N)") from None
    if parsed.type == "cpu":
        return parsed
    if parsed.type == "meta":
        raise ValueError("device 'meta' holds no weights, so nothing can be explained on it; use 'cpu' or a GPU")
    backend = getattr(torch, parsed.type, None) if parsed.type != "mps" else getattr(torch.backends, "mps", None)
    available = bool(backend is not None and hasattr(backend, "is_available") and backend.is_available())
    if not available:
        if parsed.type == "cuda":
            reason = "this torch build has no CUDA support" if torch.version.cuda is None else "no CUDA GPU is visible"
        else:
            reason = f"this machine's torch has no {parsed.type} device"
        raise ValueError(f"device {str(device)!r} is not available: {reason}; use 'cpu'")
    count = backend.device_count() if hasattr(backend, "device_count") else 1
    if parsed.index is not None and parsed.index >= count:
        raise ValueError(
            f"device {str(device)!r} is not available: this machine has {count} {parsed.type} device(s) "
            f"({parsed.type}:0 to {parsed.type}:{count - 1})"
        )
    return parsed


def _accelerator(index: int):
    """``transformers``' integer device: ``-1`` the CPU, ``N`` the N-th accelerator (CUDA, or MPS for 0)."""
    import torch

    if index == -1:
        return torch.device("cpu")
    if index < -1:
        raise ValueError(f"device {index} is not a device; use -1 for the CPU or N >= 0 for GPU N")
    if torch.cuda.is_available():
        return check_device(f"cuda:{index}")
    mps = getattr(torch.backends, "mps", None)
    if index == 0 and mps is not None and mps.is_available():
        return torch.device("mps")
    build = "this torch build has no CUDA support" if torch.version.cuda is None else "no CUDA GPU is visible"
    raise ValueError(f"device {index} (GPU {index}) is not available: {build}; use 'cpu' or -1")
