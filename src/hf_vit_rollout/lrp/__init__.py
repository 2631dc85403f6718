"""Layer-wise relevance propagation on ``transformers`` ViTs, without copying any model's code.

* :mod:`.rules`: LRP rules as modified backward passes (gradient × input form).
* :mod:`.attention`: the attention function registered through ``AttentionInterface``.
* :mod:`.context`: :class:`RelevanceContext`, which attaches a :class:`RuleSet` for one call.
* :mod:`.relevance`: standalone entry points (:func:`attnlrp_relevance`, :func:`chefer_relevance`).
"""

from __future__ import annotations

from .attention import ATTENTION_NAME, relevance_attention
from .context import RelevanceContext, check_supported, encoder_layers
from .relevance import RelevanceResult, attnlrp_relevance, chefer_relevance, explained_scores
from .rules import ATTNLRP, CHEFER2021, CP_LRP, RuleSet

__all__ = [
    "ATTENTION_NAME",
    "ATTNLRP",
    "CHEFER2021",
    "CP_LRP",
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
