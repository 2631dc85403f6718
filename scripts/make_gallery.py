"""Regenerate the docs' pictures: the gallery page and its figures, the demo figure, the plot example.

    python scripts/make_gallery.py            # writes docs/gallery.md, docs/gallery/*.png, docs/demo_methods.png

Every registered method (``hf_vit_rollout.METHODS``) gets a section and a figure: the shipped demo
model on the shipped example images, class-specific methods once per object the model detects,
with a colour bar. Run it again after a method is added; ``tests/test_docs.py`` checks that the
page shows every registered method.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

INTRO = """# Gallery

Every registered method on the example images shipped with the package, explained with the
shipped demo model (a 4-layer ViT trained on synthetic shapes, 64 × 64 px input, an 8 × 8 patch
grid). Class-specific methods are shown once per object the model detects, class-agnostic ones once
per image. Every map is scaled so that its maximum is 1; the colour bar reads as relevance relative
to that maximum. Which method to use when: [getting started](getting-started.md#which-method).

This page and its figures are written by `python scripts/make_gallery.py` from the method registry
(`hf_vit_rollout.METHODS`), so a newly registered method appears here when the script is run again.
"""


def _panels(results: dict, name: str, titles: list[str]):
    """(title, explanation or message) for every map of method ``name`` over the images."""
    for title, row in zip(titles, results):
        for explanation in row[name]:
            if isinstance(explanation, str):
                yield title, explanation
            else:
                detail = f"{explanation.label} {explanation.score:.2f}" if explanation.target is not None else "class-agnostic"
                yield f"{title}\n{detail}", explanation


def method_figure(results, name: str, titles: list[str], colormap: str = "jet"):
    """One method's maps side by side, with a shared colour bar (a matplotlib ``Figure``)."""
    import textwrap

    import matplotlib.pyplot as plt
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    panels = list(_panels(results, name, titles))
    fig, axes = plt.subplots(1, len(panels), figsize=(1.7 * len(panels) + 1.0, 2.2), squeeze=False)
    for ax, (title, explanation) in zip(axes[0], panels):
        ax.axis("off")
        if isinstance(explanation, str):
            ax.text(0.5, 0.5, textwrap.fill(explanation, 24), ha="center", va="center", fontsize=6)
            continue
        ax.imshow(explanation.overlay(colormap))
        ax.set_title(title, fontsize=7)
    fig.tight_layout(rect=(0, 0, 1 - 0.9 / fig.get_figwidth(), 1))
    bar_axes = fig.add_axes((1 - 0.75 / fig.get_figwidth(), 0.12, 0.14 / fig.get_figwidth(), 0.72))
    bar = fig.colorbar(ScalarMappable(Normalize(0, 1), colormaps[colormap]), cax=bar_axes)
    bar.ax.tick_params(labelsize=6)
    return fig


def first_layer_cut(explainer, images) -> list[tuple[str, float]]:
    """For each image, the share of patches whose exact flow equals ``min(1, column sum)`` of the
    first layer's residual-adjusted, head-fused attention (the capacity leaving the patch in the
    first layer): where the flow map is decided by how much the first layer reads from a patch."""
    import numpy as np
    import torch

    from hf_vit_rollout import AttentionCapture
    from hf_vit_rollout.methods import rollout_layer

    shares = []
    for path in images:
        flow = explainer(path, method="flow")
        pixel_values = explainer.image_processor(images=flow.image, return_tensors="pt")["pixel_values"]
        maps: dict[int, torch.Tensor] = {}
        with AttentionCapture(explainer.model, lambda index, attention: maps.setdefault(index, attention.detach())), torch.no_grad():
            explainer.model(pixel_values=pixel_values)
        first = rollout_layer(maps[0], "mean", 0.0, 0)[0]  # (N, N), rows sum to 1
        bound = first.sum(0).clamp(max=1.0).numpy()
        flows = flow.token_relevance
        shares.append((path.stem, float(np.mean(np.abs(flows[1:] - bound[1:]) <= 1e-4))))
    return shares


def flow_note(shares) -> str:
    low, high = min(s for _, s in shares), max(s for _, s in shares)
    return (
        "**Why exact flow lights the background here.** A patch's flow is the most relevance it can push "
        "to the class token on its own, and it can never exceed what leaves it in the first layer: "
        "`min(1, column sum of the first layer's attention)`, how much the first layer's tokens read from "
        "it. This model has only four layers, so later layers always have room to carry that much, and "
        f"the cap decides the map: on the example images {100 * low:.0f}-{100 * high:.0f}% of the patches "
        "reach it exactly (computed by `scripts/make_gallery.py`). Background patches are read by many "
        "similar background patches and reach the cap of 1; an object's patches are read mostly by the "
        "object's few other patches, so they stay lower. Flow measures how well a patch is connected; for "
        "where the evidence for a class lies use a class-specific method, and for a class-agnostic map rollout "
        "with its default discarding."
    )


def section(name: str, spec, image: str, note: str | None) -> str:
    kind = "class-specific (explains a class)" if spec.needs_gradient else "class-agnostic (one map per image)"
    lines = [
        f"## `{name}`",
        "",
        f"{spec.summary[:1].upper() + spec.summary[1:]}. {kind[0].upper() + kind[1:]}; "
        f"default `discard_ratio={spec.default_discard_ratio:g}`.",
        "",
        f"![{name} on the example images](gallery/{image})",
        "",
    ]
    if note:
        lines += [note, ""]
    return "\n".join(lines)


def plot_example(explainer, image, out: Path) -> None:
    """``Explanation.plot()`` for getting-started.md: image, heat-map with colour bar, overlay."""
    import matplotlib.pyplot as plt

    fig = explainer(image, method="gae", target="crescent").plot()
    fig.savefig(out, dpi=90)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=Path, default=DOCS, help="docs folder to write into")
    parser.add_argument("--colormap", default="jet")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hf_vit_rollout import METHODS, RolloutExplainer
    from hf_vit_rollout.demo import example_images
    from hf_vit_rollout.demo.figure import detected_classes, draw_figure, explain_every_method
    from hf_vit_rollout.images import load_image

    explainer = RolloutExplainer.from_pretrained("demo")
    paths = example_images()
    pictures = [load_image(p) for p in paths]
    titles = [" + ".join(p.stem.split("_")[1:]) for p in paths]
    results = explain_every_method(explainer, pictures, [detected_classes(explainer, p) for p in pictures])
    folder = args.docs / "gallery"
    folder.mkdir(parents=True, exist_ok=True)
    shares = first_layer_cut(explainer, paths) if "flow" in METHODS else []
    sections = []
    for name, spec in METHODS.items():
        fig = method_figure(results, name, titles, args.colormap)
        fig.savefig(folder / f"{name}.png", dpi=100)
        plt.close(fig)
        sections.append(section(name, spec, f"{name}.png", flow_note(shares) if name == "flow" and shares else None))
        print(folder / f"{name}.png")
    page = args.docs / "gallery.md"
    page.write_text(INTRO + "\n" + "\n".join(sections))
    print(page)
    fig = draw_figure(list(zip(titles, pictures, results)), list(METHODS), args.colormap)
    fig.savefig(args.docs / "demo_methods.png", dpi=110)
    plt.close(fig)
    print(args.docs / "demo_methods.png")
    plot_example(explainer, paths[2], folder / "plot.png")
    print(folder / "plot.png")
    for stem, share in shares:
        print(f"flow: {stem}: {100 * share:.0f}% of patches at the first layer's cap")


if __name__ == "__main__":
    main()
