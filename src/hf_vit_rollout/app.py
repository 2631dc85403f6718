"""A Gradio app (Space-ready): upload or pick an image, pick model, method and settings, see overlays.

    hf-vit-rollout app                                   # the demo model, http://127.0.0.1:7860
    hf-vit-rollout app --models demo ./my-checkpoint     # a fixed choice of models (a dropdown)
    hf-vit-rollout app --models demo --allow-any-model   # visitors may type any Hub id (opt-in)

Safe to share: visitors choose among the models the server was started with (all loaded at
start-up); typing another Hub id or a local folder is possible only with ``--allow-any-model``,
and then at most :data:`ANY_MODEL_CACHE` extra models are kept. Requests wait in one queue
(``--max-queue``) and ``--concurrency`` of them run at once; each explanation is independent of
the others (see :mod:`hf_vit_rollout.capture`). Uploads above ``--max-upload-mb`` are refused by
the server with a message, and decoded images are capped at
:data:`~hf_vit_rollout.images.MAX_PIXELS`.

The controls follow the chosen model (:func:`model_settings`): detectors (YOLOS, OWL-ViT, OWLv2) get a
min score, a detection choice (OWL-ViT and OWLv2: a box index typed in), text queries for OWL-ViT
and OWLv2 and a gallery of every explained detection; depth models (DPT, Depth Anything) a region
box; video models (VideoMAE, ViViT,
TimeSformer) a clip box for an animated GIF.

Needs the optional extra: ``pip install "hf-vit-rollout[app]"``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from .errors import InputError, TargetError, UnsupportedModelError
from .methods import HEAD_FUSIONS, METHODS
from .videos import VIDEO_SUFFIXES

logger = logging.getLogger(__name__)

PREDICTED = "predicted class"
DISPLAY_SIZE = 320
#: Extra models kept in memory when visitors may type any model id.
ANY_MODEL_CACHE = 2
#: Defaults of the queue: requests running at once, and waiting at most.
CONCURRENCY = 2
MAX_QUEUE = 64
#: Largest upload the server accepts, in MB.
MAX_UPLOAD_MB = 20


@dataclass
class ModelChoice:
    """The models an app serves: a fixed list loaded at start-up, and optionally any other id."""

    models: tuple[str, ...] = ("demo",)
    allow_any: bool = False

    def __post_init__(self):
        from .explainer import RolloutExplainer

        self._loader = RolloutExplainer.from_pretrained
        self._fixed = {name: self._loader(name) for name in self.models}
        self._extra: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        self.files = OverlayFiles()

    def explainer(self, model: str):
        """The explainer for ``model``; another id only with ``allow_any`` (kept in a small LRU)."""
        import gradio as gr

        model = (model or "").strip() or self.models[0]
        if model in self._fixed:
            return self._fixed[model]
        if not self.allow_any:
            raise gr.Error(f"model {model!r} is not offered here; choose one of: {', '.join(self.models)}")
        with self._lock:
            if model not in self._extra:
                try:
                    self._extra[model] = self._loader(model)
                except (OSError, ValueError) as exc:
                    raise gr.Error(str(exc)) from None
                while len(self._extra) > ANY_MODEL_CACHE:
                    self._extra.popitem(last=False)
            self._extra.move_to_end(model)
            return self._extra[model]


def top_predictions(choice: ModelChoice, image, model: str, k: int = 5) -> dict[str, float]:
    """``{label: probability}`` of the model's top ``k`` classes for ``image`` (empty for backbones,
    detectors, dense and video models)."""
    import gradio as gr
    import torch

    explainer = choice.explainer(model)
    if image is None or not explainer.num_labels or model_kind(explainer) != "image":
        return {}
    try:
        probabilities = explainer.predict(image)[0]
    except (InputError, ValueError) as exc:
        raise gr.Error(str(exc)) from None
    top = torch.argsort(probabilities, descending=True)[:k]
    return {explainer.id2label.get(int(i), str(int(i))): float(probabilities[i]) for i in top}


#: Per-method settings the UI shows only for methods that take them (by ``MethodSpec.combine``).
LAYER_SETTINGS = {"layer": ("layer", "head"), "product": ("start_layer",)}
#: The head dropdown's choice for "all heads, fused with the head fusion".
FUSED_HEADS = "all (fused)"


def method_settings(method: str) -> tuple[str, ...]:
    """The layer settings ``method`` takes: ``("layer", "head")``, ``("start_layer",)`` or none."""
    spec = METHODS.get(method)
    return LAYER_SETTINGS.get(spec.combine, ()) if spec is not None else ()


#: Per-model settings the UI shows only for the models that take them (by :func:`model_kind`).
MODEL_SETTINGS = {
    "image": (),
    "detector": ("min_score", "detection"),
    "text_detector": ("min_score", "detection", "queries"),
    "dense": ("region",),
    "video": ("clip",),
}
#: The detection dropdown's choice for "every detection scoring at least the min score".
ALL_DETECTIONS = "every detection above min score"
#: The min-score slider's starting value.
DEFAULT_MIN_SCORE = 0.5


def model_kind(explainer) -> str:
    """What the app asks for this model: ``"image"`` (a class), ``"detector"`` (YOLOS: a detection),
    ``"text_detector"`` (OWL-ViT: a detection among text queries), ``"dense"`` (DPT, Depth Anything: a
    region) or ``"video"`` (VideoMAE, ViViT, TimeSformer: a clip, uploaded as an animated GIF)."""
    family = explainer.family
    if getattr(family, "sources", None) is not None:
        return "video"
    if explainer.is_detector:
        return "text_detector" if family.needs_text else "detector"
    if getattr(family, "has_regions", lambda model: False)(explainer.model):
        return "dense"
    return "image"


def model_settings(explainer) -> tuple[str, ...]:
    """The model settings the UI shows for ``explainer``: some of ``min_score``, ``detection``,
    ``queries``, ``region`` and ``clip`` (see :data:`MODEL_SETTINGS`)."""
    return MODEL_SETTINGS[model_kind(explainer)]


def detection_choices(explainer) -> list[str]:
    """The detection dropdown: :data:`ALL_DETECTIONS`, then every detection index (empty for other models).

    Detectors with one box per patch (OWL-ViT, OWLv2: thousands of boxes) list only
    :data:`ALL_DETECTIONS`; a box index is typed into the dropdown (:func:`detection_label`)."""
    if not explainer.is_detector:
        return []
    if getattr(explainer.family, "one_box_per_patch", False):
        return [ALL_DETECTIONS]
    return [ALL_DETECTIONS, *[str(d) for d in range(explainer.family.detection_count(explainer))]]


def detection_label(explainer) -> str:
    """The detection dropdown's label: for one box per patch it says which index to type."""
    if explainer.is_detector and getattr(explainer.family, "one_box_per_patch", False):
        return f"detection (or type a box index, 0 to {explainer.family.detection_count(explainer) - 1})"
    return "detection"


def explain(choice: ModelChoice, image, model: str, settings: dict, colormap: str = "jet"):
    """One explanation for the UI: ``(overlay PNG path, caption)`` (see :func:`explain_all`)."""
    path, caption, _ = explain_all(choice, image, model, settings, colormap)
    return path, caption


def explain_all(choice: ModelChoice, image, model: str, settings: dict, colormap: str = "jet"):
    """The explanations for the UI: ``(overlay PNG path, caption, gallery)``.

    ``gallery`` is ``[(overlay PNG path, caption), ...]``, one per explained detection, most confident
    first (empty for image and depth models); the overlay is the first of them, with its box
    drawn, and the caption names every detection (label, score, box). For a video model the overlay
    is an animated GIF and ``gallery`` holds one overlay per frame.

    Args:
        settings: ``method``, ``head_fusion``, ``discard_ratio`` and ``target`` (a label from the
            predictions, or :data:`PREDICTED`) as the UI's widgets give them; optionally ``layer``,
            ``head`` (an index or :data:`FUSED_HEADS`) and ``start_layer``, used only by the methods
            that take them (:func:`method_settings`); and ``min_score``, ``detection`` (an index or
            :data:`ALL_DETECTIONS`), ``queries`` (text queries, one per line or comma-separated) and
            ``region`` (``(x0, y0, x1, y1)`` in image pixels, or all empty for the whole image), used
            only by the models that take them (:func:`model_settings`); ``clip``, a video model's
            animated GIF (a path), explained instead of ``image``.
    """
    import gradio as gr

    explainer = choice.explainer(model)
    kind = model_kind(explainer)
    settings = dict(settings)
    if kind == "video":
        return _explain_clip(choice, explainer, model, settings, colormap)
    settings.pop("clip", None)
    if image is None:
        raise gr.Error("Upload an image or pick an example first.")
    target = settings.pop("target", None)
    chosen = None if target in (None, "", PREDICTED) or kind != "image" else target
    if chosen is not None and settings.get("method") in METHODS and not METHODS[settings["method"]].needs_gradient:
        settings["method"] = "grad_rollout"  # a class was chosen: use a class-specific method
    taken = method_settings(settings.get("method"))
    for name in ("layer", "head", "start_layer"):
        value = settings.pop(name, None)
        if name in taken and value not in (None, "", FUSED_HEADS):
            settings[name] = int(value)
    count = explainer.family.detection_count(explainer) if explainer.is_detector else 0
    settings.update(_model_request(kind, settings.pop("min_score", None), settings.pop("detection", None),
                                   settings.pop("queries", None), settings.pop("region", None), count))
    try:
        found = explainer(image, target=chosen, **settings)
    except (InputError, TargetError, UnsupportedModelError, ValueError, TypeError, OSError) as exc:
        raise gr.Error(str(exc)) from None
    if not isinstance(found, list):
        if kind == "dense":
            x0, y0, x1, y1 = found.box
            what = f"mean depth {found.score:.4g}" if found.target is None else f"{found.label!r}, mean logit {found.score:.4g},"
            caption = f"{found.method} · {what} over the region ({x0:g}, {y0:g}, {x1:g}, {y1:g})"
            return choice.files.save(display_overlay(found, colormap)), caption, []
        if found.detection is None:
            return choice.files.save(display_overlay(found, colormap)), found.title, []
        found = [found]
    if not found:
        raise gr.Error(
            f"no detection scores at least {settings['min_score']:.2f}; lower the min score, or pick a detection by its index"
        )
    gallery = [(choice.files.save(display_overlay(e, colormap)), _detection_line(e)) for e in found]
    caption = "\n".join([f"{found[0].method} · {len(found)} detection{'s' if len(found) > 1 else ''} (the first shown):",
                          *(_detection_line(e) for e in found)])
    return gallery[0][0], caption, gallery


def _explain_clip(choice: ModelChoice, explainer, model: str, settings: dict, colormap: str):
    """A video model's explanation for the UI: ``(animated overlay GIF path, caption, per-frame overlays)``."""
    import gradio as gr

    clip = settings.pop("clip", None)
    frames = int(explainer.model.config.num_frames)
    if clip is None:
        raise gr.Error(
            f"{model!r} is a video model ({type(explainer.model).__name__}) and explains clips of {frames} frames: "
            f"upload one as an animated GIF (or, with the video extra, a video file) in the clip box ({frames} frames "
            "are taken from it, evenly spaced)."
        )
    for name in ("target", "layer", "head", "start_layer", "min_score", "detection", "queries", "region"):
        settings.pop(name, None)
    try:
        from .videos import read_video

        explanation = explainer(read_video(getattr(clip, "name", clip), frames, "the clip"), **settings)
    except (InputError, TargetError, UnsupportedModelError, ValueError, TypeError, OSError) as exc:
        raise gr.Error(str(exc)) from None
    overlays = explanation.overlays(colormap)
    gif = choice.files.save_gif(overlays)
    gallery = [(choice.files.save(_enlarged(o)), f"frame {i} (tubelet {i // explanation.tubelet_size})")
               for i, o in enumerate(overlays)]
    return gif, explanation.title, gallery


def _detection_line(explanation) -> str:
    """``detection 3: cat 0.87, box (x0, y0, x1, y1)`` in image pixels."""
    box = ", ".join(f"{v:.0f}" for v in explanation.box)
    return f"detection {explanation.detection}: {explanation.label} {explanation.score:.2f}, box ({box})"


def _model_request(kind: str, min_score, detection, queries, region, detections: int = 0) -> dict:
    """The UI's detection and region widgets → explainer settings for a ``kind`` of model
    (``detections``: how many the detector has, for the message about a typed index that is not one)."""
    import gradio as gr

    out: dict = {}
    taken = MODEL_SETTINGS[kind]
    if "detection" in taken:
        if detection not in (None, "", ALL_DETECTIONS):
            try:
                out["detection"] = int(str(detection).strip())
            except ValueError:
                raise gr.Error(
                    f"detection is {ALL_DETECTIONS!r} or a box index from 0 to {detections - 1}; got {detection!r}"
                ) from None
        else:
            out["min_score"] = DEFAULT_MIN_SCORE if min_score is None else float(min_score)
    if "queries" in taken:
        texts = [q.strip() for q in (queries or "").replace("\n", ",").split(",") if q.strip()]
        if not texts:
            raise gr.Error("This model detects what text queries name: type one or more, e.g. a cat, a remote control.")
        out["text"] = texts
    if "region" in taken:
        values = [None if v in (None, "") else float(v) for v in (region or ())]
        if any(v is not None for v in values):
            if len(values) != 4 or any(v is None for v in values):
                raise gr.Error("Give all four region values (x0, y0, x1, y1) in image pixels, or none for the whole image.")
            out["region"] = tuple(values)
    return out


class OverlayFiles:
    """Overlays written as PNG files, atomically, one file per distinct picture.

    Gradio caches a returned PIL image by rewriting a file named after its content in place, so two
    requests that produce the same overlay at the same moment can serve each other a half-written
    file (measured: one of 95 requests failed under 8 concurrent users). Returning a path instead
    makes Gradio copy the file with an atomic rename; this writes that file atomically too.
    """

    def __init__(self):
        import atexit
        import shutil
        import tempfile

        self.folder = Path(tempfile.mkdtemp(prefix="hf-vit-rollout-app-"))
        atexit.register(shutil.rmtree, self.folder, True)

    def save(self, image) -> str:
        import io

        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return self._write(buffer.getvalue(), ".png")

    def save_gif(self, frames: list, duration_ms: int = 200) -> str:
        """``frames`` (PIL images) as a looping animated GIF; returns its path."""
        import io

        buffer = io.BytesIO()
        frames = [_enlarged(f) for f in frames]
        frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=duration_ms, loop=0)
        return self._write(buffer.getvalue(), ".gif")

    def _write(self, data: bytes, suffix: str) -> str:
        import hashlib
        import os
        import tempfile

        path = self.folder / f"{hashlib.sha256(data).hexdigest()[:32]}{suffix}"
        if not path.exists():
            fd, staging = tempfile.mkstemp(dir=self.folder, suffix=".tmp")
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(staging, path)
        return str(path)


def display_overlay(explanation, colormap: str = "jet"):
    """The overlay as the app shows it: small inputs (like the demo's 64 px) scaled up for viewing
    (nearest neighbour, so patches stay sharp), with a colour bar."""
    from .viz import add_colorbar

    return add_colorbar(_enlarged(explanation.overlay(colormap)), colormap)


def _enlarged(shown):
    """``shown`` scaled up (nearest neighbour) to :data:`DISPLAY_SIZE` if it is smaller."""
    if max(shown.size) < DISPLAY_SIZE:
        scale = DISPLAY_SIZE / max(shown.size)
        shown = shown.resize((round(shown.width * scale), round(shown.height * scale)), resample=0)
    return shown


#: Small inputs (the demo's 64 px) fill the image boxes instead of showing at their own size.
CSS = """
#input-image img, #overlay img { width: 100%; height: 100%; object-fit: contain; image-rendering: pixelated; }
"""


def subtitle() -> str:
    """The app's subtitle: every registered method, from the registry."""
    names = ", ".join(f"`{name}`" for name in METHODS)
    return f"Heat-maps of where a Hugging Face Vision Transformer looked, with any of {len(METHODS)} methods: {names}."


def image_input(**kwargs):
    """The upload box: a ``gr.Image`` (PIL) whose upload a visitor is told about when it is not an image.

    Gradio decodes an upload before the app's function runs; a text file or a truncated picture
    would otherwise end in Gradio's generic "has raised an exception" message. (The box's own
    ``preprocess`` is wrapped rather than subclassed: a ``gr.Image`` subclass would be drawn by
    another frontend component and makes Gradio write a ``.pyi`` file next to this module.)
    """
    import gradio as gr
    from PIL import UnidentifiedImageError

    box = gr.Image(type="pil", **kwargs)
    decode = box.preprocess

    def preprocess(payload):
        try:
            return decode(payload)
        except gr.Error:
            raise
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
            name = getattr(payload, "orig_name", None) or "the upload"
            reason = "is not an image file" if isinstance(exc, UnidentifiedImageError) else f"could not be decoded ({exc})"
            raise gr.Error(f"{name} {reason}; upload a PNG, JPEG, WebP, BMP or TIFF picture.") from None

    box.preprocess = preprocess
    return box


def build_app(models=("demo",), allow_any_model: bool = False, concurrency: int = CONCURRENCY, max_queue: int = MAX_QUEUE):
    """The Gradio ``Blocks`` app, its queue configured (``launch`` it with :func:`launch_kwargs`)."""
    import gradio as gr

    from .demo import example_images

    models = (models,) if isinstance(models, str) else tuple(models)
    choice = ModelChoice(models, allow_any_model)
    first = choice.explainer(models[0])
    with gr.Blocks(title="hf_vit_rollout: where did the ViT look?", **_style("Blocks")) as app:
        gr.Markdown(f"# Where did the Vision Transformer look?\n{subtitle()}")
        with gr.Row():
            with gr.Column():
                image = image_input(label="image", elem_id="input-image", height=320)
                label = "model" + (" (or type a Hub id)" if allow_any_model else "")
                model_box = gr.Dropdown(list(models), value=models[0], label=label, elem_id="model", allow_custom_value=allow_any_model)
                method = gr.Dropdown(list(METHODS), value="rollout", label="method", elem_id="method")
                head_fusion = gr.Dropdown(list(HEAD_FUSIONS), value="mean", label="head fusion")
                discard_ratio = gr.Slider(0.0, 0.99, value=METHODS["rollout"].default_discard_ratio, step=0.01, label="discard ratio")
                target = gr.Dropdown([PREDICTED], value=PREDICTED, label="target class (top-5 predictions)", allow_custom_value=True,
                                     visible=model_kind(first) == "image")
                with gr.Row():
                    layers = max(first.num_layers, 1)
                    shown = method_settings("rollout")
                    layer = gr.Slider(0, layers - 1, value=layers - 1, step=1, label="layer", elem_id="layer", visible="layer" in shown)
                    head = gr.Dropdown(_head_choices(first.num_heads), value=FUSED_HEADS, label="head", elem_id="head", visible="head" in shown)
                    start_layer = gr.Slider(
                        0, layers - 1, value=0, step=1, label="start layer", elem_id="start-layer", visible="start_layer" in shown
                    )
                extra = model_settings(first)
                with gr.Row():
                    min_score = gr.Slider(0.0, 1.0, value=DEFAULT_MIN_SCORE, step=0.01, label="min score", elem_id="min-score",
                                          visible="min_score" in extra)
                    detection = gr.Dropdown(detection_choices(first) or [ALL_DETECTIONS], value=ALL_DETECTIONS,
                                            label=detection_label(first), elem_id="detection", visible="detection" in extra,
                                            allow_custom_value=True)  # OWL-ViT: a box index is typed
                queries = gr.Textbox("", label="text queries (comma-separated)", placeholder="a cat, a remote control", elem_id="queries",
                                     visible="queries" in extra)
                clip = gr.File(label="clip (an animated GIF, or a video file with the video extra)", file_types=list(VIDEO_SUFFIXES),
                               elem_id="clip", visible="clip" in extra)
                with gr.Row(visible="region" in extra, elem_id="region") as region_row:
                    region = [gr.Number(label=f"region {name} (px)", elem_id=f"region-{name}") for name in ("x0", "y0", "x1", "y1")]
                button = gr.Button("Explain", variant="primary", elem_id="explain")
            with gr.Column():
                overlay = gr.Image(type="filepath", label="overlay", elem_id="overlay", interactive=False, height=320, format="png")
                caption = gr.Textbox(label="explanation", elem_id="caption")
                predictions = gr.Label(num_top_classes=5, label="predictions", elem_id="predictions")
                gallery = gr.Gallery(label="every explained detection, or every frame", elem_id="detections",
                                     visible="detection" in extra or "clip" in extra, columns=3)
        examples = [str(p) for p in example_images()]
        if examples:
            gr.Examples(examples, inputs=image)

        def on_predict(img, model_id):
            return top_predictions(choice, img, model_id)

        def on_image(img, model_id):
            top = on_predict(img, model_id)
            return gr.update(choices=[PREDICTED, *top], value=PREDICTED), top

        def on_method(method_name):
            taken = method_settings(method_name)
            spec = METHODS[method_name]
            return (
                gr.update(value=spec.default_discard_ratio),
                gr.update(visible="layer" in taken),
                gr.update(visible="head" in taken),
                gr.update(visible="start_layer" in taken),
            )

        def on_model(model_id):
            explainer = choice.explainer(model_id)
            last = max(explainer.num_layers - 1, 0)
            return (
                gr.update(maximum=last, value=last),
                gr.update(choices=_head_choices(explainer.num_heads), value=FUSED_HEADS),
                gr.update(maximum=last, value=0),
                *model_updates(explainer),
            )

        def on_explain_all(img, model_id, method_name, fusion, ratio, target_name, layer_index=None, head_index=None, start=None,
                           score=None, detection_index=None, texts=None, x0=None, y0=None, x1=None, y1=None, clip_file=None):
            settings = {"method": method_name, "head_fusion": fusion, "discard_ratio": ratio, "target": target_name,
                        "layer": layer_index, "head": head_index, "start_layer": start, "min_score": score,
                        "detection": detection_index, "queries": texts, "region": (x0, y0, x1, y1),
                        "clip": clip_file}
            return explain_all(choice, img, model_id, settings)

        def on_explain(*values):
            return on_explain_all(*values)[:2]

        image.change(on_image, [image, model_box], [target, predictions], api_name="predictions")
        method.change(on_method, method, [discard_ratio, layer, head, start_layer], api_name=False)
        model_box.change(on_model, model_box, [layer, head, start_layer, min_score, detection, queries, region_row, gallery, target, clip],
                         api_name=False)
        inputs = [image, model_box, method, head_fusion, discard_ratio, target, layer, head, start_layer, min_score, detection,
                  queries, *region, clip]
        button.click(on_explain_all, inputs, [overlay, caption, gallery], api_name="explain_all")
        hidden = gr.Button(visible=False)
        hidden.click(on_predict, [image, model_box], predictions, api_name="predict")
        # the API's one overlay and caption, with the image settings only (explain_all takes every setting)
        hidden.click(on_explain, inputs[:9], [overlay, caption], api_name="explain")
    app.queue(default_concurrency_limit=concurrency, max_size=max_queue)
    return app


def model_updates(explainer) -> tuple:
    """Gradio updates for the model settings' widgets (min score, detection, queries, the region's row,
    the gallery, the target class, the clip) when ``explainer``'s model is chosen: each shown only if it takes it."""
    import gradio as gr

    taken = model_settings(explainer)
    return (
        gr.update(visible="min_score" in taken),
        gr.update(choices=detection_choices(explainer) or [ALL_DETECTIONS], value=ALL_DETECTIONS, label=detection_label(explainer),
                  visible="detection" in taken),
        gr.update(visible="queries" in taken),
        gr.update(visible="region" in taken),
        gr.update(visible="detection" in taken or "clip" in taken, value=None),
        gr.update(visible=model_kind(explainer) == "image"),
        gr.update(visible="clip" in taken),
    )


def _head_choices(num_heads: int) -> list:
    return [FUSED_HEADS, *[str(h) for h in range(num_heads)]]


def _style(where: str) -> dict:
    """``{"css": CSS}`` for where this Gradio takes it: ``launch()`` from Gradio 6, ``Blocks()`` before."""
    import inspect

    import gradio as gr

    on_launch = "css" in inspect.signature(gr.Blocks.launch).parameters
    return {"css": CSS} if on_launch == (where == "launch") else {}


def launch_kwargs(max_upload_mb: float = MAX_UPLOAD_MB) -> dict:
    """``launch`` settings every start of the app uses: the upload limit, no sharing, the page style."""
    return {"max_file_size": int(max_upload_mb * 1_000_000), "share": False, **_style("launch")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="hf-vit-rollout app", description="Start the Gradio app.")
    parser.add_argument("--models", "--model", nargs="+", default=["demo"], help="models offered in the dropdown (default: demo)")
    parser.add_argument("--allow-any-model", action="store_true", help="let visitors type any Hub id or local folder")
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY, help="requests run at once")
    parser.add_argument("--max-queue", type=int, default=MAX_QUEUE, help="requests waiting at most")
    parser.add_argument("--max-upload-mb", type=float, default=MAX_UPLOAD_MB, help="largest upload accepted")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7860)
    args = parser.parse_args(argv)
    try:
        app = build_app(args.models, args.allow_any_model, args.concurrency, args.max_queue)
    except ImportError:
        print('hf-vit-rollout: error: the app needs gradio: pip install "hf-vit-rollout[app]"', file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:
        print(f"hf-vit-rollout: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    app.launch(server_name=args.host, server_port=args.port, **launch_kwargs(args.max_upload_mb))
    return 0
