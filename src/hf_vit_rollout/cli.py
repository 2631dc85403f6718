"""The ``hf-vit-rollout`` command.

Explain images and folders of images (``explain`` is the default command; the original tool's
flags are kept)::

    hf-vit-rollout photos/ --recursive --method gae --out maps/
    hf-vit-rollout cat.jpg --model facebook/deit-tiny-patch16-224 --save-maps --save-predictions maps/predictions.csv
    hf-vit-rollout --image_path cat.jpg --head_fusion max --discard_ratio 0.8
    hf-vit-rollout --image_path cat.jpg --category_index 243      # gradient rollout, as before

The other commands (:data:`COMMANDS`): ``demo`` (every method on the shipped examples, offline),
``evaluate`` (score methods on your images), ``labels`` (the classes a model can explain) and
``app`` (the Gradio app).

Every error is one line on stderr (``hf-vit-rollout: error: ...``) with exit code 2, in the
command's own terms (flags, not Python keywords); the output folder and every input are checked
before the model loads. Each overlay is written as soon as its image is done.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import re
import sys
import tempfile
from pathlib import Path

from . import __version__
from .capture import CaptureError
from .errors import InputError, TargetError, UnsupportedModelError
from .methods import HEAD_FUSIONS, METHODS

EXIT_BAD_INPUT = 2
_EXPECTED = (InputError, TargetError, UnsupportedModelError, CaptureError, FileNotFoundError, ValueError, OSError, TypeError)
PROG = "hf-vit-rollout"


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage block), exit code 2."""

    def error(self, message):
        self.exit(EXIT_BAD_INPUT, f"{PROG}: error: {message} (see '{self.prog} --help')\n")


# ------------------------------------------------------------------------------ error wording
#: Python keywords in library messages → what a shell user types instead (applied in order).
_SHELL_TERMS = [
    (re.compile(r"pass target=callable\(outputs\) -> \(B,\) scores"), "explain it without --target"),
    (re.compile(r"pass head=None to fuse them"), "leave out --head to fuse them"),
    (re.compile(r"see \.id2label"), "list them with '{labels}'"),
    (re.compile(r"with local_files_only=True"), "with --local-files-only"),
    (re.compile(r"create the explainer with interpolate_pos_encoding=True"), "pass --interpolate-pos-encoding"),
    (re.compile(r"\bmethod='(\w+)'"), r"--method \1"),
    (re.compile(r"\(target=index\)"), "(--target INDEX)"),
    (re.compile(r"\bdetection=index\b"), "--detection INDEX"),
    (re.compile(r"region=\(x0, y0, x1, y1\)"), "--region X0 Y0 X1 Y1"),
    (re.compile(r"region=mask\b"), "--region-mask MASK.png"),
    (re.compile(r"\bregion_reduce="), "--region-reduce"),
    (re.compile(r"\b(target|text|top_k|layer|head|start_layer|masks|detection|min_score|region)=(?=[\s,;.)]|$)"), r"--\1"),
]


def shell_terms(message: str, model: str | None = None) -> str:
    """A library error message reworded for the command line, on one line.

    ``target=`` becomes ``--target``, ``see .id2label`` the ``labels`` command, ``local_files_only=True``
    the ``--local-files-only`` flag, and so on (:data:`_SHELL_TERMS`).
    """
    labels = f"{PROG} labels --model {model}" if model else f"{PROG} labels --model MODEL"
    text = " ".join(str(message).split())
    for pattern, replacement in _SHELL_TERMS:
        text = pattern.sub(replacement.replace("{labels}", labels), text)
    return text


def _fail(message: str, model: str | None = None) -> int:
    print(f"{PROG}: error: {shell_terms(message, model)}", file=sys.stderr)
    return EXIT_BAD_INPUT


# ------------------------------------------------------------------------------ parsers
def _methods_help() -> str:
    """One line per registered method (name: summary), for help texts."""
    width = max(map(len, METHODS)) + 2
    return "\n".join(f"  {name:<{width}}{spec.summary}" for name, spec in METHODS.items())


def _commands_help() -> str:
    return "\n".join(f"  {name:<10}{summary}" for name, (summary, _) in COMMANDS.items())


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="demo", help="Hub id, local checkpoint folder, 'demo' (default) or 'demo-swin'")
    parser.add_argument(
        "--local-files-only", "--local_files_only", action="store_true",
        help="never contact the Hub: use local folders and models already in the Hugging Face cache (fails at once if missing)",
    )


def _explain_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        usage=f"{PROG} [explain] IMAGE_OR_FOLDER [...] [options]\n       {PROG} COMMAND [options]   (COMMAND: {', '.join(COMMANDS)})",
        description="Heat-maps of where a Hugging Face Vision Transformer looked, for image files and folders.\n\n"
        f"commands ('{PROG} COMMAND --help' for each):\n{_commands_help()}\n\nmethods (--method):\n{_methods_help()}",
        epilog=f"example: {PROG} photos/ --recursive --method gae --save-maps --out maps/",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument("images", nargs="*", metavar="IMAGE_OR_FOLDER", help="image files, or folders of images (video models: video files, written as animated GIF overlays)")
    parser.add_argument("--image_path", "--image-path", action="append", default=[], help="an image file or folder (repeatable)")
    parser.add_argument("-r", "--recursive", action="store_true", help="also take the images in the folders' subfolders")
    _add_model_options(parser)
    parser.add_argument("--method", choices=list(METHODS), default=None, help="default: rollout, or grad_rollout when a class is asked for")
    parser.add_argument("--head_fusion", "--head-fusion", choices=HEAD_FUSIONS, default="mean")
    parser.add_argument("--discard_ratio", "--discard-ratio", type=float, default=None, help="in [0, 1); default per method")
    parser.add_argument("--category_index", "--category-index", type=int, default=None, help="class index to explain")
    parser.add_argument("--target", default=None, help="class label name (or index) to explain; see 'hf-vit-rollout labels'")
    parser.add_argument("--top_k", "--top-k", type=int, default=None, help="explain each of the k most probable classes")
    parser.add_argument("--text", default=None, help="image-text models (CLIP, SigLIP): explain the similarity with this text")
    parser.add_argument("--detection", type=int, default=None, help="detection models (YOLOS, OWL-ViT, OWLv2, DETR): the detection to explain (a detection token, box or object query)")
    parser.add_argument(
        "--min_score", "--min-score", type=float, default=None,
        help="detection models (YOLOS, OWL-ViT, OWLv2, DETR): explain every detection whose class score is at least this",
    )
    parser.add_argument(
        "--region", type=float, nargs=4, default=None, metavar=("X0", "Y0", "X1", "Y1"),
        help="depth models (DPT): explain the mean predicted depth of this box, in image pixels (default: the whole image)",
    )
    parser.add_argument(
        "--region-mask", "--region_mask", type=Path, default=None, metavar="MASK.png",
        help="depth models: explain the region of this mask image instead of a box (the image's size; pixels above 127 inside)",
    )
    parser.add_argument(
        "--region-reduce", "--region_reduce", choices=("mean", "sum", "max", "min"), default=None,
        help="depth models: how the region's predicted depths become the explained score (default: mean)",
    )
    parser.add_argument("--layer", type=int, default=None, help="method 'attention': which layer (default -1, the last)")
    parser.add_argument("--head", type=int, default=None, help="method 'attention': which head (default: heads fused)")
    parser.add_argument("--start_layer", "--start-layer", type=int, default=None, help="methods that multiply layers: the first one multiplied in")
    parser.add_argument("--full_resolution", "--full-resolution", action="store_true", help="heat-maps at the image's own size")
    parser.add_argument(
        "--interpolate-pos-encoding", "--interpolate_pos_encoding", action="store_true",
        help="let the model take inputs of another size than it was trained at",
    )
    parser.add_argument("--out", type=Path, default=Path("."), help="output folder (default: the current one)")
    parser.add_argument("--colormap", default="jet", help="matplotlib colormap name (default: jet)")
    parser.add_argument("--colorbar", action="store_true", help="draw a colour bar beside each overlay")
    parser.add_argument("--save-maps", "--save_maps", action="store_true", help="also write each heat-map as a float32 .npy array (H, W); (T, H, W) for a video")
    parser.add_argument(
        "--save-predictions", "--save_predictions", type=Path, default=None, metavar="FILE.json|FILE.csv",
        help="write one record per explanation (image, files, method, target, label, score, prediction, settings)",
    )
    parser.add_argument("--batch_size", "--batch-size", type=int, default=16)
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps, ... (default: cpu)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _demo_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=f"{PROG} demo",
        description="Explain the shipped example images with every registered method on the shipped demo model "
        f"(offline): a comparison figure with a colour bar, one overlay per explanation, and the input images.\n\n"
        f"methods:\n{_methods_help()}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default: demo_out)")
    parser.add_argument("--colormap", default="jet")
    return parser


def _labels_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=f"{PROG} labels",
        description="List the classes a model can explain (index and name, one per line), e.g. for --target.",
        epilog=f"example: {PROG} labels --model demo | grep ring",
    )
    _add_model_options(parser)
    parser.add_argument("--json", action="store_true", help="print a JSON object {index: label} instead")
    return parser


# ------------------------------------------------------------------------------ inputs and outputs
def image_suffixes() -> frozenset[str]:
    """File name endings of the image formats PIL can open (``.png``, ``.jpg``, ``.tif``, ...)."""
    from PIL import Image

    Image.init()
    return frozenset(ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN)


def expand_inputs(paths: list[str], recursive: bool = False) -> list[str]:
    """Image files for the command line's inputs: files as given, folders replaced by their images.

    A folder gives its image files (by name ending, see :func:`image_suffixes`; hidden files
    skipped), sorted, with ``recursive`` those of every subfolder too.

    Raises:
        InputError: a folder with no image files (the message says whether ``--recursive`` would help).
    """
    suffixes = image_suffixes()
    expanded: list[str] = []
    for path in paths:
        folder = Path(path)
        if not folder.is_dir():
            expanded.append(path)
            continue
        candidates = folder.rglob("*") if recursive else folder.iterdir()
        found = sorted(
            str(p) for p in candidates
            if p.suffix.lower() in suffixes and p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        )
        if not found:
            nested = not recursive and any(p.is_dir() for p in folder.iterdir())
            hint = "; its subfolders are not searched without --recursive" if nested else ""
            raise InputError(f"folder {path!r} has no image files (.png, .jpg, .tif, .webp, ...){hint}")
        expanded.extend(found)
    return expanded


def prepare_out_dir(path: Path) -> Path:
    """Make ``path`` (and parents) and check a file can be written there, before any work.

    Raises:
        OSError: it is a file, cannot be made, or is not writable (the message says which).
    """
    if path.exists() and not path.is_dir():
        raise OSError(f"output folder {str(path)!r} is an existing file; pass a folder with --out")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".hf-vit-rollout-check-"):
            pass
    except OSError as exc:
        raise OSError(f"cannot write to output folder {str(path)!r}: {exc.strerror or exc}") from None
    return path


def unique_stems(paths: list[str]) -> list[str]:
    """One output stem per input, never two alike: a repeated file name gets its parent folders
    (``a/x.png``, ``b/x.png`` → ``a_x``, ``b_x``), and a counter if that still collides."""
    stems = [Path(p).stem for p in paths]
    repeated = {s for s in stems if stems.count(s) > 1}
    named = []
    for path, stem in zip(paths, stems):
        if stem in repeated:
            parent = Path(os.path.abspath(path)).parent
            stem = f"{parent.name}_{stem}" if parent.name else stem
        named.append(stem)
    seen: dict[str, int] = {}
    unique = []
    for stem in named:
        seen[stem] = seen.get(stem, 0) + 1
        unique.append(stem if seen[stem] == 1 else f"{stem}_{seen[stem]}")
    return unique


def _output_name(stem: str, explanation, fusion: str) -> str:
    """``<stem>_<method>_<fusion>_<discard>[_layer<l>][_head<h>][_from<s>][_<target>]``: every
    setting that changes the map is in the name, so two runs with different settings never collide."""
    params = explanation.params
    parts = [stem, explanation.method, fusion, f"{params['discard_ratio']:g}"]
    if "layer" in params:
        parts.append(f"layer{params['layer']}")
    if params.get("head") is not None:
        parts.append(f"head{params['head']}")
    if params.get("start_layer"):
        parts.append(f"from{params['start_layer']}")
    if getattr(explanation, "detection", None) is not None:  # a detection model: one file per detection
        parts.append(f"det{explanation.detection}")
    if explanation.target is not None:
        parts.append(str(explanation.target))
    return "_".join(parts)


#: Columns of ``--save-predictions``, in order (settings follow, one column each).
RECORD_FIELDS = ("image", "overlay", "map", "method", "target", "label", "score", "predicted", "predicted_label")


class PredictionsFile:
    """The ``--save-predictions`` file: JSON (a list of records) or CSV (one row per record), by suffix.

    Checked writable before any work; :meth:`write` rewrites it whole, so it always holds every
    record so far (also when a later image fails).
    """

    def __init__(self, path: Path):
        self.format = path.suffix.lower().lstrip(".")
        if self.format not in ("json", "csv"):
            raise ValueError(f"--save-predictions {str(path)!r}: the file name must end in .json or .csv")
        if path.is_dir():
            raise OSError(f"--save-predictions {str(path)!r} is a folder; pass a file name ending in .json or .csv")
        prepare_out_dir(path.parent if str(path.parent) else Path("."))
        self.path, self.records = path, []

    def add(self, record: dict) -> None:
        self.records.append(record)

    def write(self) -> None:
        with open(self.path, "w", newline="") as handle:
            if self.format == "json":
                json.dump(self.records, handle, indent=1)
                handle.write("\n")
                return
            settings = sorted({k for r in self.records for k in r} - set(RECORD_FIELDS))
            writer = csv.DictWriter(handle, [*RECORD_FIELDS, *settings])
            writer.writeheader()
            writer.writerows({k: ("" if v is None else v) for k, v in r.items()} for r in self.records)


def _record(path: str, explanation, overlay: Path, heatmap: Path | None, id2label: dict) -> dict:
    return {
        "image": path,
        "overlay": str(overlay),
        "map": None if heatmap is None else str(heatmap),
        "method": explanation.method,
        "target": explanation.target,
        "label": explanation.label,
        "score": explanation.score,
        "predicted": explanation.predicted,
        "predicted_label": id2label.get(explanation.predicted) if explanation.predicted is not None else None,
        **explanation.params,
    }


def _quiet_hub_logging() -> None:
    """One error line instead of the Hub client's retry warnings (each printed twice)."""
    try:
        from huggingface_hub.utils import logging as hub_logging

        hub_logging.set_verbosity_error()
    except ImportError:  # pragma: no cover
        pass
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass


def _region_of(args):
    """``--region``'s box or ``--region-mask``'s mask (a PIL image), ``None`` without either."""
    if args.region_mask is None:
        return None if args.region is None else tuple(args.region)
    if args.region is not None:
        raise TargetError("give either --region X0 Y0 X1 Y1 or --region-mask MASK.png, not both")
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(args.region_mask) as mask:
            return mask.convert("L")
    except (OSError, UnidentifiedImageError) as exc:
        raise InputError(f"cannot read the region mask {str(args.region_mask)!r} as an image: {exc}") from None


def _hub_kwargs(args) -> dict:
    return {"local_files_only": True} if args.local_files_only else {}


# ------------------------------------------------------------------------------ commands
def run_explain(argv: list[str]) -> int:
    args = _explain_parser().parse_args(argv)
    from .explainer import RolloutExplainer
    from .images import image_sources
    from .request import check_device

    inputs = [*args.images, *args.image_path]
    if not inputs:
        return _fail(f"no images given; pass image files or folders (or run '{PROG} demo')")
    if args.category_index is not None and args.target is not None:
        return _fail("give either --category_index or --target, not both")
    target = args.category_index if args.category_index is not None else args.target
    if isinstance(target, str) and target.lstrip("-").isdigit():
        target = int(target)
    wants_class = target is not None or args.top_k is not None or args.text is not None
    method = args.method or ("grad_rollout" if wants_class else "rollout")
    predictions = None
    try:
        check_device(args.device)
        out = prepare_out_dir(args.out)
        if args.save_predictions is not None:
            predictions = PredictionsFile(args.save_predictions)
        paths = expand_inputs(inputs, args.recursive)
        image_sources(paths)  # every path checked before the model loads
        explainer = RolloutExplainer.from_pretrained(
            args.model, method=method, head_fusion=args.head_fusion, discard_ratio=args.discard_ratio,
            device=args.device, batch_size=args.batch_size, interpolate_pos_encoding=args.interpolate_pos_encoding,
            **_hub_kwargs(args),
        )
        request = explainer.request(
            target=target, top_k=args.top_k, text=args.text, progress=not args.quiet, full_resolution=args.full_resolution,
            layer=args.layer, head=args.head, start_layer=args.start_layer, detection=args.detection, min_score=args.min_score,
            region=_region_of(args), region_reduce=args.region_reduce,
        )
        stems = unique_stems(paths)
        # the generator drives the loop, so it runs to its end (its progress bar reaches the total)
        for index, result in enumerate(explainer.explain_iter(paths, request)):
            for explanation in result if isinstance(result, list) else [result]:
                name = _output_name(stems[index], explanation, args.head_fusion)
                video = hasattr(explanation, "save_gif")  # a video model's clip: an animated overlay
                file = out / f"{name}.gif" if video else out / f"{name}.png"
                if video:
                    explanation.save_gif(file, colormap=args.colormap)
                else:
                    explanation.overlay(args.colormap, colorbar=args.colorbar).save(file)
                heatmap = None
                if args.save_maps:
                    import numpy as np

                    heatmap = out / f"{name}.npy"
                    maps = explanation.heatmaps if video else explanation.heatmap  # (T, H, W) for a clip
                    np.save(heatmap, maps.astype("float32", copy=False))
                if predictions is not None:
                    predictions.add(_record(paths[index], explanation, file, heatmap, explainer.id2label))
                print(f"{paths[index]}: {explanation.title} -> {file}")
    except _EXPECTED as exc:
        return _fail(str(exc), args.model)
    finally:
        if predictions is not None and predictions.records:
            predictions.write()
    if predictions is not None:
        print(f"predictions -> {predictions.path}")
    return 0


def run_demo(argv: list[str]) -> int:
    args = _demo_parser().parse_args(argv)
    from .demo.figure import write_demo

    try:
        written = write_demo(prepare_out_dir(args.out), colormap=args.colormap)
    except _EXPECTED as exc:
        return _fail(str(exc))
    for path in written:
        print(path)
    return 0


def run_labels(argv: list[str]) -> int:
    args = _labels_parser().parse_args(argv)
    from .explainer import RolloutExplainer

    try:
        explainer = RolloutExplainer.from_pretrained(args.model, **_hub_kwargs(args))
    except _EXPECTED as exc:
        return _fail(str(exc), args.model)
    labels = explainer.id2label
    if not labels:
        text_hint = " or with --text \"a photo of ...\"" if explainer.is_image_text_model else ""
        return _fail(
            f"{args.model!r} ({type(explainer.model).__name__}) has no classifier head, so it has no class labels; "
            f"explain it without --target{text_hint}"
        )
    if args.json:
        print(json.dumps({str(i): labels[i] for i in sorted(labels)}, indent=1))
    else:
        for index in sorted(labels):
            print(f"{index}\t{labels[index]}")
    return 0


def run_evaluate(argv: list[str]) -> int:
    from .evaluation.cli import main as evaluate_main

    return evaluate_main(argv)


def run_app(argv: list[str]) -> int:
    from .app import main as app_main

    return app_main(argv)


#: The subcommands: name → (one-line summary for the help, runner). ``explain`` is the default.
COMMANDS = {
    "explain": ("heat-maps for image files and folders (the default: 'hf-vit-rollout photo.jpg' works too)", run_explain),
    "demo": ("every method on the shipped example images, offline (a figure and overlays)", run_demo),
    "evaluate": ("score methods on your images and masks (deletion, insertion, pointing game, ...)", run_evaluate),
    "labels": ("list the classes a model can explain (for --target)", run_labels),
    "app": ("start the Gradio app (pip install \"hf-vit-rollout[app]\")", run_app),
}


def main(argv: list[str] | None = None) -> int:
    """Run the command with ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    _quiet_hub_logging()
    if argv[:1] and argv[0] in COMMANDS:
        return COMMANDS[argv[0]][1](argv[1:])
    return run_explain(argv)


if __name__ == "__main__":
    sys.exit(main())
