"""One forward pass under a :class:`~hf_vit_rollout.lrp.context.RelevanceContext`, then the backward
passes a method needs: the standalone entry points of the LRP methods (no explainer involved).

* :func:`attnlrp_relevance`: AttnLRP relevance of every token at the input of the first encoder
  layer, ``R = h₀ ⊙ ∂̃s/∂h₀`` summed over the embedding axis (one relevance pass).
* :func:`chefer_relevance`: the attention maps, their ordinary gradients and their LRP relevance
  (Chefer et al. 2021 rules), one forward pass and two backward passes; the inputs of
  :func:`~hf_vit_rollout.methods.attribution.transformer_attribution`.
* :func:`libragrad_relevance`: LibraGrad's corrected Input×Gradient of the target's softmax
  probability at the same tokens (one gradient pass under :data:`~hf_vit_rollout.lrp.LIBRAGRAD`).
* :func:`relevance_budget`: where the explained score's relevance went: the tokens, and what each
  kind of rule absorbed (:class:`RelevanceBudget`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .context import RelevanceContext
from .rules import ATTNLRP, CHEFER2021, LIBRAGRAD, Ledger, RuleSet


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


def explained_scores(outputs, target, probability: bool = False) -> tuple[torch.Tensor, list]:
    """``(B,)`` scores to explain and the class per image.

    Args:
        outputs: the model's output.
        target: ``None`` (the predicted class), a class index, one index (or ``None``) per image, or a
            callable ``score(outputs) -> (B,)``.
        probability: explain the class's softmax probability instead of its logit (LibraGrad's
            choice for classifiers; a callable target's score is taken as it is).
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
    scores = logits.softmax(-1) if probability else logits
    return scores.gather(1, index[:, None]).squeeze(1), chosen


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
    probability: bool = False,
) -> RelevanceResult:
    """AttnLRP token relevance for already-preprocessed inputs.

    Args:
        model: a ``transformers`` ViT-family model.
        pixel_values: ``(B, C, H, W)``.
        target: see :func:`explained_scores`.
        root: the vision tower (CLIP/SigLIP); default ``model``.
        forward: ``forward(pixel_values) -> outputs`` if the call is not ``root(pixel_values=...)``.
        rules: the rule set (default :data:`ATTNLRP`; another ε via ``dataclasses.replace``;
            :data:`~hf_vit_rollout.lrp.CP_LRP`, :data:`~hf_vit_rollout.lrp.LIBRAGRAD`).
        probability: explain the class's softmax probability instead of its logit.

    Returns:
        A :class:`RelevanceResult` whose ``token_relevance[b, j]`` is the relevance of token ``j``
        at the input of the first encoder layer (patch + position embeddings, class/register tokens;
        for CLIP after ``pre_layrnorm``), summed over the embedding axis. Its sum over tokens
        approximates the explained score (bias terms and ε absorb the rest).
    """
    with RelevanceContext(model, rules, root=root) as context:
        outputs = _forward(context, pixel_values, forward)
        scores, chosen = explained_scores(outputs, target, probability=probability)
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


def libragrad_relevance(
    model: nn.Module,
    pixel_values: torch.Tensor,
    target=None,
    root: nn.Module | None = None,
    forward: Callable | None = None,
) -> RelevanceResult:
    """LibraGrad's corrected Input×Gradient (Mehri et al., CVPR 2025) for preprocessed inputs.

    The gradient of the target's softmax probability (a callable target: its score) under
    :data:`~hf_vit_rollout.lrp.LIBRAGRAD`, times the tokens entering the first encoder layer, summed
    over the embedding axis. Arguments as for :func:`attnlrp_relevance`.

    Returns:
        A :class:`RelevanceResult` with ``token_relevance`` ``(B, N)`` and ``scores`` the explained
        probabilities.
    """
    return attnlrp_relevance(model, pixel_values, target, root, forward, rules=LIBRAGRAD, probability=True)


@dataclass
class RelevanceBudget:
    """Where the relevance put on the explained score went, per image.

    ``score == tokens + sum(absorbed.values()) + unaccounted``. LRP rules keep relevance only where
    they are conservative: a bias takes its share ``b·g`` (linear layers, LayerNorms, additive
    attention biases), the ε-rule keeps ``z·g·ε/(|z|+ε)``, and AttnLRP's softmax rule, a Taylor
    expansion at the softmax input, keeps its zero-order term. Chefer et al.'s αβ rule and
    normalised addition redistribute everything, so with their rules almost nothing is absorbed.

    Attributes:
        score: ``(B,)`` relevance put on the explained score (the score itself, or one unit for
            Chefer et al.'s start).
        tokens: ``(B,)`` the tokens' relevance at the first encoder layer's input, summed.
        absorbed: kind → ``(B,)`` relevance absorbed by that kind of rule: ``"linear"`` (biases and
            ε of ``nn.Linear``), ``"layer_norm"`` (LayerNorm biases), ``"softmax"`` (the softmax
            rule), ``"attention_bias"`` (additive attention masks and position biases),
            ``"activation"`` and ``"addition"`` (conservative rules; nonzero only through their
            stabilisers), and ``"probability"`` (the softmax that turns the logits into the explained
            probability, gradient × input through it). Kinds that did not occur are absent.
        unaccounted: ``(B,)`` the rest: relevance lost in operations without a rule. It is zero up
            to float error for the ViT families with a classifier; the L2 normalisation of an
            image-text similarity (CLIP, SigLIP) passes no relevance at all through its gradient
            (Euler: the map is homogeneous of degree 0), so there it is the whole score.

    All tensors are float64 and detached.
    """

    score: torch.Tensor
    tokens: torch.Tensor
    absorbed: dict[str, torch.Tensor]

    @property
    def unaccounted(self) -> torch.Tensor:
        total = self.tokens + sum(self.absorbed.values(), torch.zeros_like(self.tokens))
        return self.score - total

    def fractions(self) -> dict[str, torch.Tensor]:
        """Each part as a share of the score: ``{"tokens": ..., <kind>: ..., "unaccounted": ...}``."""
        parts = {"tokens": self.tokens, **self.absorbed, "unaccounted": self.unaccounted}
        return {name: part / self.score for name, part in parts.items()}


def relevance_budget(
    model: nn.Module,
    pixel_values: torch.Tensor,
    target=None,
    rules: RuleSet = ATTNLRP,
    root: nn.Module | None = None,
    forward: Callable | None = None,
    probability: bool = False,
) -> RelevanceBudget:
    """The relevance budget of one relevance pass: tokens plus what each kind of rule absorbed.

    Args:
        model, pixel_values, target, root, forward: as for :func:`attnlrp_relevance`.
        rules: the rule set (:data:`~hf_vit_rollout.lrp.ATTNLRP`, ``CP_LRP``, ``LIBRAGRAD``, ...).
        probability: explain the softmax probability (as method ``"libragrad"`` does).

    Returns:
        A :class:`RelevanceBudget`; its ``tokens`` equal the token relevance the corresponding
        method returns, summed over tokens.
    """
    with RelevanceContext(model, rules, root=root, budget=True) as context:
        outputs = _forward(context, pixel_values, forward)
        scores, _ = explained_scores(outputs, target, probability=probability)
        initial = context.initial_relevance(scores)
        ledger = Ledger(scores.shape[0])
        targets = [context.inputs]
        if probability and not callable(target):  # the softmax over the logits is outside the model
            targets.append(outputs.logits)
        densities = context.relevance_grad(scores, targets, initial=initial, ledger=ledger)
        tokens = (context.inputs.double() * densities[0].double()).sum(dim=(1, 2)).detach()
        absorbed = {k: v.detach() for k, v in ledger.absorbed.items()}
        if len(densities) > 1:
            absorbed["probability"] = initial.double() - (outputs.logits.double() * densities[1].double()).sum(1).detach()
        return RelevanceBudget(initial.double(), tokens, absorbed)
