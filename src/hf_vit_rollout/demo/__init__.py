"""The shipped demo: a small trained ViT (``checkpoint/``), example images (``images/``), the
synthetic data they come from (:mod:`.data`) and the demo figure (:mod:`.figure`)."""

from pathlib import Path

IMAGES_DIR = Path(__file__).resolve().parent / "images"

#: The demo model reports a class as present when its softmax probability exceeds this
#: (it is trained on soft targets: one object gives ~1, two objects ~0.5 each).
PRESENT_THRESHOLD = 0.25


def example_images() -> list[Path]:
    """The shipped example images (one- and two-object scenes), sorted by name."""
    return sorted(IMAGES_DIR.glob("*.png"))
