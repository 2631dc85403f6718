"""The demo figure: every method on the shipped example images, one row per image."""

from __future__ import annotations

import logging
from pathlib import Path

from . import example_images

logger = logging.getLogger(__name__)


def _columns(explainer, path) -> list:
    """Explanations for one image: rollout, then grad_rollout and gae for each detected class, flow."""
    rollout = explainer(path, method="rollout")
    detected = _detected_classes(explainer, path)
    row = [rollout]
    for method in ("grad_rollout", "gae"):
        row.extend(explainer(path, target=t, method=method) for t in detected)
    row.append(explainer(path, method="flow"))
    return row


def _detected_classes(explainer, path) -> list[int]:
    """Classes the demo model detects (probability above ``PRESENT_THRESHOLD``), at least its top one."""
    import torch

    from . import PRESENT_THRESHOLD

    probs = explainer.predict(path)[0]
    detected = [int(i) for i in torch.argsort(probs, descending=True) if probs[i] > PRESENT_THRESHOLD][:2]
    return detected or [int(probs.argmax())]


def write_demo(out_dir: str | Path, colormap: str = "jet", model: str = "demo") -> list[Path]:
    """Explain each example image with every method; write overlays and one comparison figure.

    Returns:
        Paths written: ``demo_methods.png`` (the figure) and one overlay PNG per explanation.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..explainer import RolloutExplainer

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    explainer = RolloutExplainer.from_pretrained(model)
    images = example_images()
    if not images:
        raise ValueError("no example images are shipped in hf_vit_rollout/demo/images")
    rows = [_columns(explainer, p) for p in images]
    width = max(len(r) for r in rows) + 1
    fig, axes = plt.subplots(len(rows), width, figsize=(2.1 * width, 2.3 * len(rows)), squeeze=False)
    written = []
    for path, row, ax_row in zip(images, rows, axes):
        ax_row[0].imshow(row[0].image)
        ax_row[0].set_title(" + ".join(path.stem.split("_")[1:]), fontsize=8)
        for ax, explanation in zip(ax_row[1:], row):
            ax.imshow(explanation.overlay(colormap))
            ax.set_title(explanation.title, fontsize=7)
            suffix = f"_{explanation.label}" if explanation.target is not None else ""
            file = out / f"{path.stem}_{explanation.method}{suffix}.png"
            explanation.overlay(colormap).resize((256, 256)).save(file)
            written.append(file)
        for ax in ax_row:
            ax.axis("off")
    figure = out / "demo_methods.png"
    fig.tight_layout()
    fig.savefig(figure, dpi=110)
    plt.close(fig)
    logger.info("wrote %d files to %s", len(written) + 1, out)
    return [figure, *written]
