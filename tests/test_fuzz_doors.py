"""Hypothesis through every front door (explainer, pipeline, command, app, evaluate, explain_dataset):
request settings and image inputs an adversarial user might pass end in a valid map that equals the
explainer's, or in the package's own error; never a raw error or another map. A few examples per door
here; ``python benchmarks/fuzz_doors.py --examples 300`` runs the long version (docs/reliability.md)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

pytest.importorskip("hypothesis")
pytest.importorskip("datasets")

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("fuzz_doors", ROOT / "benchmarks" / "fuzz_doors.py")
fuzz_doors = importlib.util.module_from_spec(_spec)
sys.modules["fuzz_doors"] = fuzz_doors  # its dataclasses look their module up
_spec.loader.exec_module(fuzz_doors)

EXAMPLES = {"explainer": 25, "pipeline": 20, "cli": 40, "app": 20, "evaluate": 20, "explain_dataset": 20}


@pytest.fixture(scope="module")
def doors(tmp_path_factory):
    return fuzz_doors.Doors(tmp_path_factory.mktemp("fuzz"))


@pytest.mark.parametrize("door", fuzz_doors.DOORS)
def test_every_input_gets_a_right_map_or_a_clear_error(doors, door):
    if door == "app":
        pytest.importorskip("gradio")
    tally = fuzz_doors.Tally()
    fuzz_doors.fuzz(doors, door, EXAMPLES[door], tally, random_seed=20)
    assert tally.failures == []
    assert tally.counts[(door, "ok")] > 0 and tally.counts[(door, "refused")] > 0  # both kinds were reached


def test_the_judge_tells_a_raw_error_from_the_packages_own():
    import numpy as np

    from hf_vit_rollout import InputError
    from hf_vit_rollout.images import load_image

    with pytest.raises(InputError) as ours:
        load_image(np.zeros((4, 4, 3), bool))
    assert fuzz_doors.classify_error(ours.value) is None
    with pytest.raises(RuntimeError) as raw:
        __import__("torch").stack([__import__("torch").zeros(2), __import__("torch").zeros(3)])
    assert "raw RuntimeError" in fuzz_doors.classify_error(raw.value)
