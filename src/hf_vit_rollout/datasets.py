"""Explain a whole ``datasets.Dataset`` with a batched ``map``.

    from datasets import load_dataset
    from hf_vit_rollout import RolloutExplainer
    from hf_vit_rollout.datasets import explain_dataset

    ds = load_dataset("beans", split="validation")
    explainer = RolloutExplainer.from_pretrained("nateraw/vit-base-beans", method="gae")
    ds = explain_dataset(ds, explainer, target_column="labels", num_proc=4)
    ds[0]["gae_mask"]        # (grid_h, grid_w) list of lists, max 1

Needs the optional extra ``pip install "hf-vit-rollout[datasets]"``. ``datasets`` shows its own
progress bar; ``num_proc`` spreads the work over processes (each gets a copy of the explainer).
"""

from __future__ import annotations

from .explainer import RolloutExplainer


class _ExplainBatch:
    """Picklable ``map`` function (``num_proc > 1`` ships it to worker processes)."""

    def __init__(self, explainer, columns: tuple[str, str | None, str], settings: dict):
        self.explainer = explainer
        self.image_column, self.target_column, self.mask_column = columns
        self.settings = settings

    def __call__(self, batch):
        images = batch[self.image_column]
        targets = None if self.target_column is None else [int(t) if not isinstance(t, str) else t for t in batch[self.target_column]]
        explanations = self.explainer(list(images), target=targets, **self.settings)
        return {
            self.mask_column: [e.mask.tolist() for e in explanations],
            f"{self.mask_column}_target": [-1 if e.target is None else e.target for e in explanations],
        }


def explain_dataset(
    dataset,
    explainer: RolloutExplainer,
    image_column: str = "image",
    target_column: str | None = None,
    mask_column: str | None = None,
    method: str | None = None,
    head_fusion: str | None = None,
    discard_ratio: float | None = None,
    batch_size: int = 32,
    num_proc: int | None = None,
    **map_kwargs,
):
    """Add a column of explanation masks to a ``datasets.Dataset``.

    Args:
        dataset: a ``datasets.Dataset`` whose ``image_column`` holds images (``Image()`` feature, paths
            or arrays).
        explainer: the :class:`RolloutExplainer` to use.
        target_column: column with the class to explain per row (gradient methods); ``None`` explains
            the prediction (or nothing, for class-agnostic methods).
        mask_column: name of the new column; default ``"<method>_mask"``. A second column
            ``"<mask_column>_target"`` holds the explained class (-1 for class-agnostic methods).
        batch_size: rows per ``map`` batch; the explainer runs them in forward passes of its own
            ``batch_size``.
        num_proc: worker processes for ``map``.
        **map_kwargs: passed to ``Dataset.map`` (``desc``, ``load_from_cache_file``, ...).

    Returns:
        The dataset with the new columns; each mask is a ``(grid_h, grid_w)`` list of lists.

    Raises:
        ValueError: a missing column, or invalid settings (checked before any work starts).
    """
    for column in (image_column, target_column):
        if column is not None and column not in dataset.column_names:
            raise ValueError(f"dataset has no column {column!r}; its columns are {dataset.column_names}")
    spec = explainer.request(method=method, head_fusion=head_fusion, discard_ratio=discard_ratio).spec
    if target_column is not None and not spec.needs_gradient:
        raise ValueError(f"method {spec.name!r} is class-agnostic; drop target_column or use 'grad_rollout' or 'gae'")
    mask_column = mask_column or f"{spec.name}_mask"
    settings = {"method": spec.name, "head_fusion": head_fusion, "discard_ratio": discard_ratio}
    function = _ExplainBatch(explainer, (image_column, target_column, mask_column), settings)
    map_kwargs.setdefault("desc", f"explaining ({spec.name})")
    if not num_proc or num_proc <= 1:
        return dataset.map(function, batched=True, batch_size=batch_size, **map_kwargs)
    # torch's OpenMP thread pool does not survive fork(): worker processes are spawned instead
    import multiprocess

    previous = multiprocess.get_start_method(allow_none=True)
    multiprocess.set_start_method("spawn", force=True)
    try:
        return dataset.map(function, batched=True, batch_size=batch_size, num_proc=num_proc, **map_kwargs)
    finally:
        multiprocess.set_start_method(previous, force=True)
