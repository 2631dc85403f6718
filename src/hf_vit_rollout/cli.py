"""The ``hf-vit-rollout`` command.

Explain images (the original tool's flags are kept)::

    hf-vit-rollout cat.jpg dog.png --model facebook/deit-tiny-patch16-224 --out maps/
    hf-vit-rollout --image_path cat.jpg --head_fusion max --discard_ratio 0.8
    hf-vit-rollout --image_path cat.jpg --category_index 243      # gradient rollout, as before

Run the offline demo on the shipped model and example images, or the Gradio app::

    hf-vit-rollout demo --out demo_out
    hf-vit-rollout app --model demo
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from .capture import CaptureError
from .errors import InputError, TargetError, UnsupportedModelError
from .methods import HEAD_FUSIONS, METHODS

EXIT_BAD_INPUT = 2


def _explain_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
    parser.add_argument("--out", type=Path, default=Path("."), help="output directory for overlay PNGs")
    parser.add_argument("--colormap", default="jet", help="matplotlib colormap name")
    parser.add_argument("--batch_size", "--batch-size", type=int, default=16)
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: cpu)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _demo_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hf-vit-rollout demo",
        description="Explain the shipped example images with every method on the shipped demo model (offline).",
    )
    parser.add_argument("--out", type=Path, default=Path("demo_out"))
    parser.add_argument("--colormap", default="jet")
    return parser


def _fail(message: str) -> int:
    print(f"hf-vit-rollout: error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def run_explain(argv: list[str]) -> int:
    args = _explain_parser().parse_args(argv)
    from .explainer import RolloutExplainer

    paths = [*args.images, *args.image_path]
    if not paths:
        return _fail("no images given; pass image files (or run 'hf-vit-rollout demo')")
    if args.category_index is not None and args.target is not None:
        return _fail("give either --category_index or --target, not both")
    target = args.category_index if args.category_index is not None else args.target
    method = args.method or ("grad_rollout" if target is not None else "rollout")
    try:
        explainer = RolloutExplainer.from_pretrained(
            args.model,
            method=method,
            head_fusion=args.head_fusion,
            discard_ratio=args.discard_ratio,
            device=args.device,
            batch_size=args.batch_size,
        )
        explanations = explainer(paths, target=target, progress=not args.quiet)
        args.out.mkdir(parents=True, exist_ok=True)
        for path, explanation in zip(paths, explanations):
            suffix = f"_{explanation.target}" if explanation.target is not None else ""
            name = f"{Path(path).stem}_{explanation.method}_{args.head_fusion}_{explanation.params['discard_ratio']:g}{suffix}.png"
            explanation.overlay(args.colormap).save(args.out / name)
            print(f"{path}: {explanation.title} -> {args.out / name}")
    except (InputError, TargetError, UnsupportedModelError, CaptureError, FileNotFoundError, ValueError, OSError) as exc:
        return _fail(str(exc))
    return 0


def run_demo(argv: list[str]) -> int:
    args = _demo_parser().parse_args(argv)
    from .demo.figure import write_demo

    try:
        written = write_demo(args.out, colormap=args.colormap)
    except ValueError as exc:
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
