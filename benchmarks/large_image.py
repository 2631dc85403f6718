"""Peak memory of explaining very large images, and of the CLI over many photos.

    python benchmarks/large_image.py                 # 64-MP PNG: explain + overlay, bounded and full resolution
    python benchmarks/large_image.py --cli 1 8       # the CLI on 1 and on 8 9-MP JPEGs: peak must not grow

Each measurement runs in a fresh process (``ru_maxrss`` is a high-water mark) and prints the
process's peak resident memory and the part above the loaded model (the baseline, measured after
loading the demo model and explaining one small image).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

CHILD = r"""
import json, resource, sys, time
from hf_vit_rollout import RolloutExplainer
path, full = sys.argv[1], sys.argv[2] == "full"
def peak(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
from PIL import Image
explainer = RolloutExplainer.from_pretrained("demo")
explainer(Image.new("RGB", (64, 64), (10, 20, 30))).overlay()
base = peak()
began = time.perf_counter()
explanation = explainer(path, method="gae", full_resolution=full)
overlay = explanation.overlay()
seconds = time.perf_counter() - began
print(json.dumps({"base": base, "peak": peak(), "heatmap": list(explanation.heatmap.shape), "overlay": list(overlay.size), "seconds": seconds}))
"""

CLI_CHILD = r"""
import json, resource, sys
from hf_vit_rollout.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def pattern(width: int, height: int) -> Image.Image:
    """A smooth colour pattern (compresses well, so the file is small but decodes to full size)."""
    x = np.linspace(0, 255, width, dtype=np.float32)
    rows = []
    for top in range(0, height, 1000):
        y = np.linspace(top, min(top + 1000, height) - 1, min(1000, height - top), dtype=np.float32)[:, None] * 255 / height
        band = np.stack([np.broadcast_to(x, (len(y), width)), np.broadcast_to(y, (len(y), width)), (x + y) % 256], -1)
        rows.append(band.astype(np.uint8))
    return Image.fromarray(np.concatenate(rows))


def measure(path: Path, mode: str) -> dict:
    result = subprocess.run([sys.executable, "-c", CHILD, str(path), mode], capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def large(args) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "large.png"
        pattern(args.width, args.height).save(path)
        megapixels = args.width * args.height / 1e6
        print(f"{args.width}×{args.height} PNG ({megapixels:.0f} MP, {path.stat().st_size / 2**20:.1f} MiB file), demo model, gae")
        for mode in ("bounded", "full"):
            row = measure(path, mode)
            print(
                f"{mode:8s} heat-map {row['heatmap'][1]}×{row['heatmap'][0]}: peak RSS {row['peak']:.0f} MiB "
                f"({row['peak'] / 1024:.2f} GiB), {row['peak'] - row['base']:.0f} MiB above the loaded model "
                f"({row['base']:.0f} MiB), {row['seconds']:.1f} s"
            )


def cli(args) -> None:
    with tempfile.TemporaryDirectory() as folder:
        most = max(args.cli)
        paths = []
        for i in range(most):
            path = Path(folder) / f"photo{i}.jpg"
            pattern(4000, 2250).rotate(i).save(path, quality=90)
            paths.append(str(path))
        print("CLI on 4000×2250 JPEGs (9 MP), demo model, rollout, each run in a fresh process")
        for count in args.cli:
            out = Path(folder) / f"out{count}"
            command = [sys.executable, "-c", CLI_CHILD, *paths[:count], "--out", str(out), "--quiet", "--batch_size", "1"]
            result = subprocess.run(command, check=True, capture_output=True, text=True)
            row = json.loads(result.stdout.strip().splitlines()[-1])
            print(f"{count:3d} images: exit {row['code']}, peak RSS {row['peak']:.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=8000)
    parser.add_argument("--height", type=int, default=8000)
    parser.add_argument("--cli", type=int, nargs="*", default=None, help="image counts for the CLI runs")
    args = parser.parse_args()
    if args.cli:
        cli(args)
    else:
        large(args)


if __name__ == "__main__":
    main()
