"""explain_dataset: columns, settings, kinds of data sets, caching, num_proc, bad input."""

from __future__ import annotations

import io
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

datasets = pytest.importorskip("datasets")

import hf_vit_rollout  # noqa: E402
from hf_vit_rollout import InputError, RolloutExplainer, TargetError  # noqa: E402
from hf_vit_rollout.datasets import explain_dataset, weights_digest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LABELS = [0, 1, 2, 3, 1, 2]


def _pictures(count=6, size=(40, 36)):
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)) for _ in range(count)]


@pytest.fixture(scope="module")
def small_dataset():
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    return datasets.Dataset.from_dict({"image": _pictures(), "label": LABELS}, features=features)


@pytest.fixture(scope="module")
def explainer(checkpoint):
    return RolloutExplainer.from_pretrained(checkpoint("vit"), method="gae")


def _masks(dataset, column):
    return np.asarray(dataset.with_format("numpy")[column])


def test_it_is_exported_at_the_top_level():
    assert hf_vit_rollout.explain_dataset is explain_dataset
    assert "explain_dataset" in hf_vit_rollout.__all__


def test_columns_side_by_side_match_the_explainer(explainer, small_dataset):
    methods = ["rollout", "gae", {"method": "attention", "layer": 0, "head": 1, "name": "head1"}]
    out = explain_dataset(
        small_dataset, explainer, target_column="label", methods=methods, batch_size=4,
        outputs=["mask", "target", "label", "score", "heatmap", "overlay"],
    )
    features = out.features
    assert features["gae_mask"] == datasets.Array2D((4, 4), "float32")
    assert features["gae_target"] == datasets.Value("int64") and features["gae_label"] == datasets.Value("string")
    assert features["gae_score"] == datasets.Value("float32")
    assert isinstance(features["gae_heatmap"], datasets.Image) and isinstance(features["head1_overlay"], datasets.Image)
    images = [row["image"] for row in small_dataset]
    expected = {
        "gae": explainer(images, target=LABELS, method="gae"),
        "rollout": explainer(images, method="rollout"),
        "head1": explainer(images, method="attention", layer=0, head=1),
    }
    for name, direct in expected.items():
        np.testing.assert_allclose(_masks(out, f"{name}_mask"), np.stack([e.mask for e in direct]), rtol=1e-5, atol=1e-6)
        assert out[f"{name}_target"] == [e.target for e in direct]
        assert out[f"{name}_label"] == [e.label for e in direct]
        np.testing.assert_allclose(out[f"{name}_score"], [e.score for e in direct], rtol=1e-6)
    assert out["gae_target"] == LABELS and out["rollout_target"] == [None] * 6
    row, first = out[2], expected["gae"][2]
    assert row["gae_heatmap"].size == first.image.size and row["gae_heatmap"].mode == "L"
    np.testing.assert_allclose(np.asarray(row["gae_heatmap"]) / 255, first.heatmap, atol=0.5 / 255 + 1e-6)
    assert np.abs(np.asarray(row["gae_overlay"], np.int16) - np.asarray(first.overlay(), np.int16)).max() <= 1


def test_request_settings_reach_every_row(explainer, small_dataset, checkpoint):
    out = explain_dataset(small_dataset.select(range(3)), explainer, methods=["gae"], top_k=2, start_layer=1)
    assert out.features["gae_mask"] == datasets.Array3D((2, 4, 4), "float32")
    images = [row["image"] for row in small_dataset.select(range(3))]
    direct = explainer(images, method="gae", top_k=2, start_layer=1)
    assert out["gae_target"] == [[e.target for e in group] for group in direct]
    np.testing.assert_allclose(_masks(out, "gae_mask"), [[e.mask for e in group] for group in direct], rtol=1e-5, atol=1e-6)
    clip = RolloutExplainer.from_pretrained(checkpoint("clip"), method="gae")
    texts = explain_dataset(small_dataset.select(range(2)), clip, text="a photo of a dog")
    assert texts["gae_label"] == ["a photo of a dog"] * 2
    np.testing.assert_allclose(
        _masks(texts, "gae_mask"), [e.mask for e in clip(images[:2], text="a photo of a dog")], rtol=1e-5, atol=1e-6
    )


def test_streaming_and_dataset_dicts(explainer, small_dataset, tmp_path):
    direct = explainer([row["image"] for row in small_dataset], target=LABELS)
    streamed = explain_dataset(small_dataset.to_iterable_dataset(num_shards=2), explainer, target_column="label", batch_size=4)
    assert isinstance(streamed, datasets.IterableDataset)
    rows = list(streamed)
    assert [r["gae_target"] for r in rows] == LABELS
    np.testing.assert_allclose(np.stack([r["gae_mask"] for r in rows]), np.stack([e.mask for e in direct]), rtol=1e-5, atol=1e-6)
    for i, picture in enumerate(_pictures()):  # an imagefolder, streamed from disk
        (tmp_path / "folder" / f"class{LABELS[i]}").mkdir(parents=True, exist_ok=True)
        picture.save(tmp_path / "folder" / f"class{LABELS[i]}" / f"{i}.png")
    folder = datasets.load_dataset("imagefolder", data_dir=str(tmp_path / "folder"), split="train", streaming=True)
    from_folder = list(explain_dataset(folder, explainer, method="rollout"))
    assert len(from_folder) == 6 and all(r["rollout_mask"].shape == (4, 4) for r in from_folder)
    both = explain_dataset(datasets.DatasetDict({"train": small_dataset, "test": small_dataset.select([5, 0])}), explainer, target_column="label")
    assert isinstance(both, datasets.DatasetDict) and both["test"]["gae_target"] == [2, 0]
    np.testing.assert_allclose(_masks(both["test"], "gae_mask"), [direct[5].mask, direct[0].mask], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["Array3D", "List", "bytes", "paths"])
def test_array_bytes_and_path_columns_give_the_image_columns_maps(explainer, small_dataset, tmp_path, kind):
    pictures = [np.asarray(row["image"]) for row in small_dataset]
    if kind == "Array3D":
        features = datasets.Features({"image": datasets.Array3D((36, 40, 3), "uint8")})
        data = datasets.Dataset.from_dict({"image": pictures}, features=features)
    elif kind == "List":
        features = datasets.Features({"image": datasets.List(datasets.List(datasets.List(datasets.Value("uint8"))))})
        data = datasets.Dataset.from_dict({"image": [p.tolist() for p in pictures]}, features=features)
    elif kind == "bytes":
        encoded = []
        for p in pictures:
            buffer = io.BytesIO()
            Image.fromarray(p).save(buffer, format="PNG")
            encoded.append(buffer.getvalue())
        data = datasets.Dataset.from_dict({"image": encoded})
    else:
        paths = []
        for i, p in enumerate(pictures):
            Image.fromarray(p).save(tmp_path / f"{i}.png")
            paths.append(str(tmp_path / f"{i}.png"))
        data = datasets.Dataset.from_dict({"image": paths})
    out = explain_dataset(data, explainer, method="rollout")
    reference = explain_dataset(small_dataset, explainer, method="rollout")
    np.testing.assert_array_equal(_masks(out, "rollout_mask"), _masks(reference, "rollout_mask"))


@pytest.mark.parametrize("kind,module", [("numpy", "numpy"), ("torch", "torch"), ("arrow", "pyarrow")])
def test_the_data_sets_format_is_read_through_and_kept(explainer, small_dataset, kind, module):
    reference = explain_dataset(small_dataset, explainer, method="rollout")
    out = explain_dataset(small_dataset.with_format(kind), explainer, method="rollout")
    assert out.format["type"] == kind and type(out[0]["rollout_mask"]).__module__.split(".")[0] == module
    np.testing.assert_array_equal(_masks(out, "rollout_mask"), _masks(reference, "rollout_mask"))


def test_the_fingerprint_never_pickles_the_model_and_the_cache_is_reused(checkpoint, small_dataset, tmp_path, monkeypatch):
    explainer = RolloutExplainer.from_pretrained(checkpoint("vit"), method="gae")

    def refuse(*args):
        raise AssertionError("the model was pickled")

    monkeypatch.setattr(type(explainer.model), "__reduce_ex__", refuse, raising=False)
    with pytest.raises(AssertionError, match="pickled"):
        pickle.dumps(explainer.model)
    small_dataset.save_to_disk(tmp_path / "data")
    on_disk = datasets.load_from_disk(str(tmp_path / "data"))
    first = explain_dataset(on_disk, explainer)
    calls = []
    handle = explainer.model.register_forward_hook(lambda *args: calls.append(1))
    try:
        again = explain_dataset(on_disk, explainer)
        assert calls == [] and again.cache_files == first.cache_files  # read back, not explained again
        other = explain_dataset(on_disk, explainer, start_layer=1)  # other settings: another cache file
        assert calls and other.cache_files != first.cache_files
        calls.clear()
        digest = weights_digest(explainer.model)
        with __import__("torch").no_grad():
            explainer.model.classifier.bias.add_(1.0)  # an in-place change of a weight
        assert weights_digest(explainer.model) != digest
        explain_dataset(on_disk, explainer)
        assert calls  # the changed model is explained again, not read from the stale cache
    finally:
        handle.remove()


def test_num_proc_forks_without_pickling_the_model_even_without_a_main_guard(checkpoint, tmp_path):
    """A script with no ``if __name__ == "__main__"`` guard, a model that cannot be pickled, torch's
    thread pool already used by two threads (a forked worker that used it too would hang), num_proc=2."""
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(f"""
        import numpy as np, datasets, torch
        from PIL import Image
        from hf_vit_rollout import RolloutExplainer, explain_dataset
        torch.set_num_threads(2)
        explainer = RolloutExplainer.from_pretrained({checkpoint("vit")!r}, method="gae")
        def refuse(*args):
            raise RuntimeError("the model was pickled")
        type(explainer.model).__reduce_ex__ = refuse
        rng = np.random.default_rng(0)
        images = [Image.fromarray(rng.integers(0, 256, (36, 40, 3), dtype=np.uint8)) for _ in range(8)]
        data = datasets.Dataset.from_dict({{"image": images}}, features=datasets.Features({{"image": datasets.Image()}}))
        data.save_to_disk({str(tmp_path / "data")!r})
        data = datasets.load_from_disk({str(tmp_path / "data")!r})
        serial = explain_dataset(data, explainer, batch_size=2, load_from_cache_file=False)
        parallel = explain_dataset(data, explainer, batch_size=2, num_proc=2, load_from_cache_file=False)
        a = np.asarray(serial.with_format("numpy")["gae_mask"])
        b = np.asarray(parallel.with_format("numpy")["gae_mask"])
        print("max difference", float(np.abs(a - b).max()), "threads", torch.get_num_threads())
    """))
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=150, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(s for s in result.stdout.splitlines() if s.startswith("max difference"))
    assert float(line.split()[2]) < 1e-5 and line.endswith("threads 2")  # the caller's own setting is left alone


def test_num_proc_is_refused_where_it_cannot_fork(explainer, small_dataset, monkeypatch):
    with pytest.raises(ValueError, match="streaming"):
        explain_dataset(small_dataset.to_iterable_dataset(), explainer, num_proc=2)
    monkeypatch.setattr(sys, "platform", "darwin")
    with pytest.raises(ValueError, match="only on Linux.*torchrun"):
        explain_dataset(small_dataset, explainer, num_proc=2)


def test_results_save_reload_and_export_to_parquet_with_image_columns(explainer, small_dataset, tmp_path):
    out = explain_dataset(small_dataset, explainer, target_column="label", outputs=["mask", "label", "score", "overlay"])
    out.save_to_disk(tmp_path / "saved")
    back = datasets.load_from_disk(str(tmp_path / "saved"))
    assert back.features == out.features
    np.testing.assert_array_equal(_masks(back, "gae_mask"), _masks(out, "gae_mask"))
    assert back[3]["gae_overlay"].tobytes() == out[3]["gae_overlay"].tobytes()
    out.to_parquet(tmp_path / "explained.parquet")  # what push_to_hub uploads, with the features in its metadata
    parquet = datasets.Dataset.from_parquet(str(tmp_path / "explained.parquet"))
    assert parquet.features == out.features and isinstance(parquet[0]["gae_overlay"], Image.Image)
    np.testing.assert_array_equal(_masks(parquet, "gae_mask"), _masks(out, "gae_mask"))


def _no_work(explainer):
    calls = []
    handle = explainer.model.register_forward_hook(lambda *args: calls.append(1))
    return calls, handle


@pytest.mark.parametrize(
    "change,error,match",
    [
        (dict(image_column="picture"), ValueError, "no column 'picture'"),
        (dict(image_column="label"), InputError, "holds Value\\('int64'\\).*not images"),
        (dict(target_column="score"), TargetError, "a target column holds class indices"),
        (dict(target_column="label", method="rollout"), TargetError, "class-agnostic"),
        (dict(target_column="label", top_k=2), TargetError, "only one of them"),
        (dict(discard_ratio=1.5), ValueError, "discard_ratio"),
        (dict(layer=7, method="attention"), ValueError, "layer"),
        (dict(methods=["gae", "gae"]), ValueError, "another name"),
        (dict(outputs=["mask", "masks"]), ValueError, "outputs must name"),
        (dict(mask_column="x"), TypeError, "named after the method"),
        (dict(shard=(2, 2)), ValueError, "rank must lie in 0..1"),
        (dict(shard="everything"), ValueError, "'auto'"),
        (dict(output_dir="somewhere"), ValueError, "shard="),
        (dict(num_proc=0), ValueError, "num_proc"),
        (dict(target="wolf"), TargetError, "wolf"),
    ],
)
def test_bad_input_fails_before_any_work(explainer, small_dataset, change, error, match):
    data = small_dataset.add_column("score", [0.5] * 6)
    calls, handle = _no_work(explainer)
    try:
        with pytest.raises(error, match=match):
            explain_dataset(data, explainer, **change)
    finally:
        handle.remove()
    assert calls == []


def test_unknown_target_values_and_a_split_without_the_column_fail_before_any_work(explainer, small_dataset):
    calls, handle = _no_work(explainer)
    try:
        with pytest.raises(TargetError, match="column 'label' of the dataset holds 9"):
            explain_dataset(small_dataset.map(lambda r: {"label": 9}), explainer, target_column="label")
        splits = datasets.DatasetDict({"train": small_dataset, "test": small_dataset.remove_columns("label")})
        with pytest.raises(ValueError, match="split 'test' has no column 'label'"):
            explain_dataset(splits, explainer, target_column="label")
        with pytest.raises(TypeError, match="DatasetDict"):
            explain_dataset([row["image"] for row in small_dataset], explainer)
    finally:
        handle.remove()
    assert calls == []


def test_a_bad_row_is_named_and_leaves_no_shard_that_looks_complete(explainer, small_dataset, tmp_path):
    broken = small_dataset.cast_column("image", datasets.Image(decode=False))
    rows = broken.to_list()
    rows[4]["image"] = {"bytes": b"not a png", "path": None}
    broken = datasets.Dataset.from_list(rows, features=broken.features)
    with pytest.raises(InputError, match="row 4 of column 'image' holds 9 bytes"):
        explain_dataset(broken, explainer, shard=(1, 2), output_dir=tmp_path / "out")  # rank 1 holds rows 3-5
    assert not any(p.name.startswith("shard-") for p in (tmp_path / "out").glob("*"))


def test_an_interrupted_shard_write_leaves_nothing_that_looks_complete(explainer, small_dataset, tmp_path, monkeypatch):
    from hf_vit_rollout.datasets import load_shards

    real = datasets.Dataset.save_to_disk
    seen = []

    def crash(self, path, *args, **kwargs):  # the process dies with its data written, before it finished
        real(self, path, *args, **kwargs)
        seen.extend(p.name for p in (tmp_path / "out").iterdir())
        raise OSError("disk full")

    monkeypatch.setattr(datasets.Dataset, "save_to_disk", crash)
    with pytest.raises(OSError, match="disk full"):
        explain_dataset(small_dataset, explainer, shard=(0, 1), output_dir=tmp_path / "out")
    assert seen and not any(name.startswith("shard-") for name in seen)  # written under a temporary name
    assert list((tmp_path / "out").iterdir()) == []
    with pytest.raises(FileNotFoundError, match="holds no shards"):
        load_shards(tmp_path / "out")


def test_a_processor_without_resizing_gives_masks_of_each_images_grid(checkpoint):
    import transformers

    model = transformers.AutoModelForImageClassification.from_pretrained(checkpoint("vit"))
    processor = transformers.ViTImageProcessorPil(do_resize=False)
    explainer = RolloutExplainer(model, processor, interpolate_pos_encoding=True)
    images = [Image.new("RGB", (32, 32), (200, 10, 10)), Image.new("RGB", (48, 40), (10, 200, 10))]
    data = datasets.Dataset.from_dict({"image": images}, features=datasets.Features({"image": datasets.Image()}))
    out = explain_dataset(data, explainer, batch_size=1)
    assert out.features["rollout_mask"] == datasets.List(datasets.List(datasets.Value("float32")))
    masks = [np.asarray(m, np.float32) for m in out["rollout_mask"]]
    assert [m.shape for m in masks] == [(4, 4), (5, 6)]
    for mask, image in zip(masks, images):
        np.testing.assert_array_equal(mask, explainer(image).mask)


def test_images_of_different_sizes_share_a_batch_with_a_processor_that_does_not_resize(checkpoint):
    import transformers

    model = transformers.AutoModelForImageClassification.from_pretrained(checkpoint("vit"))
    explainer = RolloutExplainer(model, transformers.ViTImageProcessorPil(do_resize=False), interpolate_pos_encoding=True)
    images = [Image.new("RGB", (32, 32), (200, 10, 10)), Image.new("RGB", (48, 40), (10, 200, 10))]
    data = datasets.Dataset.from_dict({"image": images}, features=datasets.Features({"image": datasets.Image()}))
    out = explain_dataset(data, explainer, batch_size=2)
    assert [np.shape(m) for m in out["rollout_mask"]] == [(4, 4), (5, 6)]
