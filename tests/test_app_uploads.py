"""An upload that is not an image reaches the visitor as the app's own message, not Gradio's generic one."""

from __future__ import annotations

import os
import socket

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
gr = pytest.importorskip("gradio")
gradio_client = pytest.importorskip("gradio_client")


@pytest.fixture(scope="module")
def client():
    from hf_vit_rollout.app import build_app, launch_kwargs

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = build_app(("demo",))
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **launch_kwargs())
    try:
        yield gradio_client.Client(f"http://127.0.0.1:{port}/", verbose=False)
    finally:
        app.close()


@pytest.mark.parametrize("content,match", [(b"hello, I am text", "is not an image file"),
                                           (b"\x89PNG\r\n\x1a\n" + b"\0" * 20, "is not an image file|could not be decoded")])
def test_a_non_image_upload_is_named_in_the_message(client, tmp_path, content, match):
    path = tmp_path / "notes.png"
    path.write_bytes(content)
    with pytest.raises(gradio_client.exceptions.AppError, match=f"notes.png ({match}); upload a PNG"):
        client.predict(gradio_client.handle_file(str(path)), "demo", api_name="/predict")


def test_the_upload_box_is_drawn_as_an_image_box_and_writes_no_files():
    from pathlib import Path

    import hf_vit_rollout.app as app_module

    assert app_module.image_input(label="image").get_block_name() == "image"
    assert not Path(app_module.__file__).with_suffix(".pyi").exists()  # no stub written into the install


def test_a_short_soak_with_mixed_models_methods_and_sizes_answers_like_the_explainer():
    import importlib.util
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "benchmarks"
    spec = importlib.util.spec_from_file_location("app_soak", root / "app_soak.py")
    app_soak = importlib.util.module_from_spec(spec)
    sys.modules["app_soak"] = app_soak
    spec.loader.exec_module(app_soak)
    counts, wrong, record = app_soak.soak(users=3, requests=4, concurrency=2, seed=3)
    assert wrong == [] and counts["right"] > 0 and len(record["answers"]) == 12
