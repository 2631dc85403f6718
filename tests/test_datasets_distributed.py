"""explain_dataset across processes: shards, their reassembly, torchrun with gloo, Ray Data."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

datasets = pytest.importorskip("datasets")

from hf_vit_rollout import RolloutExplainer  # noqa: E402
from hf_vit_rollout.datasets import BatchExplainer, IncompleteShardsError, explain_dataset, load_shards  # noqa: E402
from hf_vit_rollout.datasets.shards import shard_from_environment  # noqa: E402

LABELS = [0, 1, 2, 3, 1, 2, 0]


@pytest.fixture(scope="module")
def small_dataset():
    rng = np.random.default_rng(1)
    images = [Image.fromarray(rng.integers(0, 256, (36, 40, 3), dtype=np.uint8)) for _ in range(len(LABELS))]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    return datasets.Dataset.from_dict({"image": images, "label": LABELS}, features=features)


@pytest.fixture(scope="module")
def explainer(checkpoint):
    return RolloutExplainer.from_pretrained(checkpoint("vit"), method="gae")


def _same(a, b):
    assert a.column_names == b.column_names and len(a) == len(b)
    for column in a.column_names:
        if column.endswith("_mask"):
            np.testing.assert_allclose(
                np.asarray(a.with_format("numpy")[column]), np.asarray(b.with_format("numpy")[column]), rtol=1e-5, atol=1e-6
            )
        elif column != "image":
            assert a[column] == b[column], column


@pytest.mark.parametrize("streaming", [False, True])
def test_shards_reassemble_in_order_and_an_incomplete_set_is_refused(explainer, small_dataset, tmp_path, streaming):
    whole = explain_dataset(small_dataset, explainer, target_column="label")
    source = small_dataset.to_iterable_dataset(num_shards=1) if streaming else small_dataset
    parts = [explain_dataset(source, explainer, target_column="label", shard=(r, 3), output_dir=tmp_path) for r in range(3)]
    assert [len(p) for p in parts] == ([3, 2, 2] if streaming else [3, 2, 2])
    merged = load_shards(tmp_path)
    _same(merged, whole)
    assert merged["label"] == LABELS
    shutil.rmtree(tmp_path / "shard-00001-of-00003")
    (tmp_path / ".shard-00001-of-00003.tmp-deadbeef").mkdir()
    with pytest.raises(IncompleteShardsError, match=r"2 of 3 shards; missing: rank 1 \(shard-00001-of-00003, an unfinished write"):
        load_shards(tmp_path)


def test_runs_do_not_mix(explainer, small_dataset, tmp_path):
    explain_dataset(small_dataset, explainer, shard=(0, 2), output_dir=tmp_path)
    calls = []
    handle = explainer.model.register_forward_hook(lambda *args: calls.append(1))
    try:
        with pytest.raises(FileExistsError, match="another run"):  # other settings, same folder: before any work
            explain_dataset(small_dataset, explainer, start_layer=1, shard=(1, 2), output_dir=tmp_path)
        with pytest.raises(FileExistsError, match="another run"):  # another number of processes
            explain_dataset(small_dataset, explainer, shard=(1, 3), output_dir=tmp_path)
    finally:
        handle.remove()
    assert calls == []
    manifest = tmp_path / "shard-00000-of-00002" / "hf_vit_rollout_shard.json"
    (tmp_path / "shard-00001-of-00002").mkdir()
    shutil.copytree(tmp_path / "shard-00000-of-00002", tmp_path / "shard-00001-of-00002", dirs_exist_ok=True)
    info = json.loads(manifest.read_text())
    (tmp_path / "shard-00001-of-00002" / manifest.name).write_text(json.dumps({**info, "rank": 1, "job": "other"}))
    with pytest.raises(IncompleteShardsError, match="different runs"):
        load_shards(tmp_path)


def test_dataset_dict_shards_come_back_as_a_dataset_dict(explainer, small_dataset, tmp_path):
    splits = datasets.DatasetDict({"train": small_dataset, "test": small_dataset.select([6, 2, 4])})
    for rank in range(2):
        explain_dataset(splits, explainer, target_column="label", shard=(rank, 2), output_dir=tmp_path)
    merged = load_shards(tmp_path)
    assert isinstance(merged, datasets.DatasetDict) and sorted(merged) == ["test", "train"]
    _same(merged["test"], explain_dataset(splits["test"], explainer, target_column="label"))


def test_shard_auto_reads_the_launchers_variables(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "PMI_RANK", "PMI_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert shard_from_environment() == (0, 1)
    monkeypatch.setenv("SLURM_PROCID", "3")
    monkeypatch.setenv("SLURM_NTASKS", "4")
    assert shard_from_environment() == (3, 4)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert shard_from_environment() == (1, 2)
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ValueError, match="RANK='2'.*rank must lie in 0..1"):
        shard_from_environment()


def test_two_torchrun_processes_with_gloo_give_the_single_process_result(checkpoint, small_dataset, tmp_path):
    small_dataset.save_to_disk(tmp_path / "data")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "hf_vit_rollout.datasets", str(tmp_path / "data"), str(tmp_path / "out"),
        "--model", checkpoint("vit"), "--methods", "gae", "rollout", "--target_column", "label", "--batch_size", "2",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "rank 0/2: 4 rows" in result.stdout and "rank 1/2: 3 rows" in result.stdout, result.stdout
    assert "2 shard(s), 7 rows" in result.stdout
    merged = load_shards(tmp_path / "out")
    explainer = RolloutExplainer.from_pretrained(checkpoint("vit"))
    _same(merged, explain_dataset(small_dataset, explainer, target_column="label", methods=["gae", "rollout"]))


def test_ray_data_map_batches_with_one_explainer_per_actor(checkpoint, small_dataset):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        rows = [{"image": np.asarray(row["image"]), "label": row["label"]} for row in small_dataset]
        explained = ray.data.from_items(rows).map_batches(
            BatchExplainer,
            fn_constructor_kwargs={"explainer": checkpoint("vit"), "target_column": "label", "methods": "gae", "batch_format": "numpy"},
            compute=ray.data.ActorPoolStrategy(size=2), batch_size=3, batch_format="numpy",
        ).take_all()
    finally:
        ray.shutdown()
    explainer = RolloutExplainer.from_pretrained(checkpoint("vit"))
    direct = explainer([row["image"] for row in small_dataset], target=LABELS, method="gae")
    by_label = sorted(range(len(explained)), key=lambda i: (explained[i]["label"], explained[i]["gae_score"]))
    expected = sorted(range(len(direct)), key=lambda i: (LABELS[i], direct[i].score))
    for got, want in zip(by_label, expected):
        np.testing.assert_allclose(explained[got]["gae_mask"], direct[want].mask, rtol=1e-5, atol=1e-6)
        assert explained[got]["gae_target"] == direct[want].target


def test_the_speed_benchmark_prints_every_in_process_row():
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "datasets_speed.py"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    result = subprocess.run(
        [sys.executable, str(script), "--images", "4", "--batches", "2", "--no-launch"],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("    2  ")]
    names = [line[7:41].strip() for line in rows]
    assert "loop, 1 thread(s)" in names and "explain_dataset, 1 thread(s)" in names and "num_proc=2, 1 thread each" in names
    assert all(float(line.split()[-2]) > 0 for line in rows) and "load after" in result.stdout
