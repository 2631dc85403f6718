"""Layer-wise relevance propagation on ``transformers`` ViTs, without copying any model's code.

* :mod:`.rules`: LRP rules as modified backward passes (gradient × input form).
* :mod:`.attention`: the attention function the capture's ``AttentionInterface`` dispatcher runs.
* :mod:`.context`: :class:`RelevanceContext`, which attaches a :class:`RuleSet` for one call.
* :mod:`.relevance`: standalone entry points (:func:`attnlrp_relevance`, :func:`chefer_relevance`,
  :func:`libragrad_relevance`) and the relevance budget (:func:`relevance_budget`).
"""

from __future__ import annotations

from .attention import relevance_attention
from .context import RelevanceContext, check_supported, encoder_layers
from .relevance import (
    RelevanceBudget,
    RelevanceResult,
    attnlrp_relevance,
    chefer_relevance,
    explained_scores,
    libragrad_relevance,
    relevance_budget,
)
from .rules import ATTNLRP, CHEFER2021, CP_LRP, LIBRAGRAD, RULE_SETS, Ledger, RuleSet

__all__ = [
    "ATTNLRP",
    "CHEFER2021",
    "CP_LRP",
    "LIBRAGRAD",
    "Ledger",
    "RULE_SETS",
    "RelevanceBudget",
    "RelevanceContext",
    "RelevanceResult",
    "RuleSet",
    "attnlrp_relevance",
    "check_supported",
    "chefer_relevance",
    "encoder_layers",
    "explained_scores",
    "libragrad_relevance",
    "relevance_attention",
    "relevance_budget",
]
