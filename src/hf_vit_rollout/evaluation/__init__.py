"""Evaluate explanation methods on your own model and data: faithfulness, localization, sanity.

>>> from hf_vit_rollout import RolloutExplainer, evaluate
>>> explainer = RolloutExplainer.from_pretrained("demo")                      # doctest: +SKIP
>>> report = evaluate(explainer, "photos/", methods=["rollout", "gae"])        # doctest: +SKIP
>>> print(report)                                                             # doctest: +SKIP
>>> report.save("report/")                                                    # doctest: +SKIP
"""

from __future__ import annotations

from .engine import RANDOM, MethodConfig, evaluate
from .report import EvaluationReport
from .scores import (
    METRICS,
    ROAD,
    ClassSensitivity,
    Complexity,
    Deletion,
    Energy,
    Insertion,
    Metric,
    PointingGame,
    Randomisation,
    Sparseness,
)

__all__ = [
    "METRICS",
    "RANDOM",
    "ROAD",
    "ClassSensitivity",
    "Complexity",
    "Deletion",
    "Energy",
    "EvaluationReport",
    "Insertion",
    "MethodConfig",
    "Metric",
    "PointingGame",
    "Randomisation",
    "Sparseness",
    "evaluate",
]
