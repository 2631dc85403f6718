"""The app under load: 8 concurrent gradio_client users, predictions and explanations at once.

Drives the real server on 127.0.0.1 with ``benchmarks/app_load.py``'s driver; every response must
equal what the explainer gives when called directly, and no request may fail.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
pytest.importorskip("gradio_client")

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "app_load.py"


@pytest.fixture(scope="module")
def load():
    spec = importlib.util.spec_from_file_location("app_load", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("method", ["gae", "rollout"])
def test_eight_concurrent_users_all_get_correct_answers(load, method):
    from hf_vit_rollout.demo import example_images

    images = [str(p) for p in example_images()]
    expected = load.expected_outputs(images, method)
    app, url = load.start_app(concurrency=2, max_queue=64)
    try:
        record = load.drive(url, images, users=8, rounds=3, method=method)
    finally:
        app.close()
    assert record["errors"] == []
    assert len(record["responses"]) == 8 * 3
    assert load.wrong_responses(record, expected) == []
    stats = load.summary(record)
    print(f"{method}: {stats['requests']} requests, {stats['throughput']:.1f}/s, p95 {stats['p95'] * 1000:.0f} ms")


def test_the_upload_limit_and_model_choice_are_enforced(load, tmp_path):
    """A visitor cannot load another model, and an upload above the limit is refused with a message."""
    from gradio_client import Client, handle_file
    from PIL import Image

    from hf_vit_rollout.app import build_app, launch_kwargs

    app = build_app(("demo",))
    port = load.free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **launch_kwargs(max_upload_mb=0.05))
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        small = tmp_path / "small.png"
        Image.new("RGB", (32, 32), (200, 10, 10)).save(small)
        with pytest.raises(Exception, match="not offered here|not in the list of choices|choices"):
            client.predict(handle_file(str(small)), "/etc", api_name="/predict")
        big = tmp_path / "big.png"
        Image.frombytes("RGB", (200, 200), os.urandom(200 * 200 * 3)).save(big)  # ~120 kB, incompressible
        with pytest.raises(Exception, match="(?i)file size|too large|exceeds"):
            client.predict(handle_file(str(big)), "demo", api_name="/predict")
    finally:
        app.close()
