"""``evaluate``'s inputs: masks and steps that used to fail late or vaguely get a clear, early error."""

from __future__ import annotations

import time
import warnings

import numpy as np
import pytest
from PIL import Image

from hf_vit_rollout import ExplanationWarning, RolloutExplainer, evaluate
from hf_vit_rollout.cli import main as cli_main
from hf_vit_rollout.evaluation import Deletion, Insertion
from hf_vit_rollout.metrics import MAX_STEPS


@pytest.fixture(scope="module")
def explainer(checkpoint):
    return RolloutExplainer.from_pretrained(checkpoint("vit"))


IMAGE = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)


def _energy(explainer, mask, **kwargs):
    return evaluate(explainer, [IMAGE], [1], [mask], methods=["rollout"], metrics=["energy"], progress=False, **kwargs)


@pytest.mark.parametrize(
    "mask,match",
    [
        (np.full((32, 32), "a"), "must hold bools or numbers.*dtype <U1"),
        (np.full((32, 32), np.nan), r"NaN or infinite values \(100% of its pixels\)"),
        (np.where(np.eye(32) > 0, np.inf, 1.0), r"NaN or infinite values \(3% of its pixels\)"),
    ],
)
def test_masks_that_hold_no_object_values_are_refused(explainer, mask, match):
    with pytest.raises(ValueError, match=match):
        _energy(explainer, mask)


@pytest.mark.parametrize("mask", [np.zeros((32, 32), bool), np.zeros((32, 32), np.uint8)])
def test_an_empty_mask_is_a_warning_and_not_a_missing_masks_error(explainer, mask):
    with pytest.warns(ExplanationWarning, match="mask is empty"), pytest.raises(ValueError, match="every mask passed is empty"):
        _energy(explainer, mask)


def test_an_empty_mask_among_others_is_skipped_with_a_warning(explainer):
    full = np.zeros((32, 32), bool)
    full[8:24, 8:24] = True
    with pytest.warns(ExplanationWarning, match=r"masks\[1\].*mask is empty"):
        report = evaluate(explainer, [IMAGE, IMAGE], [1, 1], [full, np.zeros((32, 32), bool)], methods=["rollout"],
                          metrics=["energy"], progress=False)
    assert report.counts()["energy"] == 1


def test_a_well_formed_mask_gives_no_warning(explainer):
    full = np.zeros((32, 32), bool)
    full[8:24, 8:24] = True
    with warnings.catch_warnings():
        warnings.simplefilter("error", ExplanationWarning)
        assert _energy(explainer, full).counts()["energy"] == 1


@pytest.mark.parametrize("metric", [Deletion, Insertion])
@pytest.mark.parametrize("steps", [10**8, MAX_STEPS + 1, 0, True, 2.5])
def test_steps_are_bounded_at_once(metric, steps):
    started = time.perf_counter()
    with pytest.raises(ValueError, match=f"integer from 1 to {MAX_STEPS}"):
        metric(steps=steps)
    assert time.perf_counter() - started < 0.5
    assert metric(steps=MAX_STEPS).steps == MAX_STEPS


def test_the_command_refuses_too_many_steps_with_the_limit(tmp_path, checkpoint, capsys):
    (tmp_path / "img").mkdir()
    Image.fromarray(IMAGE).save(tmp_path / "img" / "a.png")
    code = cli_main(["evaluate", "--images", str(tmp_path / "img"), "--model", checkpoint("vit"), "--steps", "1000000",
                     "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "--steps must be from 1 to 1024" in err and "Traceback" not in err
