"""One front door: the explainer, the pipeline and the CLI agree; settings are checked once, early."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import pipeline as hf_pipeline

from hf_vit_rollout import Explanation, InputError, RolloutExplainer, TargetError
from hf_vit_rollout.cli import main
from hf_vit_rollout.pipeline import TASK, pipeline


@pytest.fixture(scope="module")
def pictures():
    return [Image.fromarray(np.random.default_rng(i).integers(0, 256, (40, 40, 3), dtype=np.uint8)) for i in range(3)]


# ----------------------------------------------------------------------------------- pipeline
def test_the_pipeline_knows_the_demo_model(pictures):
    explain = pipeline(TASK, model="demo", method="gae")
    result = explain(pictures[0])
    direct = RolloutExplainer.from_pretrained("demo")(pictures[0], method="gae")
    np.testing.assert_array_equal(result["explanation"].mask, direct.mask)
    assert result["label"] == direct.label and result["score"] == direct.score


def test_pipeline_settings_are_checked_when_it_is_built(checkpoint):
    with pytest.raises(ValueError, match="head_fusion"):
        hf_pipeline(TASK, model=checkpoint("vit"), head_fusion="median")
    with pytest.raises(TargetError, match="did you mean 'dog'"):
        hf_pipeline(TASK, model=checkpoint("vit"), method="gae", target="dgo")
    with pytest.raises(TypeError, match="unknown keyword.*'colour'"):
        hf_pipeline(TASK, model=checkpoint("vit"))(np.zeros((32, 32, 3), np.uint8), colour="red")


@pytest.mark.parametrize("batch_size", [1, 2, 3])
def test_per_image_targets_are_per_image_whatever_the_batch_size(checkpoint, pictures, batch_size):
    explain = hf_pipeline(TASK, model=checkpoint("vit"), method="gae")
    targets = [0, None, "dog"]
    results = [r["explanation"] for r in explain(pictures, target=targets, batch_size=batch_size)]
    direct = RolloutExplainer.from_pretrained(checkpoint("vit"))(pictures, target=targets, method="gae")
    assert [r.target for r in results] == [d.target for d in direct]
    assert results[2].target == 1 and results[0].target == 0
    for got, want in zip(results, direct):
        np.testing.assert_allclose(got.mask, want.mask, rtol=1e-5, atol=1e-6)


def test_top_k_explains_the_k_most_probable_classes_from_one_forward_pass(checkpoint, pictures):
    explainer = RolloutExplainer.from_pretrained(checkpoint("vit"))
    calls = []
    handle = explainer.model.register_forward_hook(lambda *args: calls.append(1))
    try:
        top = explainer(pictures[0], top_k=3, method="gae")
    finally:
        handle.remove()
    assert len(calls) == 1
    probabilities = explainer.predict(pictures[0])[0]
    assert [e.target for e in top] == torch.argsort(probabilities, descending=True)[:3].tolist()
    for explanation in top:
        np.testing.assert_allclose(explanation.mask, explainer(pictures[0], target=explanation.target, method="gae").mask, rtol=1e-5, atol=1e-6)
    through_pipeline = hf_pipeline(TASK, model=checkpoint("vit"), method="gae")(pictures[:2], top_k=2)
    assert [len(r) for r in through_pipeline] == [2, 2]
    direct_top = explainer(pictures[:2], top_k=2, method="gae")
    for got, want in zip(through_pipeline, direct_top):
        assert [r["explanation"].target for r in got] == [e.target for e in want]
        assert [r["label"] for r in got] == [e.label for e in want]
        for one, other in zip(got, want):
            np.testing.assert_allclose(one["explanation"].mask, other.mask, rtol=1e-5, atol=1e-6)
    with pytest.raises(TargetError, match="class-agnostic"):
        explainer(pictures[0], top_k=2, method="rollout")


def test_a_backbone_is_never_given_a_random_head(checkpoint, pictures):
    explain = hf_pipeline(TASK, model=checkpoint("vit_backbone"))
    assert not hasattr(explain.model, "classifier")
    result = explain(pictures[0])
    assert result["label"] is None and result["score"] is None and result["explanation"].predicted is None


def test_text_works_through_the_pipeline_as_in_the_explainer(checkpoint, pictures):
    explain = pipeline(TASK, model=checkpoint("clip"), method="gae")
    through_pipeline = explain(pictures[0], text="a photo of a dog")
    direct = RolloutExplainer.from_pretrained(checkpoint("clip"))(pictures[0], text="a photo of a dog", method="gae")
    np.testing.assert_allclose(through_pipeline["explanation"].mask, direct.mask, rtol=1e-5, atol=1e-6)
    assert through_pipeline["label"] == "a photo of a dog"


def test_an_empty_list_is_a_clear_error(checkpoint):
    with pytest.raises(InputError, match="no images"):
        hf_pipeline(TASK, model=checkpoint("vit"))([])
    with pytest.raises(InputError, match="empty list"):
        RolloutExplainer.from_pretrained(checkpoint("vit"))([])


# ----------------------------------------------------------------------------------- targets
@pytest.fixture(scope="module")
def explainer(checkpoint):
    return RolloutExplainer.from_pretrained(checkpoint("vit"), method="gae")


@pytest.mark.parametrize(
    "target,match",
    [
        (lambda out: out.logits[:, 0].detach(), "carry no gradient"),
        (lambda out: out.logits.argmax(-1), "floating-point"),
        (lambda out: out.logits[:, 0] * float("nan"), "NaN or infinite"),
        (lambda out: out.logits, r"\(1,\) tensor"),
        ({0: "cat"}, "dict, which has no image order"),
        ({0, 1}, "set, which has no image order"),
        (1.5, "class index"),
    ],
)
def test_bad_targets_get_a_target_error_that_says_what_is_needed(explainer, pictures, target, match):
    with pytest.raises(TargetError, match=match):
        explainer(pictures[0], target=target)


def test_numpy_scalars_are_numbers_and_none_means_predicted(explainer, pictures):
    a = explainer(pictures[:2], target=[None, np.int64(1)], discard_ratio=np.float32(0.5), head_fusion="max")
    assert a[0].target == a[0].predicted and a[1].target == 1
    assert a[0].params["discard_ratio"] == 0.5


def test_explanations_compare_without_raising(explainer, pictures):
    first, again = explainer(pictures[0]), explainer(pictures[0])
    assert first == again
    assert first != explainer(pictures[1])
    assert first != "an explanation"


def test_overlong_clip_text_is_truncated_with_a_warning(checkpoint, pictures):
    clip = RolloutExplainer.from_pretrained(checkpoint("clip"), method="gae")
    with pytest.warns(UserWarning, match="truncated"):
        result = clip(pictures[0], text="a photo of a dog " * 40)
    assert result.mask.shape == (4, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clip(pictures[0], text="a dog")


# ----------------------------------------------------------------------------------- CLI
def _run_cli(args, capsys):
    code = main(args)
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    "extra,match",
    [
        (["--device", "bogus"], "unknown device 'bogus'"),
        (["--device", "cuda"], "not available"),
        (["--device", "cuda:7"], "not available"),
        (["--top_k", "zero"], "invalid int value"),
    ],
)
def test_cli_errors_are_one_line_with_exit_code_2(checkpoint, tmp_path, capsys, extra, match):
    if extra[-1].startswith("cuda"):
        index = int(extra[-1].partition(":")[2] or 0)
        if torch.cuda.device_count() > index:
            pytest.skip(f"this machine has the GPU {extra[-1]}")
    image = tmp_path / "a.png"
    Image.new("RGB", (32, 32)).save(image)
    model = checkpoint("vit")
    capsys.readouterr()  # building the checkpoint (first use) writes a progress bar to stderr
    with pytest.raises(SystemExit) if "--top_k" in extra else _no_exit():
        code, err = _run_cli([str(image), "--model", model, "--out", str(tmp_path / "o"), *extra], capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1 and match in err, err
    if "--top_k" in extra:
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and match in err


class _no_exit:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_cli_checks_the_output_folder_before_any_work(tmp_path, capsys):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    image = tmp_path / "a.png"
    Image.new("RGB", (32, 32)).save(image)
    # a model that does not exist: the output folder is reported first, before any loading
    code, err = _run_cli([str(image), "--model", "./no-such-model", "--out", str(blocker / "sub")], capsys)
    assert code == 2 and "output folder" in err and len(err.strip().splitlines()) == 1
    code, err = _run_cli([str(image), "--out", str(blocker)], capsys)
    assert code == 2 and "is an existing file" in err
    code, err = _run_cli(["demo", "--out", str(blocker)], capsys)
    assert code == 2 and "is an existing file" in err and "Traceback" not in err


def test_cli_output_names_never_collide(checkpoint, tmp_path, capsys):
    paths = []
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        path = tmp_path / folder / "x.png"
        Image.fromarray(np.random.default_rng(len(paths)).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    out = tmp_path / "out"
    assert main([*paths, paths[0], "--model", checkpoint("vit"), "--out", str(out), "--quiet"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "a_x_2_rollout_mean_0.9.png", "a_x_rollout_mean_0.9.png", "b_x_rollout_mean_0.9.png"
    ]


def test_cli_writes_each_result_as_soon_as_it_is_done(checkpoint, tmp_path, monkeypatch):
    """The second image is explained only after the first overlay is on disk (streaming, flat memory)."""
    from hf_vit_rollout import stages

    paths = []
    for i in range(3):
        path = tmp_path / f"img{i}.png"
        Image.new("RGB", (32, 32), (i * 40, 0, 0)).save(path)
        paths.append(str(path))
    out = tmp_path / "out"
    seen = []
    real = stages.preprocess

    def watching(explainer, source, target=None, where="image"):
        seen.append(sorted(p.name for p in out.iterdir()) if out.exists() else [])
        return real(explainer, source, target, where)

    monkeypatch.setattr(stages, "preprocess", watching)
    assert main([*paths, "--model", checkpoint("vit"), "--out", str(out), "--batch_size", "1", "--quiet"]) == 0
    assert [len(s) for s in seen] == [0, 1, 2]


def test_cli_top_k_writes_one_overlay_per_class(checkpoint, tmp_path):
    image = tmp_path / "a.png"
    Image.new("RGB", (32, 32), (10, 200, 30)).save(image)
    out = tmp_path / "out"
    assert main([str(image), "--model", checkpoint("vit"), "--top_k", "2", "--out", str(out), "--quiet"]) == 0
    assert len(list(Path(out).iterdir())) == 2


def test_named_pipe_on_the_cli_fails_at_once(tmp_path):
    import os

    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    result = subprocess.run(
        [sys.executable, "-m", "hf_vit_rollout.cli", str(fifo), "--out", str(tmp_path / "o")],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2 and "named pipe" in result.stderr and "Traceback" not in result.stderr


def test_explanation_type_is_exported():
    assert Explanation.__eq__ is not object.__eq__


def test_the_pipeline_streams_generators_and_data_sets(checkpoint, pictures):
    explain = hf_pipeline(TASK, model=checkpoint("vit"), method="gae")
    streamed = [r["explanation"] for r in explain((p for p in pictures), batch_size=2)]
    direct = RolloutExplainer.from_pretrained(checkpoint("vit"))(pictures, method="gae")
    assert len(streamed) == len(pictures)
    for got, want in zip(streamed, direct):
        np.testing.assert_allclose(got.mask, want.mask, rtol=1e-5, atol=1e-6)


def test_cli_names_carry_layer_head_and_start_layer(checkpoint, tmp_path):
    image = tmp_path / "a.png"
    Image.new("RGB", (32, 32), (10, 200, 30)).save(image)
    out = tmp_path / "out"
    common = [str(image), "--model", checkpoint("vit"), "--out", str(out), "--quiet"]
    assert main([*common, "--method", "attention", "--layer", "0", "--head", "1"]) == 0
    assert main([*common, "--method", "attention", "--layer", "1"]) == 0
    assert main([*common, "--method", "gae", "--start_layer", "1"]) == 0
    names = sorted(p.name for p in Path(out).iterdir())
    assert len(names) == 3
    assert any("layer0_head1" in n for n in names) and any("layer1" in n and "head" not in n for n in names)
    assert any("_from1_" in n for n in names)


def test_per_call_targets_replace_the_pipelines_objective(checkpoint, pictures):
    explainer = RolloutExplainer.from_pretrained(checkpoint("vit"))
    predicted = [int(p.argmax()) for p in explainer.predict(pictures[:2])]
    with_top_k = hf_pipeline(TASK, model=checkpoint("vit"), method="gae", top_k=2)
    assert [r["explanation"].target for r in with_top_k(pictures[:2], target=[0, 1])] == [0, 1]
    with_target = hf_pipeline(TASK, model=checkpoint("vit"), method="gae", target="tabby")
    assert [r["explanation"].target for r in with_target(pictures[:2], target=[0, None])] == [0, predicted[1]]


def test_relevance_maps_with_text_and_top_k(checkpoint):
    clip = RolloutExplainer.from_pretrained(checkpoint("clip"), method="gae")
    pixels = torch.rand(2, 3, 32, 32)
    maps = clip.relevance_maps(pixels, text="a dog")
    assert maps.shape == (2, 4, 4)
    vit = RolloutExplainer.from_pretrained(checkpoint("vit"), method="gae")
    with pytest.raises(ValueError, match="top_k"):
        vit.relevance_maps(pixels, top_k=2)
