"""Layer-wise relevance propagation on ``transformers`` ViTs, without copying any model's code.

* :mod:`.rules`: LRP rules as modified backward passes (gradient × input form).
* :mod:`.attention`: the attention function the capture's ``AttentionInterface`` dispatcher runs.
* :mod:`.context`: :class:`RelevanceContext`, which attaches a :class:`RuleSet` for one call.
* :mod:`.relevance`: standalone entry points (:func:`attnlrp_relevance`, :func:`chefer_relevance`).
"""

from __future__ import annotations

from .attention import relevance_attention
from .context import RelevanceContext, check_supported, encoder_layers
from .relevance import (
    RelevanceResult,
    attnlrp_relevance,
    chefer_relevance,
    explained_scores,
)
from .rules import ATTNLRP, CHEFER2021, CP_LRP, RULE_SETS, RuleSet

__all__ = [
    "ATTNLRP",
    "CHEFER2021",
    "CP_LRP",
    "RULE_SETS",
    "RelevanceContext",
    "RelevanceResult",
    "RuleSet",
    "attnlrp_relevance",
    "check_supported",
    "chefer_relevance",
    "encoder_layers",
    "explained_scores",
    "relevance_attention",
]
