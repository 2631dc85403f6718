"""Many threads, one model: each capture records only its own passes; nobody sees anyone's maps."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from hf_vit_rollout import RolloutExplainer
from hf_vit_rollout.capture import ATTENTION_NAME


@pytest.fixture(scope="module")
def explainer(checkpoint):
    return RolloutExplainer.from_pretrained(checkpoint("deit"))


def _pictures(count):
    return [np.random.default_rng(i).integers(0, 256, (36, 44, 3), dtype=np.uint8) for i in range(count)]


def test_explanations_predictions_and_plain_calls_from_many_threads(explainer):
    """6 threads explain (three methods), 3 predict, 3 call the model directly, 4 rounds each at once."""
    pictures = _pictures(4)
    pixels = explainer.image_processor(images=pictures, return_tensors="pt")["pixel_values"]
    methods = ["rollout", "gae", "grad_rollout"]
    expected = {m: explainer(pictures, method=m) for m in methods}
    expected_probs = explainer.predict(pictures)
    with torch.no_grad():
        expected_logits = explainer.model(pixel_values=pixels).logits
    start = threading.Barrier(12)

    def explain(i):
        start.wait()
        method = methods[i % 3]
        for _ in range(4):
            for got, want in zip(explainer(pictures, method=method), expected[method]):
                np.testing.assert_allclose(got.mask, want.mask, rtol=1e-5, atol=1e-6)
                assert got.target == want.target
        return method

    def predict(_):
        start.wait()
        for _ in range(4):
            torch.testing.assert_close(explainer.predict(pictures), expected_probs)
        return "predict"

    def plain(_):
        start.wait()
        for _ in range(4):
            with torch.no_grad():
                out = explainer.model(pixel_values=pixels)
            torch.testing.assert_close(out.logits, expected_logits)
            assert out.attentions is None  # a user's call never receives the capture's maps
        return "plain"

    with ThreadPoolExecutor(12) as pool:
        futures = [pool.submit(explain, i) for i in range(6)]
        futures += [pool.submit(predict, i) for i in range(3)] + [pool.submit(plain, i) for i in range(3)]
        done = [f.result(timeout=600) for f in futures]
    assert sorted(done).count("plain") == 3
    assert explainer.model.config._attn_implementation == "sdpa"


def test_what_another_thread_sees_during_a_capture(explainer):
    """While thread A is inside its capture, thread B's own forward pass: same outputs, no maps to A,
    and the config names this package's dispatching attention function (documented in the README)."""
    picture = _pictures(1)[0]
    pixels = explainer.image_processor(images=[picture], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        reference = explainer.model(pixel_values=pixels).logits
    expected = explainer(picture, method="gae", target=1)
    inside, release = threading.Event(), threading.Event()
    observed = {}

    def waiting_target(outputs):
        inside.set()
        assert release.wait(60)
        return outputs.logits[:, 1]

    def other_thread():
        assert inside.wait(60)
        observed["impl"] = explainer.model.config._attn_implementation
        with torch.no_grad():
            observed["logits"] = explainer.model(pixel_values=pixels).logits
        release.set()

    thread = threading.Thread(target=other_thread)
    thread.start()
    got = explainer(picture, method="gae", target=waiting_target)
    thread.join(60)
    assert observed["impl"] == ATTENTION_NAME
    torch.testing.assert_close(observed["logits"], reference)
    np.testing.assert_allclose(got.mask, expected.mask, rtol=1e-5, atol=1e-6)
    assert explainer.model.config._attn_implementation == "sdpa"


def test_overlapping_captures_share_the_switch_and_restore_at_the_last_exit(explainer):
    """Two captures overlap; the first to leave must not restore SDPA under the second."""
    pictures = _pictures(2)
    expected = explainer(pictures, method="gae")
    first_inside, first_done = threading.Event(), threading.Event()
    results = {}

    def slow_target(outputs):
        first_inside.set()
        assert first_done.wait(60)
        return outputs.logits.max(-1).values

    def first():
        results["first"] = explainer(pictures, method="gae", target=slow_target)

    thread = threading.Thread(target=first)
    thread.start()
    assert first_inside.wait(60)
    results["second"] = explainer(pictures, method="gae")  # runs entirely inside the first capture
    assert explainer.model.config._attn_implementation == ATTENTION_NAME  # the first is still inside
    first_done.set()
    thread.join(60)
    for got, want in zip(results["second"], expected):
        np.testing.assert_allclose(got.mask, want.mask, rtol=1e-5, atol=1e-6)
    for got, want in zip(results["first"], expected):
        np.testing.assert_allclose(got.mask, want.mask, rtol=1e-5, atol=1e-6)
    assert explainer.model.config._attn_implementation == "sdpa"


def test_a_model_in_training_mode_is_evaluated_and_restored(checkpoint):
    explainer = RolloutExplainer.from_pretrained(checkpoint("vit"))
    explainer.model.train()
    pictures = _pictures(2)
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda m: explainer(pictures, method=m), ["rollout", "gae", "rollout", "gae"]))
    assert all(m.training for m in explainer.model.modules())
    assert explainer.model.config._attn_implementation == "sdpa"


def test_captures_of_a_model_and_its_submodule_overlap_in_any_order(checkpoint):
    """``clf`` and ``clf.vit`` share one config: counted per config, exits in any order restore it,
    and other threads keep getting the original implementation (no recursion) meanwhile."""
    import copy

    from hf_vit_rollout.capture import AttentionCapture

    explainer = RolloutExplainer.from_pretrained(checkpoint("vit"))
    clf = explainer.model
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        reference = clf(pixel_values=x).logits
    outer = AttentionCapture(clf, lambda layer, a: None)
    inner = AttentionCapture(clf.vit, lambda layer, a: None)
    outer.__enter__()
    inner.__enter__()
    seen = {}

    def other():
        with torch.no_grad():
            seen["logits"] = clf(pixel_values=x).logits
            seen["copy"] = copy.deepcopy(clf)(pixel_values=x).logits  # a copy made during a capture

    thread = threading.Thread(target=other)
    thread.start()
    thread.join(60)
    torch.testing.assert_close(seen["logits"], reference)
    torch.testing.assert_close(seen["copy"], reference)
    outer.__exit__(None, None, None)  # the outer one leaves first
    assert clf.config._attn_implementation == ATTENTION_NAME  # the inner one still needs it
    inner.__exit__(None, None, None)
    inner.__exit__(None, None, None)  # a second exit releases nothing
    assert clf.config._attn_implementation == "sdpa"
    with torch.no_grad():
        torch.testing.assert_close(clf(pixel_values=x).logits, reference)
    assert len(explainer(np.zeros((32, 32, 3), np.uint8), method="gae").token_relevance) == 17
