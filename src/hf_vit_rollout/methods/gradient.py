"""Class-specific, gradient-weighted rollouts as pure functions over tensors.

``grads[l]`` must be the gradient of the explained score with respect to ``attentions[l]``, *the
same layer*: both lists are first layer first. (Backward hooks deliver gradients last layer first;
zipping them with forward-ordered maps pairs every layer with the wrong gradient, a bug of the
original tool. The explainer pairs them by the layer's forward index.)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .layers import check_start_layer
from .rollout import (
    add_residual_and_normalize,
    chain_layers,
    discard_lowest,
    fuse_heads,
)


def _start(start_layer: int, attentions: Sequence[torch.Tensor]) -> int:
    return check_start_layer(start_layer, len(attentions)) if attentions else 0


def _check_pairs(attentions: Sequence[torch.Tensor], grads: Sequence[torch.Tensor]) -> None:
    if len(attentions) != len(grads):
        raise ValueError(f"got {len(attentions)} attention maps but {len(grads)} gradients; need one per layer")
    for layer, (a, g) in enumerate(zip(attentions, grads)):
        if a.shape != g.shape:
            raise ValueError(f"layer {layer}: attention {tuple(a.shape)} and gradient {tuple(g.shape)} differ in shape")


def gradient_rollout_layer(
    attention: torch.Tensor,
    grad: torch.Tensor,
    head_fusion: str = "mean",
    discard_ratio: float = 0.0,
    keep_index: int | None = 0,
) -> torch.Tensor:
    """Classic gradient rollout, one layer: ``norm(0.5·max(fuse(A ⊙ ∇A), 0) + 0.5·I)``.

    Args:
        attention, grad: ``(B, H, N, N)``.

    Returns:
        ``(B, N, N)`` row-stochastic map.
    """
    fused = fuse_heads(attention.float() * grad.float(), head_fusion).clamp(min=0)
    fused = discard_lowest(fused, discard_ratio, keep_index)
    return add_residual_and_normalize(fused)


def gae_layer(
    attention: torch.Tensor,
    grad: torch.Tensor,
    head_fusion: str = "mean",
    discard_ratio: float = 0.0,
    keep_index: int | None = 0,
) -> torch.Tensor:
    """Chefer et al. (2021), one layer: ``I + Ā`` with ``Ā = fuse_h(max(∇A ⊙ A, 0))``.

    With ``head_fusion="mean"`` and ``discard_ratio=0`` this is exactly the paper's rule
    ``R ← R + Ā·R`` written as a factor ``(I + Ā)``. Rows are not normalised (as in the paper).

    Args:
        attention, grad: ``(B, H, N, N)``.

    Returns:
        ``(B, N, N)``.
    """
    fused = fuse_heads((attention.float() * grad.float()).clamp(min=0), head_fusion)
    fused = discard_lowest(fused, discard_ratio, keep_index)
    n = fused.shape[-1]
    return fused + torch.eye(n, dtype=fused.dtype, device=fused.device)


def gradient_rollout(
    attentions: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    head_fusion: str = "mean",
    discard_ratio: float = 0.0,
    keep_index: int | None = 0,
    start_layer: int = 0,
) -> torch.Tensor:
    """Classic gradient attention rollout (the original tool's ``grad_rollout``, fixed).

    Args:
        attentions: one ``(B, H, N, N)`` tensor per layer, first layer first.
        grads: gradients of the target score w.r.t. each of ``attentions``, same order and shapes.
        head_fusion: how ``A ⊙ ∇A`` is fused over heads (the original used ``"mean"``).
        discard_ratio: fraction of the weakest entries zeroed per layer, in ``[0, 1)``.
        keep_index: token whose self-attention is never discarded, or ``None``.
        start_layer: first layer multiplied in (negative counts from the end).

    Returns:
        ``(B, N, N)`` product of the per-layer maps from ``start_layer`` on, last layer leftmost.
    """
    _check_pairs(attentions, grads)
    start = _start(start_layer, attentions)
    return chain_layers(
        [
            gradient_rollout_layer(a, g, head_fusion, discard_ratio, keep_index)
            for a, g in zip(attentions[start:], grads[start:])
        ]
    )


def gae(
    attentions: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor],
    head_fusion: str = "mean",
    discard_ratio: float = 0.0,
    keep_index: int | None = 0,
    start_layer: int = 0,
) -> torch.Tensor:
    """Generic Attention-model Explainability (Chefer, Gur & Wolf, 2021) for self-attention.

    ``R₀ = I``; for every layer ``R ← R + Ā_l·R`` with ``Ā_l = mean_h(max(∇A_l ⊙ A_l, 0))``.

    Args:
        attentions: one ``(B, H, N, N)`` tensor per layer, first layer first.
        grads: gradients of the target score w.r.t. each of ``attentions``, same order and shapes.
        start_layer: first layer rolled out (negative counts from the end).

    Returns:
        ``(B, N, N)`` relevance matrix ``R``; the explanation of the class token is ``R[:, 0]``.
    """
    _check_pairs(attentions, grads)
    start = _start(start_layer, attentions)
    return chain_layers(
        [gae_layer(a, g, head_fusion, discard_ratio, keep_index) for a, g in zip(attentions[start:], grads[start:])]
    )
