"""The attention function registered through ``transformers``' ``AttentionInterface``.

While a :class:`~hf_vit_rollout.lrp.context.RelevanceContext` is active, the configs of its model
name :data:`ATTENTION_NAME` as their attention implementation, so every self-attention module of
the model calls :func:`relevance_attention` with its projected ``query, key, value``. The function
computes ordinary (eager) scaled dot-product attention and returns the attention probabilities;
for the thread that owns the context it also attaches the context's rules to the two matrix
products and the softmax. Any other thread that runs the model meanwhile gets plain eager
attention from it (same values, ordinary gradients).
"""

from __future__ import annotations

import threading

import torch
from torch import nn

#: Name under which :func:`relevance_attention` is registered with ``transformers.AttentionInterface``.
ATTENTION_NAME = "hf_vit_rollout_lrp"

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
        scores = scores + attention_mask
    weights = nn.functional.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    if context is not None:
        weights = context.softmax_output(weights, scores, module)
    weights = nn.functional.dropout(weights, p=dropout, training=module.training)
    mixed = weights
    if context is not None:
        mixed, value = context.mixing_operands(weights, value)
    output = torch.matmul(mixed, value).transpose(1, 2).contiguous()
    return output, weights


def register() -> None:
    """Register :func:`relevance_attention` under :data:`ATTENTION_NAME` (idempotent)."""
    from transformers import AttentionInterface

    AttentionInterface.register(ATTENTION_NAME, relevance_attention)
