"""Fuzz every front door with hypothesis: request settings and image inputs an adversarial user might pass.

Doors: the explainer, the ``vit-explanation`` pipeline, the ``hf-vit-rollout`` command, the app's
explain function, ``evaluate`` and ``explain_dataset``, on tiny random checkpoints (a ViT with a
classifier, a ViT backbone, a Swin). Every example ends in one of:

* ``ok``: a result that passes the checks (mask float32, finite, in [0, 1], on the model's patch
  grid; heat-map at the image's size; the same map as the explainer gives for the same input and
  settings — so no door can return another map than the explainer);
* ``refused``: an error raised by the package itself (the last frame of its traceback is in
  ``hf_vit_rollout``) of one of the types it documents; the command: exit code 2 with a one-line
  message and no traceback;
* ``FAILED``: anything else (a raw torch/numpy/PIL error, a wrong or inconsistent map, a door that
  refuses what the explainer takes or the other way round).

Usage::

    python benchmarks/fuzz_doors.py --examples 200            # every door, 200 examples each
    python benchmarks/fuzz_doors.py --doors explainer app --examples 50 --seed 3

Prints one row per door: examples, ok, refused, failed, seconds; then each failure. Exit code 1
if anything failed. ``tests/test_fuzz_doors.py`` runs the same doors with a few examples each.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

DOORS = ("explainer", "pipeline", "cli", "app", "evaluate", "explain_dataset")
LABELS = {0: "cat", 1: "dog", 2: "tabby, tabby cat"}
PACKAGE = os.sep + "hf_vit_rollout" + os.sep


# ------------------------------------------------------------------------------------------ models
def build_models(folder: Path) -> dict[str, str]:
    """Tiny random checkpoints saved as a user would: ``vit`` (3 classes), ``backbone``, ``swin``, and
    ``swin_any_size`` (that Swin with a processor that does not resize: any input size reaches it)."""
    import transformers as T

    common = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, image_size=32,
                  patch_size=8, num_labels=3, id2label=LABELS, label2id={v: k for k, v in LABELS.items()})
    torch.manual_seed(0)
    models = {
        "vit": T.ViTForImageClassification(T.ViTConfig(**common)),
        "backbone": T.ViTModel(T.ViTConfig(**common)),
        "swin": T.SwinForImageClassification(T.SwinConfig(image_size=32, patch_size=4, embed_dim=8, depths=[1, 1],
                                                          num_heads=[1, 1], window_size=4, num_labels=3, id2label=LABELS,
                                                          label2id={v: k for k, v in LABELS.items()})),
    }
    models["swin_any_size"] = models["swin"]  # the same Swin behind a processor that does not resize
    paths = {}
    for name, model in models.items():
        path = folder / name
        model.save_pretrained(path)
        resize = {"do_resize": False} if name == "swin_any_size" else {"size": {"height": 32, "width": 32}}
        T.ViTImageProcessorPil(**resize).save_pretrained(path)
        paths[name] = str(path)
    return paths


# ------------------------------------------------------------------------------------------ inputs
SIDES = [0, 1, 2, 7, 31, 32, 45, 64]
DTYPES = ["uint8", "uint16", "int32", "int64", "float32", "float64", "bool"]
MODES = ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I", "I;16", "F"]
FILES = ["png", "jpeg", "exif_jpeg", "tiff16", "bmp", "gif", "webp", "truncated", "text", "empty", "directory", "missing"]

image_specs = st.one_of(
    st.fixed_dictionaries({"kind": st.just("array"), "h": st.sampled_from(SIDES), "w": st.sampled_from(SIDES),
                           "channels": st.sampled_from([None, 1, 3, 4, 2, "first"]), "dtype": st.sampled_from(DTYPES),
                           "values": st.sampled_from(["range", "range", "over", "negative", "nan", "constant"]),
                           "seed": st.integers(0, 9)}),
    st.fixed_dictionaries({"kind": st.just("pil"), "h": st.sampled_from(SIDES[1:]), "w": st.sampled_from(SIDES[1:]),
                           "mode": st.sampled_from(MODES), "seed": st.integers(0, 9)}),
    st.fixed_dictionaries({"kind": st.just("tensor"), "h": st.sampled_from(SIDES[1:]), "w": st.sampled_from(SIDES[1:]),
                           "channels": st.sampled_from([1, 3, 4, 5]), "dtype": st.sampled_from(["uint8", "float32"]),
                           "values": st.sampled_from(["range", "over"]), "batch": st.booleans(), "seed": st.integers(0, 9)}),
    st.fixed_dictionaries({"kind": st.just("file"), "h": st.sampled_from(SIDES[2:]), "w": st.sampled_from(SIDES[2:]),
                           "format": st.sampled_from(FILES), "orientation": st.integers(1, 8), "seed": st.integers(0, 9)}),
)


def make_image(spec: dict, folder: Path):
    """The input a spec describes (an array, PIL image, tensor or file path)."""
    rng = np.random.default_rng(spec["seed"])
    h, w = spec["h"], spec["w"]
    if spec["kind"] == "pil":
        rgb = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        if spec["mode"] == "I;16":
            return Image.fromarray(rng.integers(0, 65536, (h, w), dtype=np.uint16))
        if spec["mode"] == "F":
            return Image.fromarray(rng.random((h, w)).astype(np.float32))
        return rgb.convert(spec["mode"])
    if spec["kind"] == "tensor":
        shape = (spec["channels"], h, w)
        x = torch.from_numpy(rng.integers(0, 256, shape).astype(np.uint8))
        if spec["dtype"] == "float32":
            x = x.float() / 255 * (3 if spec["values"] == "over" else 1)
        return x[None] if spec["batch"] else x
    if spec["kind"] == "file":
        return make_file(spec, folder, rng)
    channels = spec["channels"]
    shape = (h, w) if channels is None else (3, h, w) if channels == "first" else (h, w, channels)
    dtype = np.dtype(spec["dtype"])
    top = {"u": np.iinfo(dtype).max if dtype.kind in "ui" else 1}.get(dtype.kind, 255 if dtype.kind == "i" else 1)
    if dtype.kind == "f":
        arr = rng.random(shape)
    elif dtype == bool:
        arr = rng.random(shape) > 0.5
    else:
        arr = rng.integers(0, 256 if dtype.kind == "i" else top, shape, endpoint=False)
    values = spec["values"]
    if values == "over" and dtype != bool:
        arr = arr * (4 if dtype.kind == "f" else 2) + (0 if dtype.kind == "f" else 300)
    elif values == "negative" and dtype.kind in "if":
        arr = arr - (2 if dtype.kind == "f" else 500)
    elif values == "nan" and dtype.kind == "f":
        arr = arr.copy()
        arr.flat[:: max(1, arr.size // 3)] = np.nan
    elif values == "constant":
        arr = np.zeros(shape)
    with np.errstate(all="ignore"):
        return np.asarray(arr).astype(dtype)


def make_file(spec: dict, folder: Path, rng) -> str:
    h, w, fmt = spec["h"], spec["w"], spec["format"]
    path = folder / f"input_{fmt}_{h}x{w}_{spec['seed']}"
    rgb = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    if fmt == "directory":
        path.mkdir(exist_ok=True)
        return str(path)
    if fmt == "missing":
        return str(path) + ".png"
    suffix = {"jpeg": ".jpg", "exif_jpeg": ".jpg", "tiff16": ".tif", "truncated": ".png", "text": ".png", "empty": ".png"}
    path = path.with_suffix(suffix.get(fmt, "." + fmt))
    if fmt == "exif_jpeg":
        exif = Image.Exif()
        exif[0x0112] = spec["orientation"]
        rgb.save(path, quality=90, exif=exif)
    elif fmt == "tiff16":
        Image.fromarray(rng.integers(0, 65536, (h, w), dtype=np.uint16)).save(path)
    elif fmt in ("truncated", "text", "empty"):
        rgb.save(path, format="PNG")
        data = path.read_bytes()
        path.write_bytes({"truncated": data[: max(20, len(data) // 2)], "text": b"not an image", "empty": b""}[fmt])
    else:
        rgb.save(path)
    return str(path)


# ------------------------------------------------------------------------------------------ settings
CALLABLES = {
    "logit": lambda out: out.logits[:, 1],
    "pooled": lambda out: out.pooler_output.sum(-1) if getattr(out, "pooler_output", None) is not None else out.logits[:, 0],
    "detached": lambda out: out.logits[:, 0].detach(),
    "wrong_shape": lambda out: out.logits,
    "integer": lambda out: out.logits.argmax(-1),
    "nan": lambda out: out.logits[:, 0] * float("nan"),
    "not_a_tensor": lambda out: 1.0,
}

setting_specs = st.fixed_dictionaries(
    {},
    optional={
        "method": st.sampled_from(["rollout", "grad_rollout", "gae", "flow", "transformer_attribution", "attnlrp",
                                   "cp_lrp", "libragrad", "legrad", "attention", "bogus", ""]),
        "head_fusion": st.sampled_from(["mean", "min", "max", "median", 3]),
        "discard_ratio": st.one_of(st.sampled_from([0.0, 0.5, 0.9, 0.99, 1.0, -0.1, math.nan, math.inf]), st.floats(0, 0.999),
                                   st.just("0.5")),
        "target": st.one_of(st.integers(-2, 5), st.sampled_from(["cat", "dog", "tabby", "Golden", "", 1.5, True]),
                            st.sampled_from(sorted(CALLABLES)).map(lambda k: ("callable", k))),
        "layer": st.integers(-4, 3),
        "head": st.integers(-3, 3),
        "start_layer": st.integers(-3, 3),
        "top_k": st.integers(-1, 5),
        "full_resolution": st.booleans(),
        "text": st.just("a cat"),
    },
)


#: Settings every model takes (2 attention layers, 1-2 heads, 3 classes): half the examples draw these,
#: so that many examples reach a result and their maps are compared across the doors.
valid_settings = st.fixed_dictionaries(
    {},
    optional={
        "method": st.sampled_from(["rollout", "grad_rollout", "gae", "flow", "transformer_attribution", "attnlrp",
                                   "cp_lrp", "libragrad", "legrad", "attention"]),
        "head_fusion": st.sampled_from(["mean", "min", "max"]),
        "discard_ratio": st.sampled_from([0.0, 0.5, 0.9]),
        "target": st.one_of(st.integers(0, 2), st.sampled_from(["cat", "dog", "tabby"]),
                            st.sampled_from(["logit", "pooled"]).map(lambda k: ("callable", k))),
        "layer": st.integers(-1, 0),
        "head": st.integers(0, 0),
        "top_k": st.integers(1, 3),
        "full_resolution": st.booleans(),
    },
)
valid_images = st.fixed_dictionaries({"kind": st.sampled_from(["array", "file"]), "h": st.sampled_from([9, 32, 45, 64]),
                                      "w": st.sampled_from([9, 32, 45, 64]), "channels": st.just(3), "dtype": st.just("uint8"),
                                      "values": st.just("range"), "format": st.sampled_from(["png", "jpeg", "exif_jpeg"]),
                                      "orientation": st.integers(1, 8), "seed": st.integers(0, 9)})


def concrete(spec: dict) -> dict:
    """Settings with callable targets made real (specs stay printable)."""
    out = dict(spec)
    if isinstance(out.get("target"), tuple):
        out["target"] = CALLABLES[out["target"][1]]
    return out


# ------------------------------------------------------------------------------------------ outcomes
def _documented_errors():
    from hf_vit_rollout import CaptureError, InputError, NonFiniteError, TargetError, UnsupportedModelError

    return (InputError, TargetError, UnsupportedModelError, NonFiniteError, CaptureError, ValueError, TypeError,
            FileNotFoundError, RuntimeError)


def raised_by_package(exc: BaseException) -> bool:
    """The exception's innermost frame is the package's code: it was raised on purpose, with its message."""
    tb = exc.__traceback__
    last = None
    while tb is not None:
        last = tb
        tb = tb.tb_next
    return last is not None and PACKAGE in last.tb_frame.f_code.co_filename


def classify_error(exc: BaseException) -> str | None:
    """``None`` if ``exc`` is a clear refusal by the package, else why not."""
    try:
        import gradio as gr

        if isinstance(exc, gr.Error):  # the app re-raises the package's error as gr.Error(str(exc)) from None
            if not raised_by_package(exc):
                return f"gr.Error not raised by the package: {exc}"
            inner = exc.__context__
            if inner is None or exc.message != str(inner):
                return None  # the package's own message
            exc = inner  # a message passed through: judge the error it came from
    except ImportError:
        pass
    frames = traceback.extract_tb(exc.__traceback__)
    if frames and frames[-1].filename == __file__:
        return None  # the user's own callable target raised: passed through as it is
    if not isinstance(exc, _documented_errors()):
        return f"{type(exc).__module__}.{type(exc).__name__}: {exc}"
    if not raised_by_package(exc):
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        return f"raw {type(exc).__name__} from {frame.filename}:{frame.lineno}: {str(exc)[:200]}"
    return None


@dataclass
class Tally:
    counts: Counter = field(default_factory=Counter)
    failures: list = field(default_factory=list)
    seconds: float = 0.0

    def fail(self, door: str, image, settings_spec, problem: str) -> None:
        self.counts[(door, "FAILED")] += 1
        self.failures.append((door, image, settings_spec, problem))


def check_explanation(exp, image_size: tuple[int, int] | None, grid: tuple[int, int] | None) -> str | None:
    """Why an explanation is not a valid one, or ``None``."""
    mask = np.asarray(exp.mask)
    if mask.dtype != np.float32 or not np.isfinite(mask).all() or mask.min() < 0 or mask.max() > 1:
        return f"mask dtype {mask.dtype}, range [{np.nanmin(mask)}, {np.nanmax(mask)}]"
    if grid is not None and mask.shape != grid:
        return f"mask {mask.shape} on a {grid} grid"
    if not (mask.max() == 1 or mask.max() == 0):
        return f"mask peak {mask.max()}"
    heat = np.asarray(exp.heatmap)
    if image_size is not None and heat.shape != image_size and heat.size <= 2048 * 2048:
        return f"heat-map {heat.shape} for an image of {image_size}"
    if exp.score is not None and not (0 <= exp.score <= 1):
        return f"score {exp.score}"
    return None


# ------------------------------------------------------------------------------------------ the doors
class Doors:
    """The explainers, pipelines and app state every example reuses."""

    def __init__(self, folder: Path):
        from hf_vit_rollout import RolloutExplainer
        from hf_vit_rollout.pipeline import pipeline

        self.folder = folder
        self.paths = build_models(folder / "models")
        self.explainers = {k: RolloutExplainer.from_pretrained(p) for k, p in self.paths.items()}
        self.pipelines = {}
        self.pipeline = pipeline
        self._app = None

    def pipe(self, model: str):
        if model not in self.pipelines:
            self.pipelines[model] = self.pipeline(model=self.paths[model])
        return self.pipelines[model]

    def app(self):
        if self._app is None:
            from hf_vit_rollout.app import ModelChoice

            self._app = ModelChoice(tuple(self.paths.values()))
        return self._app


def reference(doors: Doors, model: str, image, settings_spec: dict):
    """The explainer's answer: ``("ok", explanation(s))`` or ``("refused", error)``; a raw error raises."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return "ok", doors.explainers[model](image, **concrete(settings_spec))
    except Exception as exc:  # noqa: BLE001 - classified
        problem = classify_error(exc)
        if problem is not None:
            raise AssertionError(problem) from exc
        return "refused", exc


def _first(result):
    while isinstance(result, list):
        result = result[0]
    return result


def _size_of(image) -> tuple[int, int] | None:
    from hf_vit_rollout.images import load_image

    try:
        return load_image(image).size[::-1]
    except Exception:  # noqa: BLE001
        return None


def _grid(explainer, image) -> tuple[int, int] | None:
    if not explainer.image_processor.do_resize:
        return None  # the grid follows the image
    return tuple(explainer.layout((32, 32)).grid_size)  # the other processors resize to 32 × 32


#: The settings a door takes at all (the others are left out of its examples, for it and its reference).
DOOR_SETTINGS = {"evaluate": {"method", "head_fusion", "discard_ratio", "target"},
                 "app": {"method", "head_fusion", "discard_ratio", "target", "layer", "head", "start_layer"}}


def run_door(door: str, doors: Doors, model: str, image, settings_spec: dict, tally: Tally) -> None:
    explainer = doors.explainers[model]
    if door in DOOR_SETTINGS:
        settings_spec = {k: v for k, v in settings_spec.items() if k in DOOR_SETTINGS[door]}
    if door == "app":  # the app shows layer, head and start layer only for the methods that take them
        from hf_vit_rollout.app import method_settings

        taken = method_settings(settings_spec.get("method", "rollout"))
        settings_spec = {k: v for k, v in settings_spec.items() if k not in ("layer", "head", "start_layer") or k in taken}
    try:
        expected_kind, expected = reference(doors, model, image, settings_spec)
    except AssertionError as exc:
        tally.fail("explainer", image, settings_spec, str(exc))
        return
    if door == "explainer":
        if expected_kind == "ok":
            results = expected if isinstance(expected, list) else [expected]
            flat = [e for r in results for e in (r if isinstance(r, list) else [r])]
            for exp in flat:
                problem = check_explanation(exp, _size_of(image) if not isinstance(image, torch.Tensor) or image.dim() == 3 else None,
                                            _grid(explainer, image))
                if problem:
                    tally.fail(door, image, settings_spec, problem)
                    return
        tally.counts[(door, expected_kind)] += 1
        return
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            got = DOOR_CALLS[door](doors, model, image, concrete(settings_spec))
    except _Skip:
        tally.counts[(door, "skipped")] += 1
        return
    except Exception as exc:  # noqa: BLE001 - classified
        problem = classify_error(exc)
        if problem is not None:
            tally.fail(door, image, settings_spec, problem)
        elif expected_kind == "ok" and not isinstance(exc, _door_only_errors(door)):
            tally.fail(door, image, settings_spec, f"refused what the explainer explains: {type(exc).__name__}: {exc}")
        else:
            tally.counts[(door, "refused")] += 1
        return
    if expected_kind == "refused":
        from hf_vit_rollout import TargetError

        if door not in LENIENT_DOORS or not isinstance(expected, TargetError):  # an image is refused by every door
            tally.fail(door, image, settings_spec, f"accepted what the explainer refuses ({type(expected).__name__}: {expected})")
            return
        tally.counts[(door, "ok")] += 1
        return
    problem = COMPARE[door](got, _first(expected))
    if problem:
        tally.fail(door, image, settings_spec, problem)
    else:
        tally.counts[(door, "ok")] += 1


class _Skip(Exception):
    """An input this door cannot take by construction (e.g. a tensor for the command line)."""


#: Doors whose own conventions for targets differ from the explainer's (a refused target may be taken).
LENIENT_DOORS = {"app", "cli", "evaluate"}  # the app and the command switch class-agnostic methods to grad_rollout for a class


def _door_only_errors(door: str) -> tuple:
    if door in ("evaluate", "explain_dataset", "app", "cli", "pipeline"):
        return (ValueError, TypeError, RuntimeError, FileNotFoundError)  # settings the door itself does not take
    return ()


def _call_pipeline(doors, model, image, settings_):
    if isinstance(image, torch.Tensor) and image.dim() == 4:
        raise _Skip
    return doors.pipe(model)(image, **settings_)


def _call_app(doors, model, image, settings_):
    from hf_vit_rollout.app import FUSED_HEADS, PREDICTED, explain

    if isinstance(image, torch.Tensor) or callable(settings_.get("target")):
        raise _Skip  # the app's widgets give PIL images and label names
    if isinstance(image, str):  # an upload: decoded by the app's upload box, as the server does
        from gradio.data_classes import ImageData

        from hf_vit_rollout.app import image_input

        if not os.path.isfile(image):
            raise _Skip  # a browser cannot upload a folder or a missing file
        image = image_input().preprocess(ImageData(path=image, orig_name=os.path.basename(image)))
    widget = {"method": settings_.get("method", "rollout"), "head_fusion": settings_.get("head_fusion", "mean"),
              "discard_ratio": settings_.get("discard_ratio", 0.9), "target": PREDICTED}
    target = settings_.get("target")
    if isinstance(target, str):
        widget["target"] = target
    elif target is not None:
        raise _Skip
    for name in ("layer", "head", "start_layer"):
        if name in settings_:
            widget[name] = str(settings_[name])
    widget.setdefault("head", FUSED_HEADS)
    path, caption = explain(doors.app(), image, doors.paths[model], widget)
    return {"path": path, "caption": caption}


def _call_cli(doors, model, image, settings_):
    from hf_vit_rollout.cli import main

    if not isinstance(image, str) or callable(settings_.get("target")):
        raise _Skip
    out = Path(tempfile.mkdtemp(dir=doors.folder))
    argv = [image, "--model", doors.paths[model], "--out", str(out), "--save-maps", "--quiet"]
    for name, value in settings_.items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            if value:
                argv.append(flag)
        else:
            argv += [flag, str(value)]
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse refuses a value: exit 2 with its usage line
            code = exc.code
    err = stderr.getvalue()
    if "Traceback" in err:
        raise AssertionError(f"the command printed a traceback: {err[-300:]}")
    if code == 2:
        if "error:" not in err:
            raise AssertionError(f"exit 2 without a message: {err[-200:]}")
        raise ValueError(err.strip().splitlines()[-1])  # a refusal, as a package error would be
    if code != 0:
        raise AssertionError(f"exit code {code}: {err[-300:]}")
    return sorted(out.glob("*.npy"))


def _call_evaluate(doors, model, image, settings_):
    from hf_vit_rollout import evaluate
    from hf_vit_rollout.evaluation import Deletion

    if isinstance(image, torch.Tensor):
        raise _Skip  # evaluate takes images as PIL, paths and (H, W[, C]) arrays
    method = settings_.get("method", "rollout")
    entry = (method, settings_.get("head_fusion"), settings_.get("discard_ratio"))
    target = settings_.get("target")
    if callable(target):
        raise _Skip
    report = evaluate(doors.explainers[model], [image], None if target is None else [target], methods=[entry],
                      metrics=[Deletion(steps=4), "sparseness", "complexity"], progress=False)
    return report


def _call_dataset(doors, model, image, settings_):
    import datasets

    from hf_vit_rollout import explain_dataset

    if callable(settings_.get("target")) or (isinstance(image, torch.Tensor) and image.dim() == 4):
        raise _Skip
    column = [image]
    if isinstance(image, torch.Tensor):  # a data set holds numpy-convention (H, W, C) arrays
        column = [image.permute(1, 2, 0).numpy()]
    data = datasets.Dataset.from_dict({"image": column}) if not isinstance(image, str) else \
        datasets.Dataset.from_dict({"image": column}, features=datasets.Features({"image": datasets.Value("string")}))
    with contextlib.redirect_stderr(io.StringIO()):
        return explain_dataset(data, doors.explainers[model], **settings_)


def _compare_pipeline(got, expected):
    got = _first(got)
    if not np.allclose(got["explanation"].mask, expected.mask, rtol=1e-4, atol=1e-5):
        return "pipeline map differs from the explainer's"
    return None


def _compare_app(got, expected):
    return None if Path(got["path"]).is_file() and got["caption"] else f"no overlay file or caption: {got}"


def _compare_cli(got, expected):
    if not got:
        return "no .npy map written"
    heat = np.load(got[0])
    if heat.shape != expected.heatmap.shape or not np.allclose(heat, expected.heatmap, rtol=1e-4, atol=1e-4):
        return f"command's map {heat.shape} differs from the explainer's {expected.heatmap.shape}"
    return None


def _compare_evaluate(report, expected):
    for method, values in report.summary().items():
        for metric, value in values.items():
            if not (math.isnan(value) or math.isfinite(value)):
                return f"{method}/{metric} = {value}"
    counts = report.counts()
    if any(v < 0 for v in counts.values()):
        return f"counts {counts}"
    return None


def _compare_dataset(out, expected):
    name = next(c for c in out.column_names if c.endswith("_mask"))
    mask = np.asarray(out[name][0], dtype=np.float32)
    if mask.ndim == 3:
        mask = mask[0]
    if mask.shape != expected.mask.shape or not np.allclose(mask, expected.mask, rtol=1e-4, atol=1e-5):
        return f"data-set mask {mask.shape} differs from the explainer's {expected.mask.shape}"
    return None


DOOR_CALLS = {"pipeline": _call_pipeline, "app": _call_app, "cli": _call_cli, "evaluate": _call_evaluate,
              "explain_dataset": _call_dataset}
COMPARE = {"pipeline": _compare_pipeline, "app": _compare_app, "cli": _compare_cli, "evaluate": _compare_evaluate,
           "explain_dataset": _compare_dataset}


def fuzz(doors: Doors, door: str, examples: int, tally: Tally, random_seed: int = 0) -> None:
    """Run ``examples`` hypothesis examples through ``door``, counting into ``tally`` (never raising)."""
    models = st.sampled_from(sorted(doors.paths))

    @seed(random_seed)
    @settings(max_examples=examples, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck), phases=[Phase.generate])
    @given(model=models, image_spec=st.one_of(valid_images, image_specs), settings_spec=st.one_of(valid_settings, setting_specs))
    def one(model, image_spec, settings_spec):
        image = make_image(image_spec, doors.folder)
        run_door(door, doors, model, image, settings_spec, tally)

    started = time.perf_counter()
    one()
    tally.seconds += time.perf_counter() - started


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=100, help="examples per door")
    parser.add_argument("--doors", nargs="+", default=list(DOORS), choices=DOORS)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        doors = Doors(Path(folder))
        print(f"{'door':<16}{'examples':>9}{'ok':>6}{'refused':>9}{'skipped':>9}{'failed':>8}{'seconds':>9}")
        failures = []
        for door in args.doors:
            tally = Tally()
            fuzz(doors, door, args.examples, tally, args.seed)
            c = tally.counts
            done = sum(v for (d, _), v in c.items() if d == door) + sum(v for (d, k), v in c.items() if d != door)
            print(f"{door:<16}{done:>9}{c[(door, 'ok')]:>6}{c[(door, 'refused')]:>9}{c[(door, 'skipped')]:>9}"
                  f"{sum(v for (d, k), v in c.items() if k == 'FAILED'):>8}{tally.seconds:>9.1f}", flush=True)
            failures += tally.failures
        for door, image, spec, problem in failures:
            shown = image if isinstance(image, str) else f"{type(image).__name__} {getattr(image, 'shape', getattr(image, 'size', ''))}"
            print(f"FAILED {door}: {problem}\n    image={shown} settings={spec}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
