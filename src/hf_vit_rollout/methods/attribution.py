"""Transformer Attribution (Chefer, Gur & Wolf, CVPR 2021) as pure functions over tensors.

``Ā_l = mean_h(max(∇A_l ⊙ R_{A_l}, 0))`` where ``R_{A_l}`` is the LRP relevance of layer ``l``'s
attention map (propagated through the whole network with the paper's rules; see
:func:`hf_vit_rollout.lrp.chefer_relevance`) and ``∇A_l`` its ordinary gradient. The maps are rolled
out with the identity, ``R ← R + Ā_l·R``, from ``start_layer`` to the last layer; the explanation is
the output token's row of ``R``.
"""

from __future__ import annotations

from collections.abc import Sequence

from .gradient import _check_pairs, gae_layer
from .rollout import chain_layers


def transformer_attribution_layer(
    relevance,
    grad,
    head_fusion: str = "mean",
    discard_ratio: float = 0.0,
    keep_index: int | None = 0,
):
    """One layer's ``(B, N, N)`` factor ``I + fuse_h(max(∇A ⊙ R_A, 0))``.

    Args:
        relevance: ``(B, H, N, N)`` LRP relevance of the layer's attention map.
        grad: ``(B, H, N, N)`` gradient of the explained score with respect to the map.
        head_fusion, discard_ratio, keep_index: as for GAE (the paper: ``"mean"``, 0).
    """
    return gae_layer(relevance, grad, head_fusion, discard_ratio, keep_index)


def transformer_attribution(
    relevances: Sequence,
    grads: Sequence,
    head_fusion: str = "mean",
    start_layer: int = 0,
):
    """Transformer Attribution relevance matrix.

    Args:
        relevances: ``L`` ``(B, H, N, N)`` LRP relevances of the attention maps, first layer first.
        grads: their gradients, same order and shapes.
        head_fusion: how heads are fused (the paper: ``"mean"``).
        start_layer: first layer rolled out (negative from the end).

    Returns:
        ``(B, N, N)`` matrix ``R = (I + Ā_{L-1}) ··· (I + Ā_{start})``; the class token's
        explanation is ``R[:, 0]``.
    """
    _check_pairs(relevances, grads)
    return chain_layers(
        [transformer_attribution_layer(r, g, head_fusion) for r, g in zip(relevances, grads)], start_layer
    )
