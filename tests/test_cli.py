"""The hf-vit-rollout command: original flags, outputs, errors, the offline demo, and the command
line's conventions (folders, --version, labels, saved maps and predictions, a progress bar that
completes, --local-files-only, errors in the command's own terms)."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hf_vit_rollout import METHODS, RolloutExplainer, __version__
from hf_vit_rollout.cli import COMMANDS, main, shell_terms


@pytest.fixture()
def image_files(tmp_path):
    paths = []
    for i in range(2):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def test_explain_with_original_flags(checkpoint, image_files, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["--image_path", image_files[0], "--model", checkpoint("vit"), "--head_fusion", "max",
                 "--discard_ratio", "0.8", "--out", str(out), "--quiet"])
    assert code == 0
    written = sorted(p.name for p in out.iterdir())
    assert written == ["img0_rollout_max_0.8.png"]
    assert Image.open(out / written[0]).size == (48, 40)
    assert "rollout" in capsys.readouterr().out


def test_category_index_switches_to_gradient_rollout(checkpoint, image_files, tmp_path):
    out = tmp_path / "out"
    assert main([*image_files, "--model", checkpoint("vit"), "--category_index", "2", "--out", str(out), "--quiet"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["img0_grad_rollout_mean_0.9_2.png", "img1_grad_rollout_mean_0.9_2.png"]


def test_target_by_name_and_method(checkpoint, image_files, tmp_path):
    out = tmp_path / "out"
    assert main([image_files[1], "--model", checkpoint("vit"), "--target", "dog", "--method", "gae", "--out", str(out), "--quiet"]) == 0
    assert [p.name for p in out.iterdir()] == ["img1_gae_mean_0_1.png"]


@pytest.mark.parametrize(
    "args,message",
    [
        ([], "no images given"),
        (["missing.png"], "image file not found"),
        (["IMG", "--category_index", "99"], "out of range"),
        (["IMG", "--discard_ratio", "1.5"], r"\[0, 1\)"),
        (["IMG", "--category_index", "1", "--target", "cat"], "either --category_index or --target"),
        (["IMG", "--method", "flow", "--target", "cat"], "class-agnostic"),
        (["IMG", "--method", "attention", "--layer", "7"], "the model has 3 attention layers"),
        (["IMG", "--method", "gae", "--start_layer", "3", "--target", "cat"], "start_layer 3 is out of range"),
    ],
)
def test_errors_are_one_clear_line(checkpoint, image_files, tmp_path, capsys, args, message):
    args = [image_files[0] if a == "IMG" else a for a in args]
    code = main([*args, "--model", checkpoint("vit"), "--out", str(tmp_path), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("hf-vit-rollout: error:") and "Traceback" not in err
    assert __import__("re").search(message, err), err


def test_unsupported_model_error(checkpoint, image_files, tmp_path, capsys):
    assert main([image_files[0], "--model", checkpoint("resnet"), "--out", str(tmp_path)]) == 2
    assert "not supported" in capsys.readouterr().err


def test_console_script_is_installed():
    result = subprocess.run([sys.executable, "-m", "hf_vit_rollout.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "--head_fusion" in result.stdout and "--category_index" in result.stdout


def test_demo_runs_offline_on_the_shipped_model(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path)]) == 0
    figure = tmp_path / "demo_methods.png"
    assert figure.is_file() and Image.open(figure).size[0] > 800
    written = {p.name for p in tmp_path.iterdir()}
    from hf_vit_rollout.demo import example_images

    for image in example_images():  # every registered method on every example image
        for method in METHODS:
            assert any(re.fullmatch(rf"{image.stem}_{method}(_[a-z]+)?\.png", n) for n in written), (image.name, method)
    # class-specific maps for each detected object of the two-object examples
    assert {n for n in written if n.startswith("3_ring_crescent_gae_")} == {"3_ring_crescent_gae_ring.png", "3_ring_crescent_gae_crescent.png"}
    assert sorted(p.name for p in (tmp_path / "inputs").iterdir()) == [p.name for p in example_images()]
    assert str(figure) in capsys.readouterr().out


# ----------------------------------------------------------------------------- conventions
@pytest.fixture()
def photo_tree(tmp_path):
    """photos/a.png, photos/b.jpg, photos/notes.txt, photos/.hidden.png, photos/sub/c.png."""
    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    rng = np.random.default_rng(3)
    for name in ("a.png", "b.jpg", ".hidden.png", "sub/c.png"):
        Image.fromarray(rng.integers(0, 256, (36, 44, 3), dtype=np.uint8)).save(root / name)
    (root / "notes.txt").write_text("not an image")
    return root


def _run(args, capsys):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_top_level_help_lists_every_command_and_method(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for name in ("explain", "demo", "evaluate", "labels", "app"):
        assert re.search(rf"^  {name} ", text, re.M), name
    assert set(COMMANDS) == {"explain", "demo", "evaluate", "labels", "app"}
    for method in METHODS:
        assert re.search(rf"^  {method} +\S", text, re.M), method


@pytest.mark.parametrize("command", ["demo", "evaluate"])
def test_subcommand_help_names_every_registered_method(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for method in METHODS:
        assert method in text, (command, method)


def test_every_command_is_dispatched(monkeypatch):
    import hf_vit_rollout.cli as cli

    called = []
    for name in COMMANDS:
        summary, _ = COMMANDS[name]
        monkeypatch.setitem(cli.COMMANDS, name, (summary, lambda argv, n=name: called.append((n, argv)) or 0))
    for name in COMMANDS:
        assert main([name, "--x"]) == 0
    assert called == [(name, ["--x"]) for name in COMMANDS]


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.strip() == f"hf-vit-rollout {__version__}"


def test_explain_command_name_is_the_default(checkpoint, image_files, tmp_path, capsys):
    code, out, _ = _run(["explain", image_files[0], "--model", checkpoint("vit"), "--out", tmp_path / "o", "--quiet"], capsys)
    assert code == 0 and sorted(p.name for p in (tmp_path / "o").iterdir()) == ["img0_rollout_mean_0.9.png"]


def test_folders_as_input_and_recursive(checkpoint, photo_tree, tmp_path, capsys):
    out = tmp_path / "flat"
    code, printed, _ = _run([photo_tree, "--model", checkpoint("vit"), "--out", out, "--quiet"], capsys)
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["a_rollout_mean_0.9.png", "b_rollout_mean_0.9.png"]
    out = tmp_path / "deep"
    code, printed, _ = _run([photo_tree, "--recursive", "--model", checkpoint("vit"), "--out", out, "--quiet"], capsys)
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["a_rollout_mean_0.9.png", "b_rollout_mean_0.9.png", "c_rollout_mean_0.9.png"]
    assert printed.index("a.png") < printed.index("b.jpg") < printed.index("c.png")  # sorted, folder by folder


def test_a_folder_without_images_is_one_clear_line(tmp_path, photo_tree, capsys):
    for name in ("a.png", "b.jpg", ".hidden.png"):
        (photo_tree / name).unlink()
    code, _, err = _run([photo_tree, "--out", tmp_path / "o"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "has no image files" in err and "--recursive" in err and "glob" not in err
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = _run([empty, "--recursive", "--out", tmp_path / "o"], capsys)
    assert code == 2 and "has no image files" in err and "--recursive" not in err


def test_labels_command(capsys):
    code, out, _ = _run(["labels", "--model", "demo"], capsys)
    explainer = RolloutExplainer.from_pretrained("demo")
    assert code == 0
    assert out.splitlines() == [f"{i}\t{explainer.id2label[i]}" for i in range(explainer.num_labels)]
    code, out, _ = _run(["labels", "--model", "demo", "--json"], capsys)
    assert code == 0 and json.loads(out) == {str(i): name for i, name in explainer.id2label.items()}


def test_labels_of_a_backbone_is_one_clear_line(checkpoint, capsys):
    code, out, err = _run(["labels", "--model", checkpoint("vit_backbone")], capsys)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert "no classifier head" in err and "without --target" in err


def test_save_maps_and_predictions(checkpoint, image_files, tmp_path, capsys):
    model = checkpoint("vit")
    out = tmp_path / "out"
    args = [*image_files, "--model", model, "--method", "gae", "--target", "dog", "--out", out, "--quiet", "--save-maps"]
    code, printed, _ = _run([*args, "--save-predictions", out / "predictions.json"], capsys)
    assert code == 0 and "predictions.json" in printed
    records = json.loads((out / "predictions.json").read_text())
    direct = RolloutExplainer.from_pretrained(model)(image_files, target="dog", method="gae")
    assert [r["image"] for r in records] == image_files
    for record, explanation in zip(records, direct):
        saved = np.load(record["map"])
        assert saved.dtype == np.float32 and saved.shape == (40, 48)  # the image's own size
        np.testing.assert_allclose(saved, explanation.heatmap, rtol=1e-5, atol=1e-6)  # the same map as the API
        assert Path(record["overlay"]).is_file() and record["map"].endswith(".npy")
        assert record["method"] == "gae" and record["target"] == 1 and record["label"] == "dog"
        assert record["score"] == pytest.approx(explanation.score, rel=1e-5)
        assert record["predicted"] == explanation.predicted and record["predicted_label"] == explanation_label(model, explanation)
        assert record["head_fusion"] == "mean" and record["start_layer"] == 0
    code, _, _ = _run([*args, "--save-predictions", tmp_path / "p" / "predictions.csv"], capsys)
    rows = list(csv.DictReader(open(tmp_path / "p" / "predictions.csv")))
    assert code == 0 and [r["image"] for r in rows] == image_files
    assert rows[0]["label"] == "dog" and float(rows[0]["score"]) == pytest.approx(records[0]["score"])
    assert rows[0]["map"] == records[0]["map"]


def explanation_label(model, explanation):
    return RolloutExplainer.from_pretrained(model).id2label[explanation.predicted]


def test_save_predictions_needs_json_or_csv_before_any_work(image_files, tmp_path, capsys):
    code, _, err = _run([image_files[0], "--model", "./no-such-model", "--out", tmp_path, "--save-predictions", tmp_path / "p.txt"], capsys)
    assert code == 2 and ".json or .csv" in err and "no-such-model" not in err


def test_overlays_with_a_colour_bar(checkpoint, image_files, tmp_path, capsys):
    code, _, _ = _run([image_files[0], "--model", checkpoint("vit"), "--out", tmp_path, "--quiet", "--colorbar"], capsys)
    overlay = Image.open(tmp_path / "img0_rollout_mean_0.9.png")
    assert code == 0 and overlay.height == 40 and overlay.width > 48


def test_the_progress_bar_reaches_the_total(checkpoint, tmp_path, capsys):
    paths = []
    for i in range(3):
        path = tmp_path / f"p{i}.png"
        Image.new("RGB", (32, 32), (i * 60, 20, 20)).save(path)
        paths.append(path)
    code, _, err = _run([*paths, "--model", checkpoint("vit"), "--out", tmp_path / "o"], capsys)
    assert code == 0
    counts = re.findall(r"(\d+)/3 ", err)
    assert counts and counts[-1] == "3", err


def test_local_files_only_never_contacts_the_hub(checkpoint, image_files, tmp_path, capsys, monkeypatch):
    """With --local-files-only a Hub id that is not in the cache fails at once in one line, with
    Hugging Face's offline mode off and every HTTP request recorded (none may be made)."""
    import importlib

    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    session_class = type(get_session())  # the Hub client's HTTP client class (httpx or its successor)
    http = importlib.import_module(session_class.__module__.split(".")[0])
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    requests = []

    def refuse(self, request, **kwargs):
        requests.append(str(request.url))
        raise http.ConnectError("no network in this test", request=request)

    monkeypatch.setattr(session_class, "send", refuse)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-cache"))
    code, _, err = _run([image_files[0], "--model", "someone/not-cached-model", "--local-files-only", "--out", tmp_path / "o"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "someone/not-cached-model" in err and "local_files_only" not in err
    code, _, err = _run(["labels", "--model", "someone/not-cached-model", "--local-files-only"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert [url for url in requests if "not-cached-model" in url] == []  # nothing asked of the Hub for the model


@pytest.mark.parametrize(
    "message,expected",
    [
        ("unknown label 'x' (the model has 4 classes: see .id2label)", "list them with 'hf-vit-rollout labels --model M')"),
        ("metric 'energy' needs ground-truth masks: pass masks=", "pass --masks"),
        ("give only one of target=, text= and top_k=, not both target= and text=", "one of --target, --text and --top_k, not both --target and --text"),
        ("ViTModel has no classifier logits; pass target=callable(outputs) -> (B,) scores", "explain it without --target"),
        ("explain with method='attention' (and head=None)", "explain with --method attention"),
        ("(offline: one already in the cache, with local_files_only=True)", "with --local-files-only)"),
        ("the model's attention layers have 4 heads (0 to 3); pass head=None to fuse them", "leave out --head to fuse them"),
    ],
)
def test_errors_speak_in_the_commands_terms(message, expected):
    assert expected in shell_terms(message, "M")


def test_unknown_label_names_the_labels_command(checkpoint, image_files, tmp_path, capsys):
    model = checkpoint("vit")
    code, _, err = _run([image_files[0], "--model", model, "--target", "zebra", "--out", tmp_path, "--quiet"], capsys)
    assert code == 2 and f"hf-vit-rollout labels --model {model}" in err and ".id2label" not in err


def test_evaluate_errors_speak_in_the_commands_terms(tmp_path, capsys):
    from hf_vit_rollout.demo import example_images

    photos = tmp_path / "photos"
    photos.mkdir()
    Image.open(example_images()[0]).save(photos / "a.png")
    code, _, err = _run(["evaluate", "--images", photos, "--metrics", "energy", "--out", tmp_path / "r", "--quiet"], capsys)
    assert code == 2 and "--masks" in err and "masks=" not in err and len(err.strip().splitlines()) == 1


def test_overlay_colour_bar_is_added_beside_the_unchanged_overlay():
    from hf_vit_rollout import viz
    from hf_vit_rollout.demo import example_images

    explanation = RolloutExplainer.from_pretrained("demo")(example_images()[0], method="gae")
    plain, barred = explanation.overlay("viridis"), explanation.overlay("viridis", colorbar=True)
    assert barred.height == plain.height and barred.width > plain.width
    assert np.array_equal(np.asarray(barred)[:, : plain.width], np.asarray(plain))  # the overlay itself unchanged
    strip = np.asarray(barred)[:, plain.width:]
    table = viz.colour_table("viridis")
    top, bottom = table[-1], table[0]  # 1 at the top of the bar, 0 at the bottom
    flat = strip.reshape(-1, 3)
    assert (np.abs(flat.astype(int) - top).sum(1) <= 3).any() and (np.abs(flat.astype(int) - bottom).sum(1) <= 3).any()
    rows_top = [y for y in range(strip.shape[0]) if (np.abs(strip[y].astype(int) - top).sum(1) <= 3).any()]
    rows_bottom = [y for y in range(strip.shape[0]) if (np.abs(strip[y].astype(int) - bottom).sum(1) <= 3).any()]
    assert max(rows_top) < min(rows_bottom)
    large = viz.add_colorbar(Image.new("RGB", (400, 300)), "jet")
    assert large.size[1] == 300 and 400 < large.size[0] < 520
