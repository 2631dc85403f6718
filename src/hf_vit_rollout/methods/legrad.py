"""LeGrad (Bousselham et al., ICCV 2025) as pure functions over tensors.

Each layer ``l`` is read out on its own: the model's final norm and head applied to the layer's
output tokens give the explained score ``s^l`` (the same class, text or callable objective as for
the last layer), and its gradient with respect to the same layer's attention map,
``∇A^l = ∂s^l/∂A^l`` (``(B, H, N, N)``), is the layer's signal:

    Ê^l = mean_i fuse_h(max(∇A^l, 0))[i, :]      (heads fused, then the mean over query rows i)
    E   = Σ_{l ≥ start_layer} Ê^l                 (the authors' code sums the layers)

and the map is min-max normalised over the patch tokens. The gradients come from
:class:`~hf_vit_rollout.readout.LayerReadout`, which runs every layer's readout in the one forward
pass and keeps each layer's gradient to its own readout (see there).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .layers import check_start_layer
from .rollout import fuse_heads


def legrad_layer(
    attention: torch.Tensor | None,
    grad: torch.Tensor,
    head_fusion: str = "mean",
    discard_ratio: float = 0.0,
    keep_index: int | None = None,
) -> torch.Tensor:
    """One layer's LeGrad row ``Ê^l = mean_i fuse_h(max(∇A^l, 0))[i, :]``.

    Args:
        attention: unused (the attention map itself does not enter LeGrad); kept so the function
            has the signature of a :class:`~hf_vit_rollout.methods.MethodSpec` ``layer_map``.
        grad: ``(B, H, N, N)`` gradient of the layer's own readout score with respect to its
            attention map (rows: queries, columns: keys).
        head_fusion: how the heads are fused (the paper: ``"mean"``).
        discard_ratio, keep_index: not used by LeGrad.

    Returns:
        ``(B, N)``: the mean over query rows of the fused positive gradient, one value per key token.
    """
    return fuse_heads(grad.float().clamp(min=0), head_fusion).mean(dim=-2)


def legrad(
    grads: Sequence[torch.Tensor],
    head_fusion: str = "mean",
    start_layer: int = 0,
    num_prefix_tokens: int = 0,
) -> torch.Tensor:
    """LeGrad relevance from every layer's ``∂s^l/∂A^l``.

    Args:
        grads: ``L`` ``(B, H, N, N)`` gradients, first layer first; ``grads[l]`` is the gradient of
            layer ``l``'s own readout with respect to layer ``l``'s attention.
        head_fusion: how heads are fused (the paper: ``"mean"``).
        start_layer: first layer summed (negative counts from the end; the authors' code defaults
            to the last two layers, ``-2``; the paper aggregates all layers, ``0``).
        num_prefix_tokens: class/distillation/register tokens before the patches; the minimum
            is taken over the patch tokens only.

    Returns:
        ``(B, N)``: ``Σ_l Ê^l`` minus its minimum over the patch tokens, so dividing by the maximum
        gives the authors' min-max normalised map.
    """
    if not grads:
        raise ValueError("legrad needs the gradient of at least one layer")
    start = check_start_layer(start_layer, len(grads))
    total = sum(legrad_layer(None, g, head_fusion) for g in grads[start:])
    return shift_to_patch_minimum(total, num_prefix_tokens)


def shift_to_patch_minimum(rows: torch.Tensor, num_prefix_tokens: int) -> torch.Tensor:
    """``(B, N)`` rows minus each row's minimum over the patch tokens (``rows[:, num_prefix_tokens:]``)."""
    return rows - rows[:, num_prefix_tokens:].amin(dim=1, keepdim=True)
