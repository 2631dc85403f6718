"""What a user is told without configuring logging: ``ExplanationWarning`` (a ``warnings.warn``) for what
changes a result; the ``hf_vit_rollout`` logger for the rest (costs, fallbacks)."""

from __future__ import annotations

import ast
import logging
import warnings
from pathlib import Path

import numpy as np
import pytest

import hf_vit_rollout
from hf_vit_rollout import ExplanationWarning, RolloutExplainer

SOURCE = Path(hf_vit_rollout.__file__).parent
IMAGE = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def explainer(checkpoint):
    return RolloutExplainer.from_pretrained(checkpoint("vit"))


def test_an_all_zero_mask_is_a_warning_a_user_sees(explainer):
    """A score that does not depend on the patches (zero gradient) gives an all-zero mask: say so."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("default")  # Python's own filter, as a user without any setting has
        result = explainer(IMAGE, target=lambda out: out.logits[:, 0] * 0, method="grad_rollout")
    assert result.mask.max() == 0
    shown = [w for w in seen if issubclass(w.category, ExplanationWarning)]
    assert len(shown) == 1 and "mask is all zeros" in str(shown[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ExplanationWarning)  # a user may make it an error
        with pytest.raises(ExplanationWarning):
            explainer(IMAGE, target=lambda out: out.logits[:, 0] * 0, method="grad_rollout")


def test_an_ordinary_explanation_warns_and_logs_nothing(explainer, caplog):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with caplog.at_level(logging.DEBUG, logger="hf_vit_rollout"):
            for method in ("rollout", "gae", "attnlrp"):
                explainer(IMAGE, target=None if method == "rollout" else 1, method=method)
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def _calls(tree, name: str):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == name:
            yield node


def test_every_library_warning_has_the_package_category_and_nothing_prints():
    for path in SOURCE.rglob("*.py"):
        if path.name in ("cli.py", "__main__.py"):
            continue  # the commands print: that is their job
        tree = ast.parse(path.read_text())
        for call in _calls(tree, "warn"):
            if getattr(call.func.value, "id", None) != "warnings":
                continue
            category = call.args[1] if len(call.args) > 1 else next((k.value for k in call.keywords if k.arg == "category"), None)
            assert getattr(category, "id", None) == "ExplanationWarning", f"{path.name}:{call.lineno}"
        commands = [range(f.lineno, f.end_lineno + 1) for f in ast.walk(tree) if isinstance(f, ast.FunctionDef) and f.name == "main"]
        printed = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == "print"
                   and not any(n.lineno in lines for lines in commands)]  # a command's main() prints its errors
        assert not printed, f"{path.name} prints at lines {printed}"
