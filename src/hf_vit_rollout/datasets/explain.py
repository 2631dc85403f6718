""":func:`explain_dataset`: explanation columns for a ``Dataset``, ``IterableDataset`` or ``DatasetDict``."""

from __future__ import annotations

import logging
import os
import shutil
import sys
import uuid
import warnings

import datasets

from ..errors import ExplanationWarning, InputError, TargetError
from ..explainer import RolloutExplainer
from ..families import refuse_unless_class_scores
from . import shards as _shards
from .batches import DEFAULT_OUTPUTS, BatchExplainer
from .fingerprint import explainer_state, job_fingerprint

logger = logging.getLogger(__name__)

#: ``Dataset.map`` options that :func:`explain_dataset` passes on (the rest it sets itself).
MAP_OPTIONS = ("load_from_cache_file", "cache_file_name", "writer_batch_size", "keep_in_memory", "desc", "new_fingerprint")
_DICTS = (datasets.DatasetDict, datasets.IterableDatasetDict)


def explain_dataset(
    dataset,
    explainer: RolloutExplainer,
    image_column: str = "image",
    target_column: str | None = None,
    methods=None,
    *,
    method: str | None = None,
    outputs=DEFAULT_OUTPUTS,
    head_fusion: str | None = None,
    discard_ratio: float | None = None,
    layer: int | None = None,
    head: int | None = None,
    start_layer: int | None = None,
    text: str | None = None,
    top_k: int | None = None,
    target=None,
    full_resolution: bool | None = None,
    batch_size: int = 32,
    num_proc: int | None = None,
    shard=None,
    output_dir: str | os.PathLike | None = None,
    **map_options,
):
    """Add explanation columns to a ``datasets`` data set: masks (float32), class, label, score, images.

    Args:
        dataset: a ``datasets.Dataset``, an ``IterableDataset`` (streaming: explained lazily, as it
            is iterated), or a ``DatasetDict`` / ``IterableDatasetDict`` (every split).
        explainer: the :class:`~hf_vit_rollout.RolloutExplainer` to use.
        image_column: the column with the images: an ``Image()`` feature (decoded or not), file
            paths or URLs, bytes, or arrays (``Array3D``, nested ``List`` of numbers, numpy).
        target_column: the column with each row's class to explain (index or label name; ``None``
            or ``-1`` in a row: its predicted class), used by the class-specific methods.
        methods: a method name or a list of them, explained side by side; an item may be a dict
            with its own settings and column prefix, ``{"method": "attention", "layer": 3, "name":
            "attention_l3"}``. Default: the explainer's method.
        method: the same as ``methods=method``.
        outputs: the columns to write per method, from ``"mask"``, ``"target"``, ``"label"``,
            ``"score"``, ``"heatmap"`` and ``"overlay"`` (the last two are ``Image`` columns at the
            image's size; see :mod:`hf_vit_rollout.datasets.batches`).
        head_fusion, discard_ratio, layer, head, start_layer, text, top_k, target, full_resolution:
            request settings for every method, as for the explainer's ``__call__``. With ``top_k``
            each row's columns hold ``k`` entries (masks ``(k, grid_h, grid_w)``).
        batch_size: rows per ``map`` batch; the explainer runs them in forward passes of its own
            ``batch_size``.
        num_proc: worker processes (Linux, model on the CPU): forked from this one, so the model is
            shared, never pickled; each worker runs one torch thread, so use about one per core.
        shard: ``(rank, world_size)``, or ``"auto"`` to read them from the launcher (``torchrun``,
            ``accelerate launch``, a ``torch.distributed`` process group, Slurm, MPI): explain only
            this rank's part (``datasets.distributed.split_dataset_by_node``).
        output_dir: with ``shard``, write this rank's part to ``output_dir/shard-RRRRR-of-WWWWW``;
            :func:`~hf_vit_rollout.datasets.load_shards` reassembles the whole.
        **map_options: passed to ``Dataset.map``: ``load_from_cache_file``, ``cache_file_name``,
            ``writer_batch_size``, ``keep_in_memory``, ``desc``, ``new_fingerprint``.

    Returns:
        The data set (of the same kind) with the new columns; with ``shard``, this rank's part.
        The columns are ``{name}_mask``, ``{name}_target``, ``{name}_label`` and ``{name}_score``
        by default, ``name`` being the method (``"gae_mask"``, ...).

    Raises:
        ValueError, TargetError, TypeError, InputError: a missing column, a column of the wrong kind,
            a split without the column, an unknown setting or one the method does not take, a
            target the model does not have, a shard out of range, ``num_proc`` where processes
            cannot be forked: all checked before any row is explained.
    """
    if not isinstance(explainer, RolloutExplainer):
        raise TypeError(f"explainer must be a RolloutExplainer, got {type(explainer).__name__}; load one with RolloutExplainer.from_pretrained")
    kinds = (datasets.Dataset, datasets.IterableDataset, *_DICTS)
    if not isinstance(dataset, kinds):
        raise TypeError(
            f"explain_dataset takes a datasets.Dataset, IterableDataset or DatasetDict, got {type(dataset).__name__}; "
            "for a list of images call the explainer itself"
        )
    if method is not None:
        if methods is not None:
            raise TypeError("give either method= or methods=, not both")
        methods = method
    refuse_unless_class_scores(explainer, "explain_dataset")
    _check_map_options(map_options, dataset)
    from ..request import check_count

    batch_size = check_count(batch_size, "batch_size")
    if num_proc is not None:
        num_proc = check_count(num_proc, "num_proc")
    settings = {
        "head_fusion": head_fusion, "discard_ratio": discard_ratio, "layer": layer, "head": head,
        "start_layer": start_layer, "text": text, "top_k": top_k, "target": target, "full_resolution": full_resolution,
    }
    function = BatchExplainer(
        explainer, image_column, target_column, methods, outputs, **{k: v for k, v in settings.items() if v is not None}
    )
    splits = dict(dataset) if isinstance(dataset, _DICTS) else {None: dataset}
    for name, split in splits.items():
        _check_columns(split, function, name)
    if num_proc is not None and num_proc > 1:
        _check_can_fork(explainer, dataset)
    rank_world = None if shard is None else _shards.resolve_shard(shard)
    if output_dir is not None and rank_world is None:
        raise ValueError("output_dir= writes one shard per process; pass shard='auto' or shard=(rank, world_size) too")
    state = explainer_state(explainer)
    plan = [(p.name, p.settings, p.row_targets) for p in function.plans]
    spec = {"plan": plan, "outputs": function.outputs, "image_column": image_column, "target_column": target_column}
    jobs = {name: job_fingerprint(_data_identity(split), state, spec) for name, split in splits.items()}
    folders = {name: None if output_dir is None else os.path.join(output_dir, name or "") for name in splits}
    for name, folder in folders.items():
        if folder is not None:
            _shards.check_output_dir(folder, rank_world[1], jobs[name])
    done = {
        name: _explain_split(split, function, batch_size, num_proc, rank_world, jobs[name], map_options, folders[name], name)
        for name, split in splits.items()
    }
    if None in done:
        return done[None]
    return type(dataset)(done)


def _data_identity(split):
    """What identifies the rows: the fingerprint of a map-style data set; a streaming one has none."""
    if isinstance(split, datasets.Dataset):
        return {"fingerprint": split._fingerprint, "rows": len(split)}
    return {"streaming": repr(split.features), "shards": getattr(split, "num_shards", None)}


def _check_map_options(options: dict, dataset) -> None:
    unknown = [k for k in options if k not in MAP_OPTIONS]
    if unknown:
        close = {"mask_column": " (columns are named after the method; rename with methods=[{'method': ..., 'name': ...}])"}
        hints = "".join(close.get(k, "") for k in unknown)
        raise TypeError(f"unknown option(s) {', '.join(map(repr, unknown))}{hints}; explain_dataset passes on {', '.join(MAP_OPTIONS)}")
    streaming = isinstance(dataset, (datasets.IterableDataset, datasets.IterableDatasetDict))
    if streaming and options:
        raise TypeError(
            f"{', '.join(map(repr, options))} appl{'ies' if len(options) == 1 else 'y'} to map-style data sets; a streaming "
            "(Iterable) data set is explained lazily as it is iterated, with no cache"
        )


def _feature_kind(feature) -> str | None:
    """``"image"``, ``"path"``, ``"bytes"``, ``"array"``, ``"int"``, ``"string"`` or ``None`` (other)."""
    if isinstance(feature, datasets.Image):
        return "image"
    if isinstance(feature, (datasets.Array2D, datasets.Array3D)):
        return "array"
    if isinstance(feature, (datasets.List, datasets.LargeList)):
        inner = feature.feature
        while isinstance(inner, (datasets.List, datasets.LargeList)):
            inner = inner.feature
        return "array" if isinstance(inner, datasets.Value) and _value_kind(inner) in ("int", "float") else None
    if isinstance(feature, datasets.ClassLabel):
        return "int"
    if isinstance(feature, datasets.Value):
        return _value_kind(feature)
    return None


def _value_kind(value: datasets.Value) -> str:
    dtype = value.dtype
    if dtype in ("string", "large_string"):
        return "string"
    if dtype in ("binary", "large_binary"):
        return "bytes"
    if dtype.startswith(("int", "uint")):
        return "int"
    if dtype.startswith("float"):
        return "float"
    return dtype


def _array_dtype(feature):
    if isinstance(feature, (datasets.Array2D, datasets.Array3D)):
        return feature.dtype
    inner = feature
    while isinstance(inner, (datasets.List, datasets.LargeList)):
        inner = inner.feature
    return inner.dtype if isinstance(inner, datasets.Value) else None


def _check_columns(split, function: BatchExplainer, split_name: str | None) -> None:
    """The image and target columns exist and hold the right kinds of values (before any work)."""
    where = "the dataset" if split_name is None else f"split {split_name!r}"
    features = split.features
    columns = list(features) if features is not None else getattr(split, "column_names", None)
    for role, column in (("image_column", function.image_column), ("target_column", function.target_column)):
        if column is not None and columns is not None and column not in columns:
            raise ValueError(f"{where} has no column {column!r} ({role}); its columns are {columns}")
    clash = [c for c in function.columns if c in (function.image_column, function.target_column)]
    if clash:
        raise ValueError(f"the output column {clash[0]!r} would overwrite an input column; name the method otherwise")
    if features is None:
        return  # a stream without declared features: each row is checked as it is read
    image_kind = _feature_kind(features[function.image_column])
    if image_kind not in ("image", "string", "bytes", "array"):
        raise InputError(
            f"column {function.image_column!r} of {where} holds {features[function.image_column]}, not images; pass "
            "image_column= the column with the images (an Image() feature, file paths, bytes or arrays)"
        )
    if image_kind == "array":
        function.image_dtype = _array_dtype(features[function.image_column])
    if function.target_column is None:
        return
    target_feature = features[function.target_column]
    if _feature_kind(target_feature) not in ("int", "string"):
        raise TargetError(
            f"column {function.target_column!r} of {where} holds {target_feature}; a target column holds class "
            "indices (int, ClassLabel) or label names (string)"
        )
    if isinstance(target_feature, datasets.ClassLabel):
        _warn_if_labels_differ(target_feature, function.explainer, function.target_column)
    if isinstance(split, datasets.Dataset):  # every distinct value, checked against the model's classes
        from .batches import row_target

        for value in split.unique(function.target_column):
            row_target(value, f"column {function.target_column!r} of {where} holds {value!r}", function.explainer)


def _warn_if_labels_differ(feature: datasets.ClassLabel, explainer: RolloutExplainer, column: str) -> None:
    names = explainer.id2label
    differing = [(i, n, names.get(i)) for i, n in enumerate(feature.names) if names.get(i) is not None and names[i].lower() != n.lower()]
    if differing:
        i, theirs, ours = differing[0]
        warnings.warn(
            f"column {column!r} is a ClassLabel whose names differ from the model's labels at the same index "
            f"({i}: {theirs!r} in the data, {ours!r} in the model; {len(differing)} differ); the targets are taken "
            "as indices into the model's classes",
            ExplanationWarning,
            stacklevel=3,
        )


# ------------------------------------------------------------------------------------------ running
def _explain_split(split, function, batch_size, num_proc, rank_world, job, map_options, output_dir, split_name):
    streaming = isinstance(split, datasets.IterableDataset)
    order = "interleaved" if streaming else "contiguous"
    function.row_offset, function.row_step = 0, 1
    if rank_world is not None:
        from datasets.distributed import split_dataset_by_node

        rank, world = rank_world
        if streaming:
            split = split_dataset_by_node(split, rank, world, strategy="examples") if world > 1 else split
            function.row_offset, function.row_step = rank, world
        else:
            function.row_offset = _shards.contiguous_offset(len(split), rank, world)
            split = split_dataset_by_node(split, rank, world)
    features = _output_features(split.features, function)
    if streaming:
        fmt = getattr(getattr(split, "_formatting", None), "format_type", None)
        explained = split.with_format(None).map(function, batched=True, batch_size=batch_size, with_indices=True, features=features)
        explained = explained.with_format(fmt) if fmt else explained
    else:
        explained = _map(split, function, batch_size, num_proc, features, job, rank_world, map_options)
    if output_dir is None:
        return explained
    rank, world = rank_world
    manifest = {"job": job, "order": order, "split": split_name, "columns": function.columns}
    if not streaming:
        return datasets.load_from_disk(str(_shards.write_shard(explained, output_dir, rank, world, manifest)))
    cache = os.path.join(output_dir, f".cache-{rank}-{uuid.uuid4().hex[:8]}")  # the stream, written out once
    try:
        table = datasets.Dataset.from_generator(
            _rows, gen_kwargs={"rows": explained}, features=features, cache_dir=cache,
            fingerprint=job_fingerprint(job, rank, cache),
        )
        final = _shards.write_shard(table, output_dir, rank, world, manifest)
        del table
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    return datasets.load_from_disk(str(final))


def _rows(rows):
    yield from rows


def _output_features(features, function: BatchExplainer):
    if features is None:
        return None
    out = features.copy()
    out.update(output_features(function))
    return out


def output_features(function: BatchExplainer) -> datasets.Features:
    """The ``datasets`` features of the columns ``function`` writes (float32 masks, Image columns)."""
    grid = function.grid
    out = {}
    for plan in function.plans:
        ranked = plan.top_k is not None

        def wrap(feature):
            return datasets.List(feature) if ranked else feature

        for output in function.outputs:
            if output == "mask":
                if grid is None:
                    feature = datasets.List(datasets.List(datasets.Value("float32")))
                    out[plan.column(output)] = wrap(feature)
                elif ranked:
                    out[plan.column(output)] = datasets.Array3D((plan.top_k, *grid), "float32")
                else:
                    out[plan.column(output)] = datasets.Array2D(grid, "float32")
            elif output == "target":
                out[plan.column(output)] = wrap(datasets.Value("int64"))
            elif output == "label":
                out[plan.column(output)] = wrap(datasets.Value("string"))
            elif output == "score":
                out[plan.column(output)] = wrap(datasets.Value("float32"))
            else:
                out[plan.column(output)] = wrap(datasets.Image())
    return datasets.Features(out)


def _map(split, function, batch_size, num_proc, features, job, rank_world, options):
    options = dict(options)
    suffix = "" if rank_world is None else f"_{rank_world[0]}of{rank_world[1]}"
    options.setdefault("new_fingerprint", job_fingerprint(job, split._fingerprint, suffix))
    options.setdefault("desc", f"explaining ({', '.join(p.name for p in function.plans)})")
    fmt = split.format
    plain = split.with_format(None)
    kwargs = dict(batched=True, batch_size=batch_size, with_indices=True, features=features, **options)
    if num_proc is None or num_proc <= 1:
        explained = plain.map(function, **kwargs)
    else:
        explained = _forked_map(plain, function, num_proc, kwargs)
    if fmt["type"] is not None or fmt["columns"] is not None:
        columns = fmt["columns"]
        if columns is not None:
            columns = [*columns, *(c for c in function.columns if c not in columns)]
        explained = explained.with_format(fmt["type"], columns=columns, output_all_columns=fmt["output_all_columns"], **fmt["format_kwargs"])
    return explained


# ------------------------------------------------------------------------------------------ num_proc
_LIVE: dict[int, BatchExplainer] = {}


class _Forked:
    """The map function as ``datasets`` pickles it for its workers: a key into :data:`_LIVE`, which
    a forked worker inherits with the model. Unpickled in a worker, it sets one torch thread."""

    def __init__(self, function: BatchExplainer):
        self.key = id(function)
        self.function = function
        _LIVE[self.key] = function

    def __call__(self, batch, indices=None):
        return self.function(batch, indices)

    def __getstate__(self):
        return {"key": self.key, "parent": os.getpid()}

    def __setstate__(self, state):
        self.key = state["key"]
        self.function = _LIVE.get(self.key)
        if self.function is None:
            raise RuntimeError(
                "explain_dataset's num_proc workers must be forked from the process that called it (they share "
                "its model); this worker was started another way"
            )
        if os.getpid() != state["parent"]:
            import torch

            torch.set_num_threads(1)  # a forked process cannot use torch's OpenMP pool safely


def _check_can_fork(explainer: RolloutExplainer, dataset) -> None:
    if isinstance(dataset, (datasets.IterableDataset, datasets.IterableDatasetDict)):
        raise ValueError(
            "num_proc applies to map-style data sets; a streaming (Iterable) data set is explained as it is read: "
            "run several processes with shard='auto' under torchrun, or use a DataLoader with num_workers"
        )
    import multiprocess

    if not sys.platform.startswith("linux") or "fork" not in multiprocess.get_all_start_methods():
        raise ValueError(
            f"num_proc forks worker processes that share the model, which is safe here only on Linux (this is {sys.platform}); "
            "run several processes with shard='auto' under torchrun instead (see docs/datasets.md)"
        )
    devices = {p.device.type for p in explainer.model.parameters()}
    if devices - {"cpu"}:
        raise ValueError(
            f"num_proc forks worker processes, which cannot use the model's {', '.join(sorted(devices - {'cpu'}))} device; "
            "run one process per GPU with torchrun --nproc_per_node N and shard='auto'"
        )


def _forked_map(plain, function: BatchExplainer, num_proc: int, kwargs: dict):
    import multiprocess

    forked = _Forked(function)
    previous = multiprocess.get_start_method(allow_none=True)
    multiprocess.set_start_method("fork", force=True)
    try:
        return plain.map(forked, num_proc=num_proc, **kwargs)
    finally:
        multiprocess.set_start_method(previous, force=True)
        _LIVE.pop(forked.key, None)

