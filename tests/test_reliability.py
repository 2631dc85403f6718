"""Leaks, threads and state over many calls."""

from __future__ import annotations

import gc
import os
import threading

import numpy as np
import pytest
import torch

from hf_vit_rollout import RolloutExplainer

from .test_explainer import assert_same_state, model_state


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def live_tensors() -> int:
    return sum(1 for obj in gc.get_objects() if issubclass(type(obj), torch.Tensor))


@pytest.fixture(scope="module")
def explainer(checkpoint):
    explainer = RolloutExplainer.from_pretrained(checkpoint("vit"))
    explainer.model(pixel_values=torch.zeros(1, 3, 32, 32))  # let transformers install its own hooks first
    return explainer


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs Linux /proc")
def test_thousand_explanations_per_method_keep_memory_flat(explainer):
    """1,000 explanations (250 calls × batch 4) per method: RSS and live tensors stay flat, no hooks."""
    rng = np.random.default_rng(0)
    batch = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(4)]
    before = model_state(explainer.model)
    for method in ("rollout", "grad_rollout", "gae", "flow"):
        target = 1 if method in ("grad_rollout", "gae") else None
        for _ in range(30):  # warm-up: allocator pools, lazy imports
            explainer(batch, target=target, method=method)
        gc.collect()
        start_rss, start_tensors = rss_mib(), live_tensors()
        for _ in range(250):
            explainer(batch, target=target, method=method)
        gc.collect()
        growth = rss_mib() - start_rss
        assert growth < 25, f"{method}: RSS grew by {growth:.1f} MiB over 1,000 explanations"
        assert live_tensors() - start_tensors < 10, method
    assert_same_state(before, model_state(explainer.model))


def test_two_threads_sharing_one_explainer_get_correct_maps(explainer):
    """Two threads explain with one model at once: each capture records only its own thread, so both get exactly their own maps."""
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(6)]
    expected = {
        (i, method): explainer(img, target=1 if method == "gae" else None, method=method).mask
        for i, img in enumerate(images)
        for method in ("rollout", "gae")
    }
    errors: list[BaseException] = []
    results: dict = {}

    def work(method):
        try:
            for _ in range(5):
                for i, img in enumerate(images):
                    results[(i, method)] = explainer(img, target=1 if method == "gae" else None, method=method).mask
                    np.testing.assert_allclose(results[(i, method)], expected[(i, method)], rtol=1e-5, atol=1e-6)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(m,)) for m in ("rollout", "gae")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
    assert len(results) == len(expected)


def test_failing_calls_in_a_row_leave_everything_as_it_was(explainer):
    before = model_state(explainer.model)
    for bad in ({"target": 99, "method": "gae"}, {"discard_ratio": 3}, {"method": "nope"}):
        with pytest.raises(ValueError):
            explainer(np.zeros((8, 8, 3), np.uint8), **bad)
    with pytest.raises(FileNotFoundError):
        explainer("/no/such/file.png")
    assert_same_state(before, model_state(explainer.model))


def test_half_precision_model(checkpoint):
    explainer = RolloutExplainer.from_pretrained(checkpoint("vit"))
    image = np.random.default_rng(2).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    reference = explainer(image, target=1, method="gae").mask
    explainer.model.to(torch.bfloat16)
    low = explainer(image, target=1, method="gae")
    assert low.mask.dtype == np.float32 and np.isfinite(low.mask).all()
    assert np.corrcoef(low.mask.ravel(), reference.ravel())[0, 1] > 0.9
