"""hf_vit_rollout: where did a Vision Transformer look?

Attention Rollout, gradient rollout, Chefer et al.'s GAE and exact Attention Flow for any
Hugging Face ViT-family checkpoint.

>>> from hf_vit_rollout import RolloutExplainer
>>> explainer = RolloutExplainer.from_pretrained("demo")          # doctest: +SKIP
>>> explanation = explainer("cat.jpg")                            # doctest: +SKIP
>>> explanation.overlay().save("cat_rollout.png")                 # doctest: +SKIP
"""

from __future__ import annotations

import logging

from .capture import AttentionCapture, CaptureError
from .errors import ExplanationWarning, InputError, NonFiniteError, TargetError, UnsupportedModelError
from .evaluation import EvaluationReport, evaluate
from .explainer import RolloutExplainer
from .explanation import Explanation
from .families.loading import DEMO_MODEL, demo_model_path
from .families.tokens import TokenLayout
from .families.video import VideoExplanation
from .methods import (
    METHODS,
    attention_flow,
    attention_rollout,
    discard_lowest,
    fuse_heads,
    gae,
    gradient_rollout,
)
from .placement import HEATMAP_MAX_PIXELS, Placement
from .request import ExplainRequest

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())


def _register_pipeline() -> None:
    """Make ``transformers.pipeline("vit-explanation", ...)`` available on import."""
    try:
        from .pipeline import register
    except ImportError as exc:  # pragma: no cover - transformers without pipelines
        logging.getLogger(__name__).debug("vit-explanation pipeline not registered: %s", exc)
        return
    register()


_register_pipeline()


def __getattr__(name: str):
    """``hf_vit_rollout.explain_dataset``, imported on first use (it needs the optional ``datasets``)."""
    if name == "explain_dataset":
        from .datasets import explain_dataset

        return explain_dataset
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEMO_MODEL",
    "METHODS",
    "Placement",
    "AttentionCapture",
    "CaptureError",
    "EvaluationReport",
    "ExplainRequest",
    "Explanation",
    "HEATMAP_MAX_PIXELS",
    "ExplanationWarning",
    "InputError",
    "NonFiniteError",
    "RolloutExplainer",
    "TargetError",
    "TokenLayout",
    "UnsupportedModelError",
    "VideoExplanation",
    "attention_flow",
    "attention_rollout",
    "demo_model_path",
    "discard_lowest",
    "evaluate",
    "explain_dataset",
    "fuse_heads",
    "gae",
    "gradient_rollout",
]
