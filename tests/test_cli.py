"""The hf-vit-rollout command: original flags, outputs, errors, and the offline demo."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from hf_vit_rollout.cli import main


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
    for method in ("rollout", "grad_rollout", "gae", "flow"):
        assert any(f"_{method}" in name for name in written), method
    # class-specific maps for each detected object of the two-object examples
    assert any(name.startswith("3_ring_crescent_gae_") for name in written)
    assert str(figure) in capsys.readouterr().out
