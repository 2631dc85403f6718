"""Explain whole Hugging Face data sets: ``Dataset``, streaming ``IterableDataset``, ``DatasetDict``.

    from datasets import load_dataset
    from hf_vit_rollout import RolloutExplainer, explain_dataset

    ds = load_dataset("beans", split="validation")
    explainer = RolloutExplainer.from_pretrained("nateraw/vit-base-beans")
    ds = explain_dataset(ds, explainer, target_column="labels", methods=["rollout", "gae"], outputs=["mask", "label", "score", "overlay"])
    ds[0]["gae_mask"]           # (grid_h, grid_w) float32 mask, maximum 1
    ds.save_to_disk("beans_explained")   # or ds.push_to_hub(...): overlays are Image columns

Across processes (``torchrun --nproc_per_node 2 script.py``)::

    part = explain_dataset(ds, explainer, shard="auto", output_dir="explained/")
    # once every rank is done (e.g. after torch.distributed.barrier()), anywhere:
    whole = load_shards("explained/")

Ray Data: ``ds.map_batches(BatchExplainer, fn_constructor_kwargs={"explainer": "demo",
"batch_format": "numpy"}, concurrency=2, batch_format="numpy")`` (one explainer per actor).

Needs the optional extra ``pip install "hf-vit-rollout[datasets]"``. The guide with measured
speeds is ``docs/datasets.md``.
"""

from __future__ import annotations

try:
    import datasets as _datasets  # noqa: F401 - the optional dependency, checked once
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError('explain_dataset needs the datasets package: pip install "hf-vit-rollout[datasets]"') from exc

from .batches import DEFAULT_OUTPUTS, OUTPUTS, BatchExplainer
from .explain import explain_dataset, output_features
from .fingerprint import weights_digest
from .shards import IncompleteShardsError, load_shards, shard_from_environment

__all__ = [
    "DEFAULT_OUTPUTS",
    "OUTPUTS",
    "BatchExplainer",
    "IncompleteShardsError",
    "explain_dataset",
    "load_shards",
    "output_features",
    "shard_from_environment",
    "weights_digest",
]
