"""The ``hf-vit-rollout`` command.

Explain images (the original tool's flags are kept)::

    hf-vit-rollout cat.jpg dog.png --model facebook/deit-tiny-patch16-224 --out maps/
    hf-vit-rollout --image_path cat.jpg --head_fusion max --discard_ratio 0.8
    hf-vit-rollout --image_path cat.jpg --category_index 243      # gradient rollout, as before

Run the offline demo on the shipped model and example images, or the Gradio app::

    hf-vit-rollout demo --out demo_out
    hf-vit-rollout app --models demo

Every error is one line on stderr (``hf-vit-rollout: error: ...``) with exit code 2; the output
folder is made and checked before any work. Each overlay is written as soon as its image is done.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
from pathlib import Path

from .capture import CaptureError
from .errors import InputError, TargetError, UnsupportedModelError
from .methods import HEAD_FUSIONS, METHODS

EXIT_BAD_INPUT = 2
_EXPECTED = (InputError, TargetError, UnsupportedModelError, CaptureError, FileNotFoundError, ValueError, OSError, TypeError)


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage block), exit code 2."""

    def error(self, message):
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see --help)\n")


def _explain_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="hf-vit-rollout",
        description="Attention rollout heat-maps for Hugging Face Vision Transformers. "
        "Run 'hf-vit-rollout demo' for the offline demo, 'hf-vit-rollout app' for the Gradio app.",
    )
    parser.add_argument("images", nargs="*", help="image files to explain")
    parser.add_argument("--image_path", "--image-path", action="append", default=[], help="an image file (repeatable)")
    parser.add_argument("--model", default="demo", help="Hub id, local checkpoint directory, or 'demo' (default)")
    parser.add_argument("--method", choices=list(METHODS), default=None, help="default: rollout, or grad_rollout with a target")
    parser.add_argument("--head_fusion", "--head-fusion", choices=HEAD_FUSIONS, default="mean")
    parser.add_argument("--discard_ratio", "--discard-ratio", type=float, default=None, help="in [0, 1); default per method")
    parser.add_argument("--category_index", "--category-index", type=int, default=None, help="class index to explain")
    parser.add_argument("--target", default=None, help="class label name to explain")
    parser.add_argument("--top_k", "--top-k", type=int, default=None, help="explain each of the k most probable classes")
    parser.add_argument("--text", default=None, help="image-text models (CLIP): explain the similarity with this text")
    parser.add_argument("--layer", type=int, default=None, help="method 'attention': which layer (default -1, the last)")
    parser.add_argument("--head", type=int, default=None, help="method 'attention': which head (default: heads fused)")
    parser.add_argument("--start_layer", "--start-layer", type=int, default=None, help="product methods: first layer multiplied in")
    parser.add_argument("--full_resolution", "--full-resolution", action="store_true", help="heat-maps at the image's own size")
    parser.add_argument("--out", type=Path, default=Path("."), help="output directory for overlay PNGs")
    parser.add_argument("--colormap", default="jet", help="matplotlib colormap name")
    parser.add_argument("--batch_size", "--batch-size", type=int, default=16)
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps, ... (default: cpu)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _demo_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="hf-vit-rollout demo",
        description="Explain the shipped example images with every method on the shipped demo model (offline).",
    )
    parser.add_argument("--out", type=Path, default=Path("demo_out"))
    parser.add_argument("--colormap", default="jet")
    return parser


def _fail(message: str) -> int:
    line = " ".join(str(message).split())  # one line, whatever the exception said
    print(f"hf-vit-rollout: error: {line}", file=sys.stderr)
    return EXIT_BAD_INPUT


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
    """``<stem>_<method>_<fusion>_<discard>[_layer<l>][_head<h>][_from<s>][_<target>].png``: every
    setting that changes the map is in the name, so two runs with different settings never collide."""
    params = explanation.params
    parts = [stem, explanation.method, fusion, f"{params['discard_ratio']:g}"]
    if "layer" in params:
        parts.append(f"layer{params['layer']}")
    if params.get("head") is not None:
        parts.append(f"head{params['head']}")
    if params.get("start_layer"):
        parts.append(f"from{params['start_layer']}")
    if explanation.target is not None:
        parts.append(str(explanation.target))
    return "_".join(parts) + ".png"


def run_explain(argv: list[str]) -> int:
    args = _explain_parser().parse_args(argv)
    from .explainer import RolloutExplainer
    from .images import image_sources
    from .request import check_device

    paths = [*args.images, *args.image_path]
    if not paths:
        return _fail("no images given; pass image files (or run 'hf-vit-rollout demo')")
    if args.category_index is not None and args.target is not None:
        return _fail("give either --category_index or --target, not both")
    target = args.category_index if args.category_index is not None else args.target
    wants_class = target is not None or args.top_k is not None or args.text is not None
    method = args.method or ("grad_rollout" if wants_class else "rollout")
    try:
        check_device(args.device)
        out = prepare_out_dir(args.out)
        image_sources(paths)  # every path checked before the model loads
        explainer = RolloutExplainer.from_pretrained(
            args.model, method=method, head_fusion=args.head_fusion, discard_ratio=args.discard_ratio,
            device=args.device, batch_size=args.batch_size,
        )
        request = explainer.request(
            target=target, top_k=args.top_k, text=args.text, progress=not args.quiet, full_resolution=args.full_resolution,
            layer=args.layer, head=args.head, start_layer=args.start_layer,
        )
        stems = unique_stems(paths)
        for path, stem, result in zip(paths, stems, explainer.explain_iter(paths, request)):
            for explanation in result if isinstance(result, list) else [result]:
                file = out / _output_name(stem, explanation, args.head_fusion)
                explanation.overlay(args.colormap).save(file)
                print(f"{path}: {explanation.title} -> {file}")
    except _EXPECTED as exc:
        return _fail(str(exc))
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


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass
    if argv[:1] == ["demo"]:
        return run_demo(argv[1:])
    if argv[:1] == ["evaluate"]:
        from .evaluation.cli import main as evaluate_main

        return evaluate_main(argv[1:])
    if argv[:1] == ["app"]:
        from .app import main as app_main

        return app_main(argv[1:])
    return run_explain(argv)


if __name__ == "__main__":
    sys.exit(main())
