"""Explaining a data set across processes and machines: who does which rows, and putting it back together.

Each process (a rank of a launcher such as ``torchrun`` or ``accelerate launch``, or a job of a
batch system) explains its part of the data set, split with ``datasets.distributed.split_dataset_by_node``,
and writes it to ``output_dir/shard-RRRRR-of-WWWWW/`` (a ``save_to_disk`` folder with a small JSON
manifest). A shard appears under that name only once it is complete (it is written under a
temporary name and renamed), so a crashed rank leaves no folder that looks finished.
:func:`load_shards` reassembles the rows in their original order and refuses an incomplete or
mixed set, naming what is missing.

Map-style data sets are split into contiguous blocks (rank 0 the first rows). Streaming
(``IterableDataset``) ones are split by example (rank ``r`` takes rows ``r, r + W, r + 2W, ...``),
so every rank reads the stream and each keeps its own rows; the merge interleaves them back.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import uuid
from pathlib import Path

logger = logging.getLogger(__name__)

#: The manifest each shard folder holds.
MANIFEST = "hf_vit_rollout_shard.json"
_SHARD = re.compile(r"^shard-(\d{5})-of-(\d{5})$")
#: (rank, world size) environment variables, in the order they are read.
LAUNCHER_VARIABLES = (
    ("RANK", "WORLD_SIZE"),  # torchrun, accelerate launch, torch.distributed.launch, deepspeed
    ("SLURM_PROCID", "SLURM_NTASKS"),  # srun
    ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"),  # Open MPI's mpirun
    ("PMI_RANK", "PMI_SIZE"),  # MPICH / Intel MPI
)


class IncompleteShardsError(ValueError):
    """The shards in a folder do not make one complete explained data set (which are missing, or mixed)."""


def shard_name(rank: int, world_size: int) -> str:
    return f"shard-{rank:05d}-of-{world_size:05d}"


def shard_from_environment() -> tuple[int, int]:
    """``(rank, world_size)`` of this process: from an initialised ``torch.distributed`` process
    group, else from the launcher's environment variables (:data:`LAUNCHER_VARIABLES`), else
    ``(0, 1)`` (one process explains everything)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    for rank_name, world_name in LAUNCHER_VARIABLES:
        rank, world = os.environ.get(rank_name), os.environ.get(world_name)
        if rank is not None and world is not None:
            try:
                return check_shard((int(rank), int(world)))
            except ValueError as exc:
                raise ValueError(f"the launcher's {rank_name}={rank!r} and {world_name}={world!r} are not a shard: {exc}") from None
    logger.warning(
        "shard='auto' found no launcher (no RANK/WORLD_SIZE or torch.distributed process group): this process "
        "explains the whole data set. Start several with torchrun --nproc_per_node N or accelerate launch --multi_gpu "
        "--num_processes N (with --cpu, accelerate starts only one)"
    )
    return 0, 1


def check_shard(shard) -> tuple[int, int]:
    """``(rank, world_size)`` as given, checked: integers with ``0 <= rank < world_size``."""
    import numbers

    if (
        not isinstance(shard, (tuple, list))
        or len(shard) != 2
        or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in shard)
    ):
        raise ValueError(f"shard must be (rank, world_size) with two integers, or 'auto'; got {shard!r}")
    rank, world = int(shard[0]), int(shard[1])
    if world < 1:
        raise ValueError(f"shard=({rank}, {world}): world_size must be at least 1")
    if not 0 <= rank < world:
        raise ValueError(f"shard=({rank}, {world}): rank must lie in 0..{world - 1} (one rank per process)")
    return rank, world


def resolve_shard(shard) -> tuple[int, int]:
    """``"auto"`` → :func:`shard_from_environment`; a pair → checked."""
    if isinstance(shard, str):
        if shard != "auto":
            raise ValueError(f"shard must be (rank, world_size) or 'auto', got {shard!r}")
        return shard_from_environment()
    return check_shard(shard)


def contiguous_offset(length: int, rank: int, world_size: int) -> int:
    """First row of ``rank``'s contiguous block, as ``Dataset.shard(contiguous=True)`` cuts it."""
    div, mod = divmod(length, world_size)
    return div * rank + min(rank, mod)


# ------------------------------------------------------------------------------------------ writing
def _manifests(folder: Path) -> dict[str, dict]:
    found = {}
    if folder.is_dir():
        for child in folder.iterdir():
            if _SHARD.match(child.name) and (child / MANIFEST).is_file():
                found[child.name] = json.loads((child / MANIFEST).read_text())
    return found


def check_output_dir(folder: str | os.PathLike, world_size: int, job: str) -> Path:
    """Refuse, before any work, an output folder that is a file or holds shards of another run."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise FileExistsError(f"output_dir {str(folder)!r} is a file; pass a folder for the shards")
    for name, manifest in _manifests(folder).items():
        if manifest.get("world_size") != world_size or manifest.get("job") != job:
            raise FileExistsError(
                f"output_dir {str(folder)!r} holds {name} from another run (other settings, model, data or number of "
                "processes); use an empty folder, or remove the old shards"
            )
    return folder


def write_shard(dataset, folder: str | os.PathLike, rank: int, world_size: int, manifest: dict) -> Path:
    """Save ``dataset`` (a ``datasets.Dataset``) as ``folder/shard-RRRRR-of-WWWWW``, atomically."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / shard_name(rank, world_size)
    temporary = folder / f".{final.name}.tmp-{uuid.uuid4().hex[:8]}"
    try:
        dataset.save_to_disk(str(temporary))
        info = {**manifest, "rank": rank, "world_size": world_size, "rows": len(dataset), "format": 1}
        (temporary / MANIFEST).write_text(json.dumps(info, indent=2))
        if final.exists():  # a rank run again: the old shard leaves only once the new one is complete
            retired = folder / f".{final.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(final, retired)
            os.replace(temporary, final)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(temporary, final)
    finally:
        if temporary.exists():
            shutil.rmtree(temporary, ignore_errors=True)
    return final


# ------------------------------------------------------------------------------------------ reading
def load_shards(output_dir: str | os.PathLike):
    """The explained data set that the shards in ``output_dir`` make together, rows in their original order.

    Returns:
        A ``datasets.Dataset``; a ``datasets.DatasetDict`` when ``output_dir`` holds one folder of
        shards per split (what ``explain_dataset`` writes for a ``DatasetDict``).

    Raises:
        FileNotFoundError: no such folder, or no shards in it.
        IncompleteShardsError: a rank's shard is missing (it names which, and whether an unfinished
            write of it is there), or the shards come from different runs.
    """
    import datasets

    folder = Path(output_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"no such folder {str(folder)!r}")
    if _manifests(folder) or any(_SHARD.match(p.name) for p in folder.iterdir()):
        return _load_split(folder)
    splits = sorted(p for p in folder.iterdir() if p.is_dir() and _manifests(p))
    if not splits:
        raise FileNotFoundError(
            f"{str(folder)!r} holds no shards (folders named shard-RRRRR-of-WWWWW written by "
            "explain_dataset(..., output_dir=...))"
        )
    return datasets.DatasetDict({p.name: _load_split(p) for p in splits})


def _load_split(folder: Path):
    import datasets

    manifests = _manifests(folder)
    worlds = sorted({m["world_size"] for m in manifests.values()})
    if len(worlds) > 1:
        raise IncompleteShardsError(
            f"{str(folder)!r} mixes shards of runs with {' and '.join(map(str, worlds))} processes; "
            "explain again into an empty folder"
        )
    if not manifests:
        raise IncompleteShardsError(f"{str(folder)!r} holds no finished shard (only unfinished writes)")
    world = worlds[0]
    jobs = {m["job"] for m in manifests.values()}
    if len(jobs) > 1:
        raise IncompleteShardsError(
            f"the shards in {str(folder)!r} come from different runs (other settings, model or data); "
            "explain again into an empty folder"
        )
    by_rank = {m["rank"]: name for name, m in manifests.items()}
    missing = [r for r in range(world) if r not in by_rank]
    if missing:
        unfinished = {r for r in missing if any(p.name.startswith(f".{shard_name(r, world)}.tmp-") for p in folder.iterdir())}
        described = ", ".join(
            f"rank {r} ({shard_name(r, world)}{', an unfinished write is there' if r in unfinished else ''})" for r in missing
        )
        raise IncompleteShardsError(
            f"{str(folder)!r} holds {world - len(missing)} of {world} shards; missing: {described}. Run "
            f"explain_dataset(..., shard=(rank, {world}), output_dir=...) for the missing rank(s), or launch the job again"
        )
    parts = []
    for rank in range(world):
        part = datasets.load_from_disk(str(folder / by_rank[rank]))
        expected = manifests[by_rank[rank]]["rows"]
        if len(part) != expected:
            raise IncompleteShardsError(f"{by_rank[rank]} in {str(folder)!r} has {len(part)} rows; its manifest says {expected}")
        parts.append(part)
    merged = datasets.concatenate_datasets(parts) if len(parts) > 1 else parts[0]
    if manifests[by_rank[0]].get("order") == "interleaved" and world > 1:
        offsets = [sum(len(p) for p in parts[:r]) for r in range(world)]
        merged = merged.select([offsets[j % world] + j // world for j in range(len(merged))])
    return merged
