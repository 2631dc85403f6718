"""Assemble a Hugging Face Space folder that runs the app as is.

    python scripts/make_space.py OUT

writes into OUT: ``README.md`` (the Space card: ``sdk: gradio``, ``app_file: app.py``), ``app.py``,
``requirements.txt`` (from ``space/``) and the package ``hf_vit_rollout/`` (from ``src/``, with the
shipped demo model and images), so the Space imports the package next to ``app.py`` without
installing it. Push OUT to a Space repository (for example ``hf upload spaces/USER/NAME OUT``).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPACE = ROOT / "space"
PACKAGE = ROOT / "src" / "hf_vit_rollout"


def make_space(out: Path) -> list[Path]:
    """Write the Space into ``out`` (made if missing; files of the same names are replaced).

    Returns:
        The paths written at the top of ``out``.
    """
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in ("README.md", "app.py", "requirements.txt"):
        written.append(Path(shutil.copyfile(SPACE / name, out / name)))
    target = out / "hf_vit_rollout"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(PACKAGE, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.nbi", "*.nbc"))
    written.append(target)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="folder to write the Space into")
    for path in make_space(parser.parse_args().out):
        print(path)


if __name__ == "__main__":
    main()
