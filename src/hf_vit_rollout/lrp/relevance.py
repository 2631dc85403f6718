"""One forward pass under a :class:`~hf_vit_rollout.lrp.context.RelevanceContext`, then the backward
passes a method needs: the standalone entry points of the LRP methods (no explainer involved).

* :func:`attnlrp_relevance`: AttnLRP relevance of every token at the input of the first encoder
  layer, ``R = h₀ ⊙ ∂̃s/∂h₀`` summed over the embedding axis (one relevance pass).
* :func:`chefer_relevance`: the attention maps, their ordinary gradients and their LRP relevance
  (Chefer et al. 2021 rules), one forward pass and two backward passes; the inputs of
  :func:`~hf_vit_rollout.methods.attribution.transformer_attribution`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .context import RelevanceContext
from .rules import ATTNLRP, CHEFER2021, RuleSet


@dataclass
class RelevanceResult:
    """What one relevance call produced (all tensors detached).

    Attributes:
        scores: ``(B,)`` the explained scores (e.g. the target logits).
        targets: the explained class per image (``None`` entries for callable targets).
        logits: ``(B, C)`` classifier logits, if the model has a classifier.
        token_relevance: ``(B, N)`` input relevance per token (AttnLRP), else ``None``.
        attentions: ``L`` ``(B, H, N, N)`` attention maps, first layer first.
        attention_grads: their ordinary gradients (Chefer), else ``None``.
        attention_relevance: their LRP relevance ``A ⊙ ∂̃s/∂A`` (Chefer), else ``None``.
    """

    scores: torch.Tensor
    targets: list
    logits: torch.Tensor | None
    token_relevance: torch.Tensor | None
    attentions: list[torch.Tensor]
    attention_grads: list[torch.Tensor] | None = None
    attention_relevance: list[torch.Tensor] | None = None


def explained_scores(outputs, target) -> tuple[torch.Tensor, list]:
    """``(B,)`` scores to explain and the class per image.

    Args:
        outputs: the model's output.
        target: ``None`` (the predicted class), a class index, one index (or ``None``) per image, or a
            callable ``score(outputs) -> (B,)``.
    """
    if callable(target):
        scores = target(outputs)
        return scores, [None] * scores.shape[0]
    logits = getattr(outputs, "logits", None)
    if logits is None:
        raise ValueError("the model has no classifier logits; pass target=callable(outputs) -> (B,) scores")
    batch = logits.shape[0]
    wanted = target if isinstance(target, (list, tuple)) else [target] * batch
    chosen = [int(logits[i].argmax()) if t is None else int(t) for i, t in enumerate(wanted)]
    index = torch.tensor(chosen, device=logits.device)
    return logits.gather(1, index[:, None]).squeeze(1), chosen


def _forward(context: RelevanceContext, pixel_values: torch.Tensor, forward: Callable | None):
    with torch.enable_grad():
        if forward is not None:
            return forward(pixel_values)
        return context.root(pixel_values=pixel_values)


def _result(outputs, scores, chosen, context: RelevanceContext, **fields) -> RelevanceResult:
    logits = getattr(outputs, "logits", None)
    return RelevanceResult(
        scores=scores.detach(),
        targets=chosen,
        logits=None if logits is None else logits.detach(),
        attentions=[a.detach() for a in context.attentions],
        **fields,
    )


def attnlrp_relevance(
    model: nn.Module,
    pixel_values: torch.Tensor,
    target=None,
    root: nn.Module | None = None,
    forward: Callable | None = None,
    rules: RuleSet = ATTNLRP,
) -> RelevanceResult:
    """AttnLRP token relevance for already-preprocessed inputs.

    Args:
        model: a ``transformers`` ViT-family model.
        pixel_values: ``(B, C, H, W)``.
        target: see :func:`explained_scores`.
        root: the vision tower (CLIP/SigLIP); default ``model``.
        forward: ``forward(pixel_values) -> outputs`` if the call is not ``root(pixel_values=...)``.
        rules: the rule set (default :data:`ATTNLRP`; another ε via ``dataclasses.replace``).

    Returns:
        A :class:`RelevanceResult` whose ``token_relevance[b, j]`` is the relevance of token ``j``
        at the input of the first encoder layer (patch + position embeddings, class/register tokens;
        for CLIP after ``pre_layrnorm``), summed over the embedding axis. Its sum over tokens
        approximates the explained score (bias terms and ε absorb the rest).
    """
    with RelevanceContext(model, rules, root=root) as context:
        outputs = _forward(context, pixel_values, forward)
        scores, chosen = explained_scores(outputs, target)
        (density,) = context.relevance_grad(scores, [context.inputs])
        token_relevance = (context.inputs * density).sum(dim=-1).detach()
        return _result(outputs, scores, chosen, context, token_relevance=token_relevance)


def chefer_relevance(
    model: nn.Module,
    pixel_values: torch.Tensor,
    target=None,
    root: nn.Module | None = None,
    forward: Callable | None = None,
) -> RelevanceResult:
    """Attention maps, their gradients and their LRP relevance under Chefer et al.'s (2021) rules.

    The relevance pass starts from one unit of relevance on each image's explained score (their
    one-hot start). Arguments as for :func:`attnlrp_relevance`.
    """
    with RelevanceContext(model, CHEFER2021, root=root) as context:
        outputs = _forward(context, pixel_values, forward)
        scores, chosen = explained_scores(outputs, target)
        maps = list(context.attentions)
        grads = torch.autograd.grad(scores.sum(), maps, retain_graph=True)
        densities = context.relevance_grad(scores, maps, initial=torch.ones_like(scores))
        relevance = [(a * d).detach() for a, d in zip(maps, densities)]
        return _result(
            outputs,
            scores,
            chosen,
            context,
            token_relevance=None,
            attention_grads=[g.detach() for g in grads],
            attention_relevance=relevance,
        )
