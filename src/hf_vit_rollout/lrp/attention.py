"""The attention function that attaches the LRP rules to ``q·kᵀ``, the softmax and ``A·v``.

:class:`~hf_vit_rollout.capture.AttentionCapture` points the vision tower's configs at the attention
function it registers through ``transformers``' ``AttentionInterface``; while a
:class:`~hf_vit_rollout.lrp.context.RelevanceContext` is active in a thread, that dispatcher computes
the recorded layers of this thread with :func:`relevance_attention` (via
:func:`~hf_vit_rollout.capture.set_attention_function`). It computes ordinary (eager) scaled
dot-product attention and returns the attention probabilities, with the context's rules attached.
Other threads never reach it: the dispatcher gives them their own implementation.
"""

from __future__ import annotations

import threading

import torch
from torch import nn

_local = threading.local()


def active_context():
    """The relevance context owned by the calling thread, or ``None``."""
    return getattr(_local, "context", None)


def set_active_context(context) -> None:
    """Make ``context`` (or ``None``) the calling thread's active relevance context."""
    _local.context = context


def relevance_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scaled dot-product attention with the active context's rules attached.

    Args:
        query, key, value: ``(B, H, N, d)``.
        attention_mask: additive mask or bias broadcastable to ``(B, H, N, N)`` (e.g. BEiT's
            relative position bias), or ``None``.

    Returns:
        ``(B, N, H, d)`` attention output and ``(B, H, N, N)`` attention probabilities (the tensor
        whose gradient and relevance the methods read).
    """
    context = active_context()
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    if context is not None:
        query, key = context.score_operands(query, key)
    scores = torch.matmul(query, key.transpose(-1, -2)) * scaling
    if attention_mask is not None:
        products, scores = scores, scores + attention_mask
        if context is not None:
            scores = context.biased_scores(scores, products)
    weights = nn.functional.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    if context is not None:
        weights = context.softmax_output(weights, scores, module)
    weights = nn.functional.dropout(weights, p=dropout, training=module.training)
    mixed = weights
    if context is not None:
        mixed, value = context.mixing_operands(weights, value)
    output = torch.matmul(mixed, value).transpose(1, 2).contiguous()
    return output, weights
