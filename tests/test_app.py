"""The Gradio app, driven for real in headless Chromium (Debian's chromium + Playwright).

Locally the test is skipped when gradio, playwright or chromium is missing; under CI (``CI=true``)
.ci/run installs them, so a missing piece fails instead.
"""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def _missing() -> str | None:
    try:
        import gradio  # noqa: F401
        import playwright.sync_api  # noqa: F401
    except ImportError as exc:
        return f"needs the [app] extra and playwright ({exc})"
    if not os.path.exists(CHROMIUM):
        return "needs Debian's chromium package"
    return None


#: The width an <img> is drawn at (its box and its object-fit), in CSS pixels.
DISPLAYED_WIDTH = """selector => {
    const img = document.querySelector(selector);
    const box = img.getBoundingClientRect();
    const fit = getComputedStyle(img).objectFit;
    const scale = Math.min(box.width / img.naturalWidth, box.height / img.naturalHeight);
    const drawn = fit === "none" ? 1 : fit === "scale-down" ? Math.min(1, scale) : scale;
    return img.naturalWidth * drawn;
}"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def running_app():
    reason = _missing()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    from hf_vit_rollout.app import build_app, launch_kwargs

    port = _free_port()
    app = build_app(("demo",))
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **launch_kwargs())
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        app.close()


def test_upload_explain_and_see_an_overlay(running_app, tmp_path):
    from playwright.sync_api import sync_playwright

    from hf_vit_rollout.demo import example_images

    two_objects = [p for p in example_images() if p.stem.count("_") == 2][0]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"],
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(running_app, wait_until="domcontentloaded")
            page.locator("#input-image input[type=file]").set_input_files(str(two_objects))
            # the top-5 predictions appear once the upload is processed
            page.wait_for_function(
                "document.querySelector('#predictions') && document.querySelector('#predictions').innerText.includes('%')",
                timeout=60_000,
            )
            # the 64-px input is shown at a readable size, not at its own
            shown = page.evaluate(DISPLAYED_WIDTH, "#input-image img")
            assert shown >= 250, f"the 64-px input is drawn {shown} px wide"
            # layer controls appear only for the methods that take them
            assert not page.locator("#layer").is_visible() and page.locator("#start-layer").is_visible()
            page.locator("#method input").fill("attention")
            page.keyboard.press("Enter")
            page.locator("#layer").wait_for(state="visible", timeout=30_000)
            assert page.locator("#head").is_visible() and not page.locator("#start-layer").is_visible()
            page.locator("#method input").fill("rollout")
            page.keyboard.press("Enter")
            page.locator("#start-layer").wait_for(state="visible", timeout=30_000)
            page.locator("#explain").click()
            overlay = page.locator("#overlay img")
            overlay.wait_for(state="visible", timeout=60_000)
            assert overlay.get_attribute("src")
            page.wait_for_function(
                "document.querySelector('#caption textarea') && document.querySelector('#caption textarea').value.includes('rollout')",
                timeout=60_000,
            )
            shot = tmp_path / "app.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            if os.environ.get("HF_VIT_ROLLOUT_SCREENSHOT"):
                shutil.copy(shot, os.environ["HF_VIT_ROLLOUT_SCREENSHOT"])
        finally:
            browser.close()


def test_the_overlay_has_a_colour_bar_and_every_method_is_offered():
    if _missing():
        pytest.skip(_missing())
    import numpy as np

    from hf_vit_rollout import METHODS
    from hf_vit_rollout.app import ModelChoice, explain, method_settings, subtitle
    from hf_vit_rollout.demo import example_images
    from PIL import Image

    choice = ModelChoice(("demo",))
    settings = {"method": "gae", "head_fusion": "mean", "discard_ratio": 0.0, "target": "predicted class"}
    path, caption = explain(choice, Image.open(example_images()[0]), "demo", settings)
    shown = Image.open(path)
    assert shown.height >= 320 and shown.width > shown.height  # scaled up, a colour bar on the right
    bar = np.asarray(shown.convert("RGB"))[shown.height // 2, shown.height:]
    assert len({tuple(px) for px in bar}) > 3 and caption.startswith("gae")
    for name in METHODS:
        assert f"`{name}`" in subtitle()
    assert {m: method_settings(m) for m in METHODS if method_settings(m)} == {
        m: ("layer", "head") if s.combine == "layer" else ("start_layer",)
        for m, s in METHODS.items() if s.combine in ("layer", "product")
    }


def test_layer_head_and_start_layer_reach_the_explainer():
    if _missing():
        pytest.skip(_missing())
    import numpy as np

    from hf_vit_rollout import RolloutExplainer
    from hf_vit_rollout.app import FUSED_HEADS, ModelChoice, display_overlay, explain
    from hf_vit_rollout.demo import example_images
    from PIL import Image

    choice = ModelChoice(("demo",))
    image = Image.open(example_images()[2])
    direct = RolloutExplainer.from_pretrained("demo")
    base = {"head_fusion": "mean", "discard_ratio": 0.0, "target": "predicted class"}
    cases = [
        ({"method": "attention", "layer": 1, "head": "2", "start_layer": 3}, {"method": "attention", "layer": 1, "head": 2}),
        ({"method": "attention", "layer": 0, "head": FUSED_HEADS}, {"method": "attention", "layer": 0}),
        ({"method": "gae", "layer": 2, "head": "1", "start_layer": 2}, {"method": "gae", "start_layer": 2}),
    ]
    for ui, api in cases:
        path, caption = explain(choice, image, "demo", {**base, **ui})
        want = display_overlay(direct(image, head_fusion="mean", discard_ratio=0.0, **api))
        assert np.array_equal(np.asarray(Image.open(path).convert("RGB")), np.asarray(want.convert("RGB"))), ui


def test_explain_function_errors_are_user_facing():
    if _missing():
        pytest.skip(_missing())
    import gradio as gr

    from hf_vit_rollout.app import ModelChoice, explain

    choice = ModelChoice(("demo",))
    settings = {"method": "rollout", "head_fusion": "mean", "discard_ratio": 0.9, "target": "predicted class"}
    with pytest.raises(gr.Error, match="Upload an image"):
        explain(choice, None, "demo", settings)
    picture = __import__("numpy").zeros((64, 64, 3), "uint8")
    with pytest.raises(gr.Error, match="not offered here"):
        explain(choice, picture, "/etc", settings)
    with pytest.raises(gr.Error, match="not offered here"):
        explain(choice, picture, "facebook/deit-tiny-patch16-224", settings)
    with pytest.raises(gr.Error, match="discard_ratio"):
        explain(choice, picture, "demo", {**settings, "discard_ratio": 1.5})


# ------------------------------------------------------------------------------ the Space
def test_the_space_card_and_requirements_match_the_package():
    import tomllib

    root = Path(__file__).resolve().parents[1]
    card = (root / "space" / "README.md").read_text()
    header = card.split("---")[1]
    fields = dict(line.split(":", 1) for line in header.strip().splitlines())
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    assert card.startswith("---\n") and fields["sdk"] == "gradio" and (root / "space" / fields["app_file"]).is_file()
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], *project["optional-dependencies"]["app"]]
    lines = [ln.strip() for ln in (root / "space" / "requirements.txt").read_text().splitlines()]
    assert [ln for ln in lines if ln and not ln.startswith("#")] == wanted
    if not _missing():
        import gradio

        assert fields["sdk_version"].split(".")[0] == gradio.__version__.split(".")[0]


def test_the_assembled_space_runs_app_py_as_is(tmp_path):
    """scripts/make_space.py's folder imports its own copy of the package and builds the app."""
    if _missing():
        pytest.skip(_missing())
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "space"
    subprocess.run([sys.executable, str(root / "scripts" / "make_space.py"), str(out)], check=True, capture_output=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    probe = "import app, hf_vit_rollout, gradio; print(hf_vit_rollout.__file__); print(isinstance(app.demo, gradio.Blocks))"
    result = subprocess.run([sys.executable, "-c", probe], cwd=out, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    package_file, is_blocks = result.stdout.strip().splitlines()[-2:]
    assert Path(package_file).resolve().is_relative_to(out.resolve()) and is_blocks == "True"
    assert (out / "hf_vit_rollout" / "demo" / "checkpoint" / "model.safetensors").is_file()
