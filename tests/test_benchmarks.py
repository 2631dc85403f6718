"""The benchmark scripts run and print every row (their figures go in the README, so they must not rot)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SPEED_ROWS = [
    "forward (eager)",
    "forward (sdpa)",
    "forward+backward (eager)",
    "ours: rollout",
    "ours: rollout (discard 0)",
    "ours: rollout, product",
    "ours: grad_rollout",
    "ours: gae",
    "ours: flow",
    "ours: attention",
    "ours: transformer_attribution",
    "ours: attnlrp",
    "ours: cp_lrp",
    "ours: libragrad",
    "ours: legrad",
    "original: rollout",
    "original: grad_rollout",
]


def run_speed(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(ROOT / "benchmarks" / "speed.py"), "--batches", "1", "--rounds", "1", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, check=True)


def test_speed_prints_every_row_with_its_ratio_and_peak():
    result = run_speed()
    assert "malloc thresholds fixed" in result.stdout
    if sys.platform.startswith("linux"):
        assert "not glibc" not in result.stderr
    for row in SPEED_ROWS:
        line = next((s for s in result.stdout.splitlines() if s[:7] == "    1  " and s[7:39].rstrip() == row), None)
        assert line is not None, f"row {row!r} missing:\n{result.stdout}"
        numbers = [float(x) for x in re.findall(r"\d+(?:\.\d+)?", line[7 + 32 :])]  # after "batch  name"
        floor_row = row in ("forward (eager)", "forward+backward (eager)")
        versus = row in ("ours: rollout", "ours: grad_rollout")
        assert len(numbers) == 2 + (not floor_row) + versus, line  # img/s, [× floor], [vs original], peak MiB
        assert all(n >= 0 for n in numbers) and numbers[0] > 0  # images/second


def test_breakdown_times_rollout_layer_inside_calls():
    result = run_speed("--breakdown", "--malloc", "default")
    line = result.stdout.strip()
    assert line.startswith("batch 1: forward") and "of which rollout_layer" in line
    assert "malloc" not in result.stderr
