"""Synthetic attention for tests and benchmarks.

I.i.d. random softmax attention is a poor test bed (for attention flow it makes every token's flow
equal ``min(1, column sum of the first layer)``). :func:`clustered_attention` draws block-structured
maps like real ViTs': tokens belong to fixed spatial groups and attend mostly within their group.
"""

from __future__ import annotations

import torch


def clustered_attention(
    batch: int = 1,
    heads: int = 3,
    tokens: int = 197,
    layers: int = 12,
    groups: int = 6,
    strength: float = 6.0,
    sharpness: float = 1.5,
    seed: int = 0,
) -> list[torch.Tensor]:
    """Block-structured attention maps.

    Args:
        batch, heads, tokens, layers: output sizes.
        groups: number of token groups (fixed across layers and heads, like image regions).
        strength: logit bonus for attending within one's group.
        sharpness: scale of the random logits (higher = peakier rows).
        seed: random seed.

    Returns:
        ``layers`` tensors of shape ``(batch, heads, tokens, tokens)``, rows summing to one.
    """
    g = torch.Generator().manual_seed(seed)
    group = torch.randint(0, groups, (batch, 1, tokens), generator=g)
    same = (group[..., :, None] == group[..., None, :]).float()
    maps = []
    for _ in range(layers):
        logits = torch.randn(batch, heads, tokens, tokens, generator=g) * sharpness + strength * same
        maps.append(logits.softmax(-1))
    return maps
