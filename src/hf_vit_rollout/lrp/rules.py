"""LRP rules as modified backward passes, in the gradient × input form.

Every rule keeps the forward value exactly and changes only what flows backward. The quantity
propagated is the *relevance density* ``g`` with relevance ``R = value ⊙ g`` at every tensor of the
graph: un-ruled linear operations (reshape, transpose, index, fan-out, addition, scaling by a
constant, mean) then propagate relevance with the LRP-0 rule automatically, and the input relevance
of the network is ``x ⊙ ∂̃f/∂x`` at the point where the backward pass stops.

A rule is attached to a tensor by :func:`gate`: ``gate(rule, original, *inputs)`` returns
``original``'s value; backward, it either passes the gradient to ``original``'s own graph (the
context's ``relevance`` flag is off: ordinary gradients, exactly) or calls ``rule(grad, *inputs)``,
which returns the relevance densities of ``inputs`` (the flag is on). One forward pass therefore
serves both an ordinary gradient pass and a relevance pass.

All reductions (the normalised addition's sums) are per sample, so a sample's relevance never
depends on the rest of the batch.

**The relevance budget.** A gate may name the kind of operation it rules (``kind``). When a
:class:`Ledger` is attached to the switch, every such gate books, per sample, the relevance it
received minus the relevance it passed on: what its rule absorbed (a bias's share, the ε of the
ε-rule, AttnLRP's softmax term). Un-ruled linear operations pass relevance on exactly, and the
uniform rule's two halves of a bilinear product add up to the product's relevance, so those are
not booked. :func:`~hf_vit_rollout.lrp.relevance_budget` reads the ledger.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class RuleSet:
    """Which LRP rule each kind of operation gets.

    Attributes:
        name: short name.
        linear: ``"epsilon"`` (LRP-ε, bias absorbs relevance) or ``"alpha1_beta0"`` (positive
            contributions only, bias ignored).
        layer_norm: ``"std_constant"`` (the std treated as a constant, the rest linear) or
            ``"identity"`` (relevance passed through unchanged).
        softmax: ``"gradient"`` (gradient × input at the softmax input: AttnLRP's rule),
            ``"identity"`` (Chefer et al.), or ``"constant"`` (the attention weights are held fixed,
            so ``A·v`` gives all its relevance to ``v``: CP-LRP, Ali et al. 2022).
        add: ``"proportional"`` (LRP-0: ``R_a = a/(a+b)·R``) or ``"normalised"`` (Chefer et al.).
        epsilon: the ε of the ε-rule.
        start: the relevance put on each explained score: ``"score"`` (the score's value: AttnLRP
            explains the logit) or ``"unit"`` (one unit per image: Chefer et al.'s one-hot start).

    ``linear="gradient"`` passes the ordinary gradient through linear layers (LibraGrad: no
    modification there), booking only the bias's share in the relevance budget.

    The matrix products of attention get the uniform rule (half the relevance to each operand;
    except ``A·v`` under ``softmax="constant"``) and element-wise activations the identity rule.
    """

    name: str
    linear: str
    layer_norm: str
    softmax: str
    add: str
    epsilon: float = 1e-6
    start: str = "score"


#: AttnLRP (Achtibat et al., ICML 2024).
ATTNLRP = RuleSet("attnlrp", linear="epsilon", layer_norm="std_constant", softmax="gradient", add="proportional")
#: CP-LRP (Ali et al., ICML 2022): AttnLRP's rules with the attention weights held constant.
CP_LRP = RuleSet("cp_lrp", linear="epsilon", layer_norm="std_constant", softmax="constant", add="proportional")
#: The LRP of Chefer, Gur & Wolf (CVPR 2021), "Transformer Interpretability Beyond Attention Visualization".
CHEFER2021 = RuleSet(
    "chefer2021", linear="alpha1_beta0", layer_norm="identity", softmax="identity", add="normalised", start="unit"
)
#: LibraGrad's gradient corrections (Mehri et al., CVPR 2025) as a rule set: the ordinary gradient
#: through linear layers, the LayerNorm's std and the activations' gates held constant, and the
#: attention weights held constant (``q`` and ``k`` detached). Input × gradient under these rules is
#: LibraGrad's corrected Input×Gradient.
LIBRAGRAD = RuleSet(
    "libragrad", linear="gradient", layer_norm="std_constant", softmax="constant", add="proportional", epsilon=0.0
)
#: The rule sets by name (the names :class:`~hf_vit_rollout.methods.MethodSpec` ``rules`` use).
RULE_SETS = {rules.name: rules for rules in (ATTNLRP, CP_LRP, CHEFER2021, LIBRAGRAD)}


class Ledger:
    """Per-sample relevance absorbed by each kind of ruled operation during one relevance pass.

    Args:
        batch: images in the pass; a tensor's leading axis is the batch or the batch times a
            factor (Swin's ``B·nW`` windows, image-major), so per-sample sums reshape to ``(batch, -1)``.

    Attributes:
        absorbed: kind → ``(batch,)`` float64 relevance received minus relevance passed on.
    """

    def __init__(self, batch: int) -> None:
        self.batch = batch
        self.absorbed: dict[str, torch.Tensor] = {}

    def _per_sample(self, value: torch.Tensor, density: torch.Tensor) -> torch.Tensor:
        return (value.double() * density.double()).reshape(self.batch, -1).sum(1)

    def book(self, kind: str, original, grad, inputs, densities) -> None:
        """Book ``Σ original·grad − Σ_i inputs_i·densities_i`` per sample under ``kind``."""
        amount = self._per_sample(original, grad)
        for value, density in zip(inputs, densities):
            if density is not None:
                amount = amount - self._per_sample(value, density)
        previous = self.absorbed.get(kind)
        self.absorbed[kind] = amount if previous is None else previous + amount


class _Switch:
    """Mutable state shared by a context and its gates: ``relevance=True`` selects the LRP rules;
    ``ledger`` (a :class:`Ledger` or ``None``) books what the rules absorb."""

    __slots__ = ("relevance", "ledger")

    def __init__(self) -> None:
        self.relevance = False
        self.ledger: Ledger | None = None


class _Gate(torch.autograd.Function):
    """Forward: ``original``; backward: gradient to ``original`` or ``rule`` to ``inputs``."""

    @staticmethod
    def forward(ctx, switch: _Switch, rule: Callable, kind: str | None, original: torch.Tensor, *inputs: torch.Tensor):
        ctx.switch, ctx.rule, ctx.kind = switch, rule, kind
        ctx.save_for_backward(original, *inputs)
        return original.view_as(original)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        saved = ctx.saved_tensors
        if not ctx.switch.relevance:
            return (None, None, None, grad) + (None,) * (len(saved) - 1)
        densities = ctx.rule(grad, *saved)
        ledger = ctx.switch.ledger
        if ledger is not None and ctx.kind is not None:
            ledger.book(ctx.kind, saved[0], grad, saved[1:], densities)
        return (None, None, None, None, *densities)


def gate(switch: _Switch, rule: Callable, original: torch.Tensor, *inputs: torch.Tensor, kind: str | None = None) -> torch.Tensor:
    """``original`` whose relevance backward is ``rule(grad, original, *inputs) -> densities of inputs``.

    ``kind`` names the operation for the relevance budget (``None``: not booked, for rules that
    conserve by construction, such as one half of the uniform rule).
    """
    return _Gate.apply(switch, rule, kind, original, *inputs)


def safe_divide(numerator: torch.Tensor, denominator: torch.Tensor, stabilizer: float = 1e-9) -> torch.Tensor:
    """``numerator / (denominator + stabilizer)``, zero where ``denominator == 0``.

    The value of Chefer et al.'s ``safe_divide`` (whose ``clamp(min=s) + clamp(max=s)`` is
    ``denominator + s``), in fewer passes over the tensors.
    """
    den = denominator + stabilizer
    den = torch.where(den == 0, stabilizer, den)
    return torch.where(denominator == 0, 0.0, numerator / den)


def _ratio(numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """``numerator / denominator``, zero where ``denominator == 0`` (no stabiliser: exact where defined)."""
    return torch.where(denominator == 0, 0.0, numerator / denominator)


# ----------------------------------------------------------------------------- rules
# Each rule: (grad at the output, output value, *inputs) -> tuple of densities, one per input.


def epsilon_linear(weight: torch.Tensor, epsilon: float) -> Callable:
    """LRP-ε for ``z = x Wᵀ + b``: ``R_x = x ⊙ Wᵀ(R_z / (z + ε·sign z))`` (bias absorbs its share)."""

    def rule(grad, z, x):
        if epsilon > 0:  # z / (z + ε·sign z) = |z| / (|z| + ε), and 0 at z = 0
            magnitude = z.abs()
            factor = magnitude / (magnitude + epsilon)
        else:  # LRP-0: the gradient, except through outputs that are exactly 0 (they carry no relevance)
            factor = (z != 0).to(z.dtype)
        return (torch.matmul(grad * factor, weight.to(grad.dtype)),)

    return rule


def gradient_linear(weight: torch.Tensor) -> Callable:
    """The ordinary gradient through ``z = x Wᵀ + b`` (density ``Wᵀ g``): the bias keeps its share
    ``b·g`` of the relevance, which the budget books."""

    def rule(grad, z, x):
        return (torch.matmul(grad, weight.to(grad.dtype)),)

    return rule


def alpha1_beta0_linear(weight: torch.Tensor) -> Callable:
    """LRP-αβ with α=1, β=0 (Chefer et al. 2021, bias ignored): positive contributions only.

    ``R_x_j = Σ_i (x_j w_ij)⁺ / Σ_j' (x_j' w_ij')⁺ · R_z_i`` with ``R_z = z ⊙ grad``; the density is
    ``(S W⁺)_j`` where ``x_j > 0`` and ``(S W⁻)_j`` where ``x_j < 0``.

    The weights' positive and negative parts are split once per context, and the divide is
    :func:`safe_divide` for a denominator that is never negative (a sum of positive parts), in
    fewer passes over the activations.
    """
    parts: dict = {}

    def rule(grad, z, x):
        key = grad.dtype
        if key not in parts:
            w = weight.to(grad.dtype)
            parts[key] = (w.clamp(min=0), w.clamp(max=0))
        positive, negative = parts[key]
        upward = x > 0
        px, nx = torch.where(upward, x, 0.0), torch.where(upward, 0.0, x)
        denominator = F.linear(px, positive).add_(F.linear(nx, negative))  # ≥ 0
        s = (z * grad).div_(denominator + 1e-9).masked_fill_(denominator == 0, 0.0)
        return (torch.where(upward, torch.matmul(s, positive), torch.matmul(s, negative)),)

    return rule


def layer_norm_std_constant(weight: torch.Tensor | None, eps: float) -> Callable:
    """AttnLRP's LayerNorm rule: the normalising std is a constant, the rest is linear.

    Density of ``y = (x − mean(x)) / std · w + b`` with ``std`` held fixed:
    ``(w·g − mean(w·g)) / std`` over the normalised (last) axis.
    """

    def rule(grad, y, x):
        std = torch.sqrt(x.var(dim=-1, keepdim=True, unbiased=False) + eps)
        wg = grad if weight is None else grad * weight.to(grad.dtype)
        return ((wg - wg.mean(dim=-1, keepdim=True)) / std,)

    return rule


def identity(grad, y, x):
    """Identity rule ``R_x = R_y`` for an element-wise map ``y = f(x)``: density ``y·g / x`` (0 where ``x = 0``)."""
    return ((y * grad).div_(x).masked_fill_(x == 0, 0.0),)


def softmax_gradient(grad, weights, scores):
    """The ordinary softmax gradient, ``A ⊙ (g − Σ_j A_j g_j)`` over the last axis: AttnLRP's softmax
    rule in gradient × input form (attached only when the budget books what it absorbs)."""
    weights = weights.to(grad.dtype)
    return (weights * (grad - (weights * grad).sum(dim=-1, keepdim=True)),)


def pass_through(grad, y, x):
    """``y = x + c`` with ``c`` a constant (an additive attention bias or mask): ``x`` gets the
    density unchanged, so ``c``'s share ``c·g`` is absorbed."""
    return (grad,)


def uniform_half(grad, y, x):
    """Half the relevance to this operand of a bilinear product (uniform rule; the other half to the other)."""
    return (grad * 0.5,)


def no_relevance(grad, y, x):
    """The operand is held constant: it receives no relevance."""
    return (torch.zeros_like(grad),)


def normalised_add(grad, z, a, b):
    """Chefer et al.'s addition rule, per sample.

    First ``R_a = a ⊙ g``, ``R_b = b ⊙ g`` (proportional); then each operand is rescaled so the two
    sums stand as ``|ΣR_a| : |ΣR_b|`` and add up to ``ΣR_z``. The sums run over every axis but the
    batch axis.
    """
    dims = tuple(range(1, grad.dim()))
    sum_a, sum_b = (a * grad).sum(dims, keepdim=True), (b * grad).sum(dims, keepdim=True)
    total = sum_a + sum_b
    scale = sum_a.abs() + sum_b.abs()
    fact_a = safe_divide(sum_a.abs(), scale) * total
    fact_b = safe_divide(sum_b.abs(), scale) * total
    return grad * safe_divide(fact_a, sum_a), grad * safe_divide(fact_b, sum_b)
