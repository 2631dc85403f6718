"""One batch of rows in, explanation columns out: the function every engine maps.

:class:`BatchExplainer` is what :func:`~hf_vit_rollout.datasets.explain_dataset` hands to
``datasets``' ``map``, and the class to give Ray Data's ``map_batches`` (one explainer per actor).
It decodes each row's image with the explainer's own rule (:func:`hf_vit_rollout.images.load_image`),
explains the batch once per method, and returns one group of columns per method::

    {name}_mask      (grid_h, grid_w) float32, maximum 1       (top_k: (k, grid_h, grid_w))
    {name}_target    the explained class index, None for class-agnostic methods
    {name}_label     its name (class-agnostic methods: the predicted class's name)
    {name}_score     its probability (float32)
    {name}_heatmap   optional: the heat-map as an 8-bit grey image at the image's size
    {name}_overlay   optional: the heat-map blended onto the image (RGB)

``name`` is the method's registry name unless a method is given as a dict with a ``"name"``.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy as np
from PIL import Image

from ..errors import InputError, TargetError
from ..explainer import RolloutExplainer
from ..explanation import _to_uint8
from ..images import decode_image

#: Every column group a method can write, in column order.
OUTPUTS = ("mask", "target", "label", "score", "heatmap", "overlay")
#: The groups written unless ``outputs=`` says otherwise.
DEFAULT_OUTPUTS = ("mask", "target", "label", "score")
#: Request settings that :func:`plan_methods` applies to every method (a method's dict may override them).
SETTINGS = ("head_fusion", "discard_ratio", "layer", "head", "start_layer", "text", "top_k", "target", "full_resolution")


@dataclass(frozen=True)
class MethodColumns:
    """One method's settings and the columns it writes.

    Attributes:
        name: the columns' prefix (``f"{name}_mask"``, ...).
        settings: the request settings, validated against the model (``method`` included).
        row_targets: whether the target column applies (a class-specific method without its own
            ``target``, ``text`` or ``top_k``).
        top_k: how many classes each row explains (``None``: one, and no class axis in the columns).
    """

    name: str
    settings: dict
    row_targets: bool
    top_k: int | None

    def column(self, output: str) -> str:
        return f"{self.name}_{output}"


def plan_methods(explainer: RolloutExplainer, methods, shared: dict, target_column: str | None) -> list[MethodColumns]:
    """Validate the methods and their settings against the model, before any row is read.

    Args:
        methods: ``None`` (the explainer's default method), a method name, or a list of names and
            dicts (``{"method": "attention", "layer": 3, "name": "attention_l3"}``).
        shared: settings for every method (``top_k``, ``start_layer``, ...; ``None`` values unset).
        target_column: the column with each row's class, if any.

    Raises:
        ValueError, TargetError, TypeError: an unknown method or setting, a setting the method does
            not take, a value out of the model's range, two methods writing the same columns, or a
            target column with only class-agnostic methods.
    """
    if methods is None:
        methods = [explainer.method]
    elif isinstance(methods, (str, dict)):
        methods = [methods]
    elif not isinstance(methods, (list, tuple)) or not methods:
        raise ValueError(f"methods must be a method name or a non-empty list of names and dicts, got {methods!r}")
    shared = {k: v for k, v in shared.items() if v is not None}
    plans = []
    for i, item in enumerate(methods):
        if isinstance(item, str):
            item = {"method": item}
        if not isinstance(item, dict) or "method" not in item:
            raise ValueError(f"methods[{i}] must be a method name or a dict with a 'method' key, got {item!r}")
        item = dict(item)
        name = item.pop("name", None) or item["method"]
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"methods[{i}]: name must be a word usable in a column name (letters, digits, _), got {name!r}")
        settings = {**shared, **item}
        spec_needs_class = _needs_class(explainer, settings)
        row_targets = target_column is not None and spec_needs_class
        if row_targets:
            asked = [k for k in ("target", "text", "top_k") if settings.get(k) is not None]
            if asked:
                raise TargetError(
                    f"target_column gives each row's class, and {asked[0]}= asks for another objective "
                    f"(method {settings['method']!r}); give only one of them"
                )
        request = _request(explainer, settings, i if len(methods) > 1 else None)
        top_k = None if request.top_k is None else min(request.top_k, explainer.num_labels)
        plans.append(MethodColumns(name, settings, row_targets, top_k))
    names = [p.name for p in plans]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(
            f"two methods would write the columns {duplicates[0]}_mask, ...; give one of them another "
            "name: methods=[..., {'method': ..., 'name': 'other'}]"
        )
    if target_column is not None and not any(p.row_targets for p in plans):
        raise TargetError(
            f"method {plans[0].settings['method']!r} is class-agnostic and takes no target_column; drop "
            "target_column, or use a class-specific method such as 'grad_rollout' or 'gae'"
        )
    return plans


def _needs_class(explainer: RolloutExplainer, settings: dict) -> bool:
    from ..request import check_method

    return check_method(settings.get("method", explainer.method)).needs_gradient


def _request(explainer: RolloutExplainer, settings: dict, index: int | None):
    try:
        return explainer.request(**settings)
    except (ValueError, TypeError) as exc:
        if index is None:
            raise
        raise type(exc)(f"methods[{index}] ({settings.get('method')!r}): {exc}") from None


def check_outputs(outputs) -> tuple[str, ...]:
    """``outputs`` → a tuple of known column groups, in :data:`OUTPUTS` order."""
    if isinstance(outputs, str):
        outputs = (outputs,)
    unknown = [o for o in outputs if o not in OUTPUTS]
    if unknown or not outputs:
        raise ValueError(f"outputs must name some of {', '.join(OUTPUTS)}; got {list(outputs)!r}")
    return tuple(o for o in OUTPUTS if o in outputs)


# ------------------------------------------------------------------------------------------ reading rows
def row_target(value, where: str, explainer: RolloutExplainer) -> int | None:
    """A target column's cell (class index, label name or None) → the class index it names."""
    if value is None:
        return None
    if isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, (bool, np.bool_)):
        index = int(value)
        if index < 0:  # ClassLabel's "no label" (-1) and other negatives: the prediction is explained
            return None
    elif isinstance(value, str):
        index = value
    else:
        raise TargetError(f"{where} is {type(value).__name__} {value!r}; a target column holds class indices or label names")
    try:
        return explainer.resolve_target(index)
    except TargetError as exc:
        raise TargetError(f"{where}: {exc}") from None


# ------------------------------------------------------------------------------------------ the batch function
class BatchExplainer:
    """Explain a batch of rows: ``{column: values}`` in, one group of columns per method out.

    Args:
        explainer: a :class:`~hf_vit_rollout.RolloutExplainer`, or what its ``from_pretrained``
            takes (a Hub id, a folder, ``"demo"``): an engine that builds one ``BatchExplainer``
            per worker (Ray Data actors) then loads one explainer per worker.
        image_column: the column with the images.
        target_column: the column with each row's class (index or label name; ``None`` or a
            negative index in a row: its predicted class), for the class-specific methods.
        methods: a method name or a list of names and dicts (see :func:`plan_methods`).
        outputs: the column groups to write, from :data:`OUTPUTS`.
        batch_format: ``"python"`` (the new columns as lists and PIL images, which ``datasets``'
            ``map`` adds to the rows) or ``"numpy"`` (the batch's columns and the new ones as arrays,
            images as ``uint8`` arrays: Ray Data's ``map_batches(..., batch_format="numpy")``,
            which keeps only what the function returns).
        image_dtype: dtype of images that arrive as nested lists (default: numpy's choice).
        from_pretrained: keyword arguments for ``RolloutExplainer.from_pretrained`` when
            ``explainer`` is a name (``device``, ``batch_size``, ...).
        **settings: request settings for every method (``top_k``, ``layer``, ``head``,
            ``start_layer``, ``text``, ``target``, ``head_fusion``, ``discard_ratio``).

    Call it as ``function(batch)`` or ``function(batch, indices)`` (row numbers, for messages).
    """

    def __init__(
        self,
        explainer="demo",
        image_column: str = "image",
        target_column: str | None = None,
        methods=None,
        outputs=DEFAULT_OUTPUTS,
        batch_format: str = "python",
        image_dtype=None,
        from_pretrained: dict | None = None,
        **settings,
    ):
        if not isinstance(explainer, RolloutExplainer):
            explainer = RolloutExplainer.from_pretrained(explainer, **(from_pretrained or {}))
        if batch_format not in ("python", "numpy"):
            raise ValueError(f"batch_format must be 'python' or 'numpy', got {batch_format!r}")
        unknown = [k for k in settings if k not in SETTINGS]
        if unknown:
            raise TypeError(f"unknown setting(s) {', '.join(map(repr, unknown))}; the settings are {', '.join(SETTINGS)}")
        self.explainer = explainer
        self.image_column, self.target_column = image_column, target_column
        self.plans = plan_methods(explainer, methods, settings, target_column)
        self.outputs = check_outputs(outputs)
        self.batch_format = batch_format
        self.image_dtype = image_dtype
        self.grid = fixed_grid(explainer)
        self.row_offset, self.row_step = 0, 1  # global row = offset + step * local index (shards)

    @property
    def columns(self) -> list[str]:
        """The names of the columns this function writes, in order."""
        return [plan.column(output) for plan in self.plans for output in self.outputs]

    def where(self, row: int) -> str:
        return f"row {row} of column {self.image_column!r}"

    def __call__(self, batch: dict, indices=None) -> dict:
        if self.image_column not in batch:
            raise InputError(f"the batch has no column {self.image_column!r}; its columns are {list(batch)}")
        cells = batch[self.image_column]
        local = range(len(cells)) if indices is None else indices
        rows = [self.row_offset + self.row_step * int(i) for i in local]
        images = [decode_image(cell, self.where(row), self.image_dtype) for cell, row in zip(cells, rows)]
        targets = None
        if self.target_column is not None:
            column = batch[self.target_column]
            targets = [
                row_target(value, f"row {row} of column {self.target_column!r}", self.explainer)
                for value, row in zip(column, rows)
            ]
        out = {}
        for plan in self.plans:
            settings = dict(plan.settings)
            if plan.row_targets:
                settings["target"] = targets
            explained = self.explainer(images, **settings)
            out.update(self._columns(plan, explained))
        if self.batch_format == "numpy":  # Ray's map_batches keeps only what the function returns
            return {**{k: v for k, v in batch.items() if k not in out}, **out}
        return out

    # ------------------------------------------------------------------ columns of one method
    def _columns(self, plan: MethodColumns, explained: list) -> dict:
        groups = [e if isinstance(e, list) else [e] for e in explained]  # one list per row: k explanations
        numpy = self.batch_format == "numpy"
        ranked = plan.top_k is not None

        def per_row(values):
            return values if ranked else values[0]

        out = {}
        for output in self.outputs:
            if output == "mask":
                masks = [per_row([e.mask for e in group]) for group in groups]
                same = self.grid is not None or len({np.shape(m) for m in masks}) == 1
                out[plan.column(output)] = np.stack([np.asarray(m, np.float32) for m in masks]) if same else masks
            elif output in ("target", "label", "score"):
                values = [per_row([getattr(e, output) for e in group]) for group in groups]
                if output == "score":
                    values = [_float32(v) for v in values]
                out[plan.column(output)] = _numpy_column(values) if numpy else values
            else:  # heatmap / overlay: images
                make = _heatmap_image if output == "heatmap" else _overlay_image
                images = [per_row([make(e) for e in group]) for group in groups]
                if numpy:
                    images = _numpy_column([[np.asarray(i) for i in v] if ranked else np.asarray(v) for v in images])
                out[plan.column(output)] = images
        return out


def _heatmap_image(explanation) -> Image.Image:
    return Image.fromarray(_to_uint8(explanation.heatmap), mode="L")


def _overlay_image(explanation) -> Image.Image:
    return explanation.overlay()


def _float32(value):
    if value is None:
        return None
    if isinstance(value, list):
        return [_float32(v) for v in value]
    return float(np.float32(value))


def _numpy_column(values: list) -> np.ndarray:
    """A column for a numpy batch: a plain array where the values allow it, else an object array."""
    flat = values
    while flat and isinstance(flat[0], list):
        flat = [v for group in flat for v in group]
    if any(v is None for v in flat) or (flat and isinstance(flat[0], np.ndarray) and len({v.shape for v in flat}) > 1):
        column = np.empty(len(values), dtype=object)
        column[:] = [np.array(v, dtype=object) if isinstance(v, list) else v for v in values]
        return column
    return np.asarray(values)


def fixed_grid(explainer: RolloutExplainer) -> tuple[int, int] | None:
    """The mask's ``(grid_h, grid_w)`` if the processor makes one input size whatever the image's
    (two odd-sized blank images are processed to find out), else ``None`` (masks vary per row)."""
    from .. import stages

    shapes = set()
    for size in ((37, 53), (101, 67)):
        blank = Image.new("RGB", size, (127, 127, 127))
        shapes.add(tuple(stages.preprocess(explainer, blank).pixel_values.shape[-2:]))
    if len(shapes) != 1:
        return None
    return tuple(explainer.layout(shapes.pop()).grid_size)
