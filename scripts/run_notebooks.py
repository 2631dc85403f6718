"""Execute notebooks and store them with their outputs (the repository keeps them that way).

    python scripts/run_notebooks.py                      # every notebooks/*.ipynb
    python scripts/run_notebooks.py notebooks/quickstart.ipynb

Each notebook runs in its own folder with the ``python3`` kernel, as ``nbmake`` runs it in the test
suite; a failing cell stops with its error and leaves the file unchanged.
"""

from __future__ import annotations

import argparse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(path: Path, timeout: int = 600) -> None:
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    for cell in notebook.cells:  # no machine-specific noise in the stored file
        cell.get("metadata", {}).pop("execution", None)
    nbformat.write(notebook, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, default=sorted((ROOT / "notebooks").glob("*.ipynb")))
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell")
    args = parser.parse_args()
    for path in args.notebooks:
        run(path, args.timeout)
        print(path)


if __name__ == "__main__":
    main()
