"""The demo figure: every registered method on the shipped example images, one row per image."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from . import example_images

logger = logging.getLogger(__name__)


def method_names() -> list[str]:
    """Every registered method, in registry order (:data:`hf_vit_rollout.METHODS`)."""
    from ..methods import METHODS

    return list(METHODS)


def detected_classes(explainer, image, limit: int = 2) -> list[int]:
    """Classes the demo model detects in ``image`` (probability above
    :data:`~hf_vit_rollout.demo.PRESENT_THRESHOLD`), most probable first; at least its top one."""
    import torch

    from . import PRESENT_THRESHOLD

    probs = explainer.predict(image)[0]
    detected = [int(i) for i in torch.argsort(probs, descending=True) if probs[i] > PRESENT_THRESHOLD][:limit]
    return detected or [int(probs.argmax())]


def explain_every_method(explainer, images: list, targets: list[list[int]]) -> list[dict[str, list]]:
    """For each image, ``{method: [explanation, ...]}`` over every registered method: one
    explanation for a class-agnostic method, one per class in that image's ``targets`` for a
    class-specific one. Each method explains all images in one batched call per target rank.

    A method this model cannot run gives ``[message]`` (a ``str``) instead, so a figure still
    shows every method and says why one is missing.
    """
    from ..errors import InputError, TargetError, UnsupportedModelError
    from ..methods import METHODS

    results: list[dict[str, list]] = [{} for _ in images]
    for name, spec in METHODS.items():
        try:
            if not spec.needs_gradient:
                for row, explanation in zip(results, explainer(list(images), method=name)):
                    row[name] = [explanation]
                continue
            for row in results:
                row[name] = []
            for rank in range(max(len(t) for t in targets)):
                chosen = [i for i, t in enumerate(targets) if len(t) > rank]
                batch = explainer([images[i] for i in chosen], target=[targets[i][rank] for i in chosen], method=name)
                for i, explanation in zip(chosen, batch):
                    results[i][name].append(explanation)
        except (UnsupportedModelError, TargetError, InputError, ValueError) as exc:
            logger.warning("method %s: %s", name, exc)
            for row in results:
                row[name] = [f"{name}: {exc}"]
    return results


def draw_figure(rows, names: list[str], colormap: str = "jet"):
    """The comparison figure: one row per image (input, then one panel per method), a shared colour bar.

    Args:
        rows: ``[(title, image, {method: [explanation or message, ...]})]``; each method's first
            entry is drawn (class-specific methods: the first target's map).
        names: method names, one column each.

    Returns:
        The matplotlib ``Figure``.
    """
    import textwrap

    import matplotlib.pyplot as plt
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    width = len(names) + 1
    fig, axes = plt.subplots(len(rows), width, figsize=(1.55 * width + 1.0, 1.75 * len(rows) + 0.4), squeeze=False)
    for (title, image, results), ax_row in zip(rows, axes):
        ax_row[0].imshow(image)
        ax_row[0].set_title(title, fontsize=8)
        for ax, name in zip(ax_row[1:], names):
            first = results[name][0]
            if isinstance(first, str):
                ax.text(0.5, 0.5, textwrap.fill(first, 22), ha="center", va="center", fontsize=5, wrap=True)
                ax.set_title(name, fontsize=7)
            else:
                ax.imshow(first.overlay(colormap))
                detail = f"{first.label} {first.score:.2f}" if first.target is not None else "class-agnostic"
                ax.set_title(f"{name}\n{detail}", fontsize=7)
        for ax in ax_row:
            ax.axis("off")
    fig.tight_layout(rect=(0, 0, 1 - 1.0 / fig.get_figwidth(), 1))
    bar_axes = fig.add_axes((1 - 0.85 / fig.get_figwidth(), 0.12, 0.16 / fig.get_figwidth(), 0.76))
    bar = fig.colorbar(ScalarMappable(Normalize(0, 1), colormaps[colormap]), cax=bar_axes)
    bar.set_label("relevance (map maximum = 1)", fontsize=8)
    bar.ax.tick_params(labelsize=7)
    return fig


def write_demo(out_dir: str | Path, colormap: str = "jet", model: str = "demo") -> list[Path]:
    """Explain each example image with every registered method; write overlays and one figure.

    Class-specific methods explain each class the demo model detects (up to two per image); the
    figure shows the most probable one.

    Returns:
        Paths written: ``demo_methods.png`` (the figure), one overlay PNG per explanation
        (``<image>_<method>[_<label>].png``), and the input images (``inputs/``), in that order.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..explainer import RolloutExplainer
    from ..images import load_image

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    explainer = RolloutExplainer.from_pretrained(model)
    images = example_images()
    if not images:
        raise ValueError("no example images are shipped in hf_vit_rollout/demo/images")
    names = method_names()
    pictures = [load_image(path) for path in images]
    every = explain_every_method(explainer, pictures, [detected_classes(explainer, p) for p in pictures])
    rows, written = [], []
    for path, picture, results in zip(images, pictures, every):
        rows.append((" + ".join(path.stem.split("_")[1:]), picture, results))
        for name, explanations in results.items():
            for explanation in explanations:
                if isinstance(explanation, str):
                    continue
                suffix = f"_{explanation.label}" if explanation.target is not None else ""
                file = out / f"{path.stem}_{name}{suffix}.png"
                explanation.overlay(colormap).resize((256, 256)).save(file)
                written.append(file)
    fig = draw_figure(rows, names, colormap)
    figure = out / "demo_methods.png"
    fig.savefig(figure, dpi=110)
    plt.close(fig)
    inputs = out / "inputs"
    inputs.mkdir(exist_ok=True)
    copies = [Path(shutil.copyfile(p, inputs / p.name)) for p in images]
    logger.info("wrote %d files to %s", len(written) + len(copies) + 1, out)
    return [figure, *written, *copies]
