"""Raw attention of one layer, from the output token: the DINO-style map, as pure functions."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .layers import check_head, check_layer
from .rollout import fuse_heads


def head_maps(attention: torch.Tensor, output_weights: torch.Tensor) -> torch.Tensor:
    """Every head's attention row of the output token(s).

    Args:
        attention: ``(B, H, N, N)`` one layer's attention.
        output_weights: ``(N,)`` weights of the output tokens (one-hot on the class token, or
            uniform over patches for mean-pooled models; see ``TokenLayout.output_weights``).

    Returns:
        ``(B, H, N)``: ``Σ_i w_i · A[b, h, i, :]``.
    """
    return torch.einsum("i,bhij->bhj", output_weights.to(attention.dtype), attention)


def raw_attention_layer(attention: torch.Tensor, head: int | None = None, head_fusion: str = "mean") -> torch.Tensor:
    """One layer's ``(B, N, N)`` map: a single head, or the heads fused with ``head_fusion``."""
    if head is None:
        return fuse_heads(attention.float(), head_fusion)
    return attention[:, check_head(head, attention.shape[1])].float()


def raw_attention(
    attentions: Sequence[torch.Tensor],
    output_weights: torch.Tensor,
    layer: int = -1,
    head: int | None = None,
    head_fusion: str = "mean",
) -> torch.Tensor:
    """Raw attention of ``layer`` from the output token(s): ``(B, N)``.

    Args:
        attentions: one ``(B, H, N, N)`` tensor per layer, first layer first.
        output_weights: ``(N,)`` output-token weights.
        layer: which layer (negative from the end; default the last).
        head: which head, or ``None`` to fuse all heads with ``head_fusion``.
        head_fusion: ``"mean"``, ``"min"`` or ``"max"``.
    """
    attention = attentions[check_layer(layer, len(attentions))]
    layer_map = raw_attention_layer(attention, head, head_fusion)
    return torch.einsum("i,bij->bj", output_weights.to(layer_map.dtype), layer_map)
