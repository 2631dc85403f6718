"""Relevance through an encoder-decoder transformer (Chefer, Gur & Wolf, ICCV 2021), pure tensors.

"Generic Attention-model Explainability for Interpreting Bi-Modal and Encoder-Decoder Transformers"
keeps three relevance matrices for a detector such as DETR, whose encoder attends over ``N`` image
tokens and whose decoder's ``Q`` object queries attend to each other and to the image tokens:

* ``R_ii`` ``(N, N)``, starting at ``I``: how much each image token's state comes from each image token;
* ``R_qq`` ``(Q, Q)``, starting at ``I``: the same for the queries;
* ``R_qi`` ``(Q, N)``, starting at ``0``: how much each query's state comes from each image token.

The rules, for layers in forward order (``Ā`` one layer's head-fused map, see :func:`gradient_cam`):

* encoder self-attention (rule 6): ``R_ii += Ā·R_ii``;
* decoder self-attention (rules 6, 7): ``R_qq += Ā·R_qq`` and ``R_qi += Ā·R_qi``;
* decoder cross-attention (rule 10): ``R_qi += R̄_qqᵀ·Ā·R̄_ii``, where ``R̄ = (R − I)/rowsum(R − I) + I``
  (eqs. 8-9, the residual's identity kept apart from the row-normalised accumulated part).

The map of query ``q`` is row ``q`` of ``R_qi``. These follow the paper's equations and its authors'
code (``Transformer-MM-Explainability``, ``DETR/modules/ExplanationGenerator.py``: ``avg_heads``,
``apply_self_attention_rules``, ``apply_mm_attention_rules``, ``handle_residual``), including the
transpose of ``R̄_qq`` in rule 10. One case the paper leaves open: a row of ``R − I`` that sums to
zero (no relevance reached it, e.g. every gradient was zero) is kept as zero, so that row of ``R̄``
is the identity's (the authors' code divides by zero there and then zeroes the whole NaN update).

Everything is batched: a leading ``B`` axis, each image's matrices computed on their own.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .rollout import fuse_heads


def gradient_cam(attention: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Rule 5: ``Ā = mean_h (∇A ⊙ A)⁺`` of one layer.

    Args:
        attention: ``(B, H, X, Y)`` attention probabilities (``X`` queries, ``Y`` keys).
        grad: ``(B, H, X, Y)`` gradient of the explained score with respect to them.

    Returns:
        ``(B, X, Y)`` float tensor.
    """
    return (attention.float() * grad.float()).clamp(min=0).mean(dim=1)


def attention_cam(attention: torch.Tensor, head_fusion: str = "mean") -> torch.Tensor:
    """The gradient-free ``Ā`` of one layer: its heads fused (``mean``, ``min`` or ``max``).

    Args:
        attention: ``(B, H, X, Y)``.

    Returns:
        ``(B, X, Y)`` float tensor.
    """
    return fuse_heads(attention.float(), head_fusion)


def normalize_residual(relevance: torch.Tensor) -> torch.Tensor:
    """Eqs. 8-9: ``R̄ = (R − I) / rowsum(R − I) + I``; rows of ``R − I`` summing to zero stay zero.

    Args:
        relevance: ``(B, M, M)`` accumulated self-attention relevance (``I`` plus non-negative terms).

    Returns:
        ``(B, M, M)``.
    """
    eye = torch.eye(relevance.shape[-1], dtype=relevance.dtype, device=relevance.device)
    accumulated = relevance - eye
    total = accumulated.sum(dim=-1, keepdim=True)
    safe = torch.where(total == 0, torch.ones_like(total), total)
    return accumulated / safe + eye


def encoder_decoder_relevance(encoder: Sequence[torch.Tensor], decoder: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """``R_qi`` after every layer's rule (see the module docstring).

    Args:
        encoder: one ``(B, N, N)`` map ``Ā`` per encoder self-attention layer, in forward order.
        decoder: one ``(self (B, Q, Q), cross (B, Q, N))`` pair of maps per decoder layer, in order.

    Returns:
        ``(B, Q, N)``: row ``q`` is query ``q``'s relevance over the ``N`` image tokens.

    Raises:
        ValueError: no decoder layer, or maps whose shapes do not chain.
    """
    if not decoder:
        raise ValueError("an encoder-decoder relevance needs at least one decoder layer")
    cross = decoder[0][1]
    batch, queries, tokens = cross.shape
    r_ii = torch.eye(tokens, dtype=cross.dtype, device=cross.device).expand(batch, tokens, tokens).clone()
    r_qq = torch.eye(queries, dtype=cross.dtype, device=cross.device).expand(batch, queries, queries).clone()
    r_qi = torch.zeros(batch, queries, tokens, dtype=cross.dtype, device=cross.device)
    for layer, cam in enumerate(encoder):
        if cam.shape != (batch, tokens, tokens):
            raise ValueError(f"encoder layer {layer}'s map is {tuple(cam.shape)}, expected {(batch, tokens, tokens)}")
        r_ii = r_ii + cam @ r_ii
    r_ii_bar = normalize_residual(r_ii)  # the encoder's relevance is final before the decoder reads it
    for layer, (self_cam, cross_cam) in enumerate(decoder):
        if self_cam.shape != (batch, queries, queries) or cross_cam.shape != (batch, queries, tokens):
            raise ValueError(
                f"decoder layer {layer}'s maps are {tuple(self_cam.shape)} and {tuple(cross_cam.shape)}, expected "
                f"{(batch, queries, queries)} and {(batch, queries, tokens)}"
            )
        r_qq, r_qi = r_qq + self_cam @ r_qq, r_qi + self_cam @ r_qi
        r_qi = r_qi + normalize_residual(r_qq).transpose(1, 2) @ cross_cam @ r_ii_bar
    return r_qi
