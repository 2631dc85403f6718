"""Swin blocks clamp their windows to the input and keep the change: calls of different input sizes
from several threads must still each run with their own size's windows, and leave the model as it was."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
import transformers as T

from hf_vit_rollout import InputError, RolloutExplainer
from hf_vit_rollout.families.window_capture import kept_window_geometry

from .test_windows import TINY


@pytest.fixture(scope="module")
def explainer(tmp_path_factory):
    """A random Swin (2-px patches, 4-token windows, two stages) whose processor does not resize."""
    folder = tmp_path_factory.mktemp("swin_any_size")
    torch.manual_seed(0)
    model = T.SwinForImageClassification(T.SwinConfig(image_size=32, num_labels=3, **TINY))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    model.save_pretrained(folder)
    T.ViTImageProcessorPil(do_resize=False).save_pretrained(folder)
    return RolloutExplainer.from_pretrained(str(folder))


def _windows(explainer):
    return [(int(b.window_size), int(b.shift_size)) for b in explainer.window_blocks]


def test_two_threads_with_two_input_sizes_get_their_own_maps_and_predictions(explainer):
    """16 px clamps the second stage's shifted block to no shift; 32 px keeps the shift. Run both at once."""
    rng = np.random.default_rng(0)
    images = {"small": [rng.integers(0, 256, (16, 16, 3), dtype=np.uint8) for _ in range(3)],
              "large": [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(3)]}
    assert explainer.layout((16, 16)).blocks[3].shift == 0 and explainer.layout((32, 32)).blocks[3].shift == 2
    before = _windows(explainer)
    expected = {(k, i): (explainer(x, target=0, method="gae").mask, explainer.predict(x))
                for k, xs in images.items() for i, x in enumerate(xs)}
    wrong: dict[str, int] = {"small": 0, "large": 0}
    errors: list[BaseException] = []

    def work(kind):
        try:
            for _ in range(4):
                for i, x in enumerate(images[kind]):
                    mask, probabilities = expected[(kind, i)]
                    wrong[kind] += not np.allclose(explainer(x, target=0, method="gae").mask, mask, atol=1e-5)
                    wrong[kind] += not torch.allclose(explainer.predict(x), probabilities, atol=1e-6)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(kind,)) for kind in images]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert wrong == {"small": 0, "large": 0}
    assert _windows(explainer) == before


def test_a_nested_call_with_another_input_size_is_refused_not_deadlocked(explainer):
    small, large = explainer.layout((16, 16)).geometry(), explainer.layout((32, 32)).geometry()
    assert small != large
    before = _windows(explainer)
    with kept_window_geometry(explainer.window_blocks, small):
        with kept_window_geometry(explainer.window_blocks, small):  # the same geometry joins
            pass
        with pytest.raises(RuntimeError, match="another input size's window geometry"):
            with kept_window_geometry(explainer.window_blocks, large):
                pass
    assert _windows(explainer) == before
    assert explainer(np.zeros((16, 16, 3), np.uint8), target=0, method="gae").mask.shape == (8, 8)


@pytest.mark.parametrize("side", [12, 6])
def test_an_input_smaller_than_a_window_is_refused_with_the_smallest_size(explainer, side):
    before = _windows(explainer)
    with pytest.raises(InputError, match=r"smaller than this model's 4×4-token windows.*at least 13×13 pixels"):
        explainer(np.zeros((side, side, 3), np.uint8))
    assert _windows(explainer) == before
    assert explainer(np.zeros((13, 13, 3), np.uint8)).mask.shape == (7, 7)  # the smallest that runs


def test_one_call_with_two_sizes_runs_each_with_its_windows(explainer):
    rng = np.random.default_rng(4)
    images = [rng.integers(0, 256, (16, 16, 3), dtype=np.uint8), rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)]
    together = explainer(images, target=0, method="gae")
    for image, result in zip(images, together):
        np.testing.assert_allclose(result.mask, explainer(image, target=0, method="gae").mask, rtol=1e-5, atol=1e-6)


def test_evaluate_runs_a_swin_with_its_windows_and_leaves_them(explainer):
    from hf_vit_rollout import evaluate

    rng = np.random.default_rng(5)
    large = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    expected = explainer(large, target=0, method="gae").mask
    before = _windows(explainer)
    report = evaluate(explainer, [rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)], [0], methods=["gae"],
                      metrics=["deletion"], progress=False)  # 16 px clamps the shifted block's windows
    assert report.counts()["deletion"] == 1
    assert _windows(explainer) == before
    np.testing.assert_allclose(explainer(large, target=0, method="gae").mask, expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(InputError, match="smaller than this model's 4×4-token windows"):
        evaluate(explainer, [np.zeros((6, 6, 3), np.uint8)], [0], methods=["rollout"], metrics=["deletion"], progress=False)
    assert _windows(explainer) == before
