"""``hf-vit-rollout evaluate``: score methods on a folder of images, write a table, plots and JSON.

    hf-vit-rollout evaluate --model demo --images photos/ --masks masks/ --methods rollout gae --out report/

Masks pair to images by file stem (``photos/cat.jpg`` ↔ ``masks/cat.png``); pixels brighter than 127
are the object; every image needs a mask of its own size.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from ..methods import METHODS
from .scores import METRICS, ROAD, Deletion, Insertion

EXIT_BAD_INPUT = 2


class _Parser(argparse.ArgumentParser):
    """Usage errors in the command's one-line format (exit code 2), without the usage block."""

    def error(self, message: str):
        print(f"hf-vit-rollout: error: {message} (see 'hf-vit-rollout evaluate --help')", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="hf-vit-rollout evaluate",
        description="Score explanation methods on your model and images (faithfulness, localization, sanity).",
        epilog="Masks pair to images by file stem (cat.jpg <-> cat.png); pixels > 127 are the object.",
    )
    parser.add_argument("--model", default="demo", help="Hub id, local checkpoint directory, or 'demo' (default)")
    parser.add_argument("--images", type=Path, required=True, help="folder of images")
    parser.add_argument("--masks", type=Path, default=None, help="folder of object masks, one per image (same stem)")
    parser.add_argument(
        "--methods", nargs="+", default=["rollout", "gae"],
        help=f"methods: {', '.join(METHODS)}, or random (a seeded random map, the reference to beat); "
        "settings as method:fusion:discard (rollout:max:0.9)",
    )
    parser.add_argument("--metrics", nargs="+", default=None, choices=list(METRICS), help="default: by what the inputs allow")
    parser.add_argument("--target", default=None, help="class (index or label) to explain in every image; default: the prediction")
    parser.add_argument("--baseline", choices=("grey", "mean", "blur"), default="grey", help="deletion/insertion baseline")
    parser.add_argument("--steps", type=int, default=16, help="deletion/insertion steps (1-1024; one forward pass per image each)")
    parser.add_argument("--out", type=Path, default=Path("report"), help="output folder (report.md, report.json, report.png)")
    parser.add_argument("--batch-size", "--batch_size", type=int, default=64)
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: cpu)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _fail(message: str, model: str | None = None) -> int:
    from ..cli import shell_terms  # the library's Python keywords in the command's terms (--masks, ...)

    print(f"hf-vit-rollout: error: {shell_terms(message, model)}", file=sys.stderr)
    return EXIT_BAD_INPUT


def _method(text: str):
    """``"rollout"`` or ``"rollout:max:0.9"`` → a method entry for ``evaluate``."""
    parts = text.split(":")
    if len(parts) > 3 or not parts[0]:
        raise ValueError(f"bad method {text!r}: write method or method:fusion:discard, e.g. rollout:max:0.9")
    fusion = parts[1] if len(parts) > 1 and parts[1] else None
    try:
        ratio = float(parts[2]) if len(parts) > 2 and parts[2] else None
    except ValueError:
        raise ValueError(f"bad discard ratio in {text!r}: expected a number in [0, 1)") from None
    return (parts[0], fusion, ratio)


def _metrics(names, steps: int, baseline: str):
    chosen = {"deletion": lambda: Deletion(steps, baseline), "insertion": lambda: Insertion(steps, baseline)}
    chosen.update({"road_morf": lambda: ROAD(True), "road_lerf": lambda: ROAD(False)})
    return [chosen[n]() if n in chosen else n for n in dict.fromkeys(names)]


def _check_out(folder: Path) -> None:
    """Create ``folder`` and check it is writable, before any work."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise OSError(f"cannot write to the output folder {str(folder)!r}: {exc.strerror or exc}") from None


def _target(text: str | None):
    return int(text) if text is not None and text.lstrip("-").isdigit() else text


def main(argv: list[str]) -> int:
    """Run ``hf-vit-rollout evaluate``; returns the exit code (2 on bad input, with a one-line message)."""
    args = _parser().parse_args(argv)
    from ..capture import CaptureError
    from ..errors import InputError, TargetError, UnsupportedModelError
    from ..explainer import RolloutExplainer
    from ..metrics import MAX_STEPS
    from .engine import default_metrics, evaluate

    try:
        if not args.images.is_dir():
            raise ValueError(f"--images {str(args.images)!r} is not a folder")
        if args.masks is not None and not args.masks.is_dir():
            raise ValueError(f"--masks {str(args.masks)!r} is not a folder")
        if args.batch_size < 1:
            raise ValueError("--batch-size must be a positive integer")
        if not 1 <= args.steps <= MAX_STEPS:
            raise ValueError(f"--steps must be from 1 to {MAX_STEPS} (each step is one forward pass per image), got {args.steps}")
        _check_out(args.out)
        methods = [_method(m) for m in args.methods]
        names = args.metrics or default_metrics(has_masks=args.masks is not None, has_several_objects=False)
        metrics = _metrics(names, args.steps, args.baseline)
        explainer = RolloutExplainer.from_pretrained(args.model, device=args.device, batch_size=args.batch_size)
        report = evaluate(
            explainer,
            args.images,
            targets=_target(args.target),
            masks=args.masks,
            methods=methods,
            metrics=metrics,
            batch_size=args.batch_size,
            progress=not args.quiet,
        )
        written = report.save(args.out)
    except (InputError, TargetError, UnsupportedModelError, CaptureError, ValueError, OSError) as exc:
        return _fail(str(exc), args.model)
    print(report.table())
    for path in written:
        print(path)
    return 0
