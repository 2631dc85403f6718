"""A Gradio app (Space-ready): upload or pick an image, pick model, method and settings, see overlays.

    hf-vit-rollout app                       # demo model, http://127.0.0.1:7860
    hf-vit-rollout app --model facebook/deit-tiny-patch16-224

Needs the optional extra: ``pip install "hf-vit-rollout[app]"``.
"""

from __future__ import annotations

import argparse
import logging
from functools import lru_cache

from .errors import InputError, TargetError, UnsupportedModelError
from .methods import HEAD_FUSIONS, METHODS

logger = logging.getLogger(__name__)

PREDICTED = "predicted class"
DISPLAY_SIZE = 320


@lru_cache(maxsize=4)
def _explainer(model: str):
    from .explainer import RolloutExplainer

    return RolloutExplainer.from_pretrained(model.strip() or "demo")


def top_predictions(image, model: str, k: int = 5) -> dict[str, float]:
    """``{label: probability}`` of the model's top ``k`` classes for ``image`` (empty for backbones)."""
    import torch

    explainer = _explainer(model)
    if not explainer.num_labels:
        return {}
    probabilities = explainer.predict(image)[0]
    top = torch.argsort(probabilities, descending=True)[:k]
    return {explainer.id2label.get(int(i), str(int(i))): float(probabilities[i]) for i in top}


def explain(image, model: str, method: str, head_fusion: str, discard_ratio: float, target: str, colormap: str = "jet"):
    """One explanation for the UI: ``(overlay image, caption)``."""
    import gradio as gr

    if image is None:
        raise gr.Error("Upload an image or pick an example first.")
    chosen = None if target in (None, "", PREDICTED) else target
    if chosen is not None and not METHODS[method].needs_gradient:
        method = "grad_rollout"  # a class was chosen: use a class-specific method
    try:
        explanation = _explainer(model)(image, target=chosen, method=method, head_fusion=head_fusion, discard_ratio=float(discard_ratio))
    except (InputError, TargetError, UnsupportedModelError, ValueError, OSError) as exc:
        raise gr.Error(str(exc)) from None
    shown = explanation.overlay(colormap)
    if max(shown.size) < DISPLAY_SIZE:  # small inputs (like the demo's 64 px) are scaled up for viewing
        scale = DISPLAY_SIZE / max(shown.size)
        shown = shown.resize((round(shown.width * scale), round(shown.height * scale)), resample=0)
    return shown, explanation.title


def build_app(model: str = "demo"):
    """The Gradio ``Blocks`` app."""
    import gradio as gr

    from .demo import example_images

    with gr.Blocks(title="hf_vit_rollout: where did the ViT look?") as app:
        gr.Markdown("# Where did the Vision Transformer look?\nAttention rollout, gradient rollout, GAE and attention flow for Hugging Face ViTs.")
        with gr.Row():
            with gr.Column():
                image = gr.Image(type="pil", label="image", elem_id="input-image", height=300)
                model_box = gr.Textbox(value=model, label="model (Hub id, local folder or 'demo')", elem_id="model")
                method = gr.Dropdown(list(METHODS), value="rollout", label="method", elem_id="method")
                head_fusion = gr.Dropdown(list(HEAD_FUSIONS), value="mean", label="head fusion")
                discard_ratio = gr.Slider(0.0, 0.99, value=0.9, step=0.01, label="discard ratio")
                target = gr.Dropdown([PREDICTED], value=PREDICTED, label="target class (top-5 predictions)", allow_custom_value=True)
                button = gr.Button("Explain", variant="primary", elem_id="explain")
            with gr.Column():
                overlay = gr.Image(type="pil", label="overlay", elem_id="overlay", interactive=False, height=300)
                caption = gr.Textbox(label="explanation", elem_id="caption")
                predictions = gr.Label(num_top_classes=5, label="predictions", elem_id="predictions")
        examples = [str(p) for p in example_images()]
        if examples:
            gr.Examples(examples, inputs=image)

        def on_image(img, model_id):
            if img is None:
                return gr.update(choices=[PREDICTED], value=PREDICTED), {}
            top = top_predictions(img, model_id)
            return gr.update(choices=[PREDICTED, *top], value=PREDICTED), top

        image.change(on_image, [image, model_box], [target, predictions])
        button.click(explain, [image, model_box, method, head_fusion, discard_ratio, target], [overlay, caption])
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hf-vit-rollout app", description="Start the Gradio app.")
    parser.add_argument("--model", default="demo")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    args = parser.parse_args(argv)
    try:
        app = build_app(args.model)
    except ImportError:
        print('hf-vit-rollout: error: the app needs gradio: pip install "hf-vit-rollout[app]"')
        return 2
    app.launch(server_name=args.host, server_port=args.port)
    return 0
