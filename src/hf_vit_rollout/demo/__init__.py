"""The shipped demo: a small trained ViT (``checkpoint/``), example images (``images/``), the
synthetic data they come from (:mod:`.data`) and the demo figure (:mod:`.figure`)."""

from pathlib import Path

IMAGES_DIR = Path(__file__).resolve().parent / "images"


def example_images() -> list[Path]:
    """The shipped example images (one- and two-object scenes), sorted by name."""
    return sorted(IMAGES_DIR.glob("*.png"))
