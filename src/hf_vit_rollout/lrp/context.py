"""The relevance context: attaches LRP rules to a ``transformers`` ViT for one call, then undoes it.

Inside ``with RelevanceContext(model, ATTNLRP) as ctx:`` a forward pass of the model builds one
autograd graph that serves two backward passes: ordinary gradients (default), and relevance
(:meth:`RelevanceContext.relevance_grad`, which switches every rule on for that pass). Nothing of
the model's code is copied or replaced: the rules are attached by

* forward hooks that substitute the output of every ``nn.Linear``, ``nn.LayerNorm`` and element-wise
  activation module by a gate with the same value (see :mod:`hf_vit_rollout.lrp.rules`);
* the attention function :func:`~hf_vit_rollout.lrp.attention.relevance_attention`, which the
  capture's registered attention function (``AttentionInterface``) runs for this thread's recorded
  layers; the context enters an :class:`~hf_vit_rollout.capture.AttentionCapture` of its own when
  the thread has none over the same layers;
* for the normalised addition rule only, a thread-local ``TorchFunctionMode`` that gates additions of
  two equally shaped ``(B, N, D)`` tensors inside encoder layers (the residual connections);
* a forward pre-hook on the first encoder layer that makes its input hidden states a fresh leaf
  (:attr:`RelevanceContext.inputs`): relevance is read there, ``R = inputs ⊙ relevance_grad``.

Thread safety: hooks, the attention function and the addition mode act only for the thread that
entered the context; other threads running the same model meanwhile get their usual outputs and
gradients (what they observe of the capture's model-level switch is described in
:mod:`hf_vit_rollout.capture`). On exit (also on error) hooks are removed and the mode is popped.
"""

from __future__ import annotations

import threading

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from .. import capture as capture_module
from ..capture import AttentionCapture, find_attention_modules
from . import attention as attention_fn
from .rules import (
    ATTNLRP,
    CHEFER2021,
    CP_LRP,
    Ledger,
    RuleSet,
    _ratio,
    _Switch,
    alpha1_beta0_linear,
    epsilon_linear,
    gate,
    gradient_linear,
    identity,
    layer_norm_std_constant,
    no_relevance,
    normalised_add,
    pass_through,
    softmax_gradient,
    uniform_half,
)


def _activation_classes() -> tuple[type, ...]:
    from transformers.activations import ACT2CLS

    classes = {nn.GELU, nn.ReLU, nn.SiLU, nn.Mish, nn.Tanh, nn.LeakyReLU}
    for entry in ACT2CLS.values():
        cls = entry[0] if isinstance(entry, tuple) else entry
        if isinstance(cls, type) and issubclass(cls, nn.Module):
            classes.add(cls)
    return tuple(classes)


def encoder_layers(root: nn.Module, attention_modules=None) -> list[nn.Module]:
    """The encoder layers (blocks) of ``root`` in order: the ``nn.ModuleList`` entries holding attention modules."""
    if attention_modules is None:
        attention_modules = find_attention_modules(root)
    names = [name for name, _, _ in attention_modules]
    layers = []
    for list_name, module in root.named_modules():
        if not isinstance(module, nn.ModuleList):
            continue
        prefix = f"{list_name}." if list_name else ""
        for index, layer in enumerate(module):
            if any(name.startswith(f"{prefix}{index}.") for name in names):
                layers.append(layer)
    return layers


def check_supported(config) -> None:
    """Refuse configurations whose feed-forward multiplies two branches inline (no module for a rule)."""
    vision = getattr(config, "vision_config", None) or config
    for flag in ("use_swiglu_ffn", "use_gated_mlp"):
        if getattr(vision, flag, False):
            raise ValueError(
                f"{type(config).__name__} has {flag}=True: its gated feed-forward multiplies two branches "
                "element-wise inside the model code, where no LRP rule can be attached; LRP methods support "
                "plain MLP blocks only (use rollout, grad_rollout or gae for this model)"
            )


class _ResidualAdds(TorchFunctionMode):
    """Gates ``a + b`` of two equally shaped 3-D tensors while an encoder layer runs (owner thread only)."""

    _ADDS = {torch.add, torch.Tensor.add, torch.Tensor.__add__, torch.Tensor.__radd__}

    def __init__(self, context: RelevanceContext):
        super().__init__()
        self.context = context

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func in self._ADDS and not kwargs and len(args) == 2 and self.context._layer_depth > 0:
            a, b = args
            if (
                isinstance(a, torch.Tensor)
                and isinstance(b, torch.Tensor)
                and a.dim() == 3
                and a.shape == b.shape == out.shape
                and out.requires_grad
            ):
                return gate(self.context.switch, normalised_add, out, a, b, kind="addition")
        return out


class RelevanceContext:
    """Context manager attaching a :class:`RuleSet` to a model (see the module docstring).

    Args:
        model: a ``transformers`` ViT-family model (restored on exit).
        rules: :data:`ATTNLRP` or :data:`CHEFER2021` (or another :class:`RuleSet`).
        root: the vision tower whose attention maps and encoder input are recorded (default ``model``).
        attention_modules: :func:`~hf_vit_rollout.capture.find_attention_modules` of ``root``, if known.
        budget: also attach the bookkeeping gates the relevance budget needs (AttnLRP's softmax
            rule and additive attention biases as gates of their own); a relevance pass then books
            what each kind of rule absorbs when a :class:`~hf_vit_rollout.lrp.rules.Ledger` is given
            to :meth:`relevance_grad`. The values and relevances are the same either way.

    Attributes (valid after a forward pass inside the context):
        inputs: ``(B, N, D)`` leaf tensor: the hidden states entering the first encoder layer.
        attentions: the ``(B, H, N, N)`` attention probabilities of every layer of ``root``, in
            forward order, attached to the graph.
        attention_scores: the ``(B, H, N, N)`` softmax inputs of the same layers.
    """

    def __init__(
        self, model: nn.Module, rules: RuleSet, root: nn.Module | None = None, attention_modules=None, budget: bool = False
    ):
        check_supported(model.config)
        self.model, self.rules, self.budget = model, rules, budget
        self.root = model if root is None else root
        if attention_modules is None:  # as the explainer finds them (windowed models: block by block)
            from ..families import Family, family_for

            attention_modules = (family_for(model.config) or Family()).attention_setup(self.root)[2]
        if any(capture_module._eager_function(module) is None for _, module, _ in attention_modules):
            raise ValueError(
                f"{type(model).__name__}'s attention modules do not dispatch through transformers' "
                "AttentionInterface (they compute q·kᵀ, the softmax and A·v inline in their own forward), so no "
                "LRP rule can be attached to their attention; use a gradient method (grad_rollout, gae, legrad)"
            )
        self._modules = attention_modules
        self._attention_ids = {id(module) for _, module, _ in attention_modules}
        self._layers = encoder_layers(self.root, attention_modules)
        if not self._layers:
            raise ValueError(f"{type(model).__name__} has no encoder layers with self-attention to attach LRP rules to")
        self.switch = _Switch()
        self.inputs: torch.Tensor | None = None
        self.attentions: list[torch.Tensor] = []
        self.attention_scores: list[torch.Tensor] = []
        self._owner: int | None = None
        self._layer_depth = 0
        self._handles: list = []
        self._mode: _ResidualAdds | None = None
        self._capture: AttentionCapture | None = None
        self._previous_function = None
        self._entered = False

    # ------------------------------------------------------------------ used by the attention function
    def score_operands(self, query: torch.Tensor, key: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``q, k`` of ``q·kᵀ``: the uniform rule gives each half the product's relevance."""
        return gate(self.switch, uniform_half, query, query), gate(self.switch, uniform_half, key, key)

    def biased_scores(self, scores: torch.Tensor, products: torch.Tensor) -> torch.Tensor:
        """``scores = products + bias`` (an additive attention mask or position bias): booked in the
        budget as absorbed by the bias (no gate without ``budget``: the gradient passes the same)."""
        if not self.budget:
            return scores
        return gate(self.switch, pass_through, scores, products, kind="attention_bias")

    def softmax_output(self, weights: torch.Tensor, scores: torch.Tensor, module: nn.Module) -> torch.Tensor:
        """Attach the softmax rule to ``weights = softmax(scores)``; record both if ``module`` is in the root."""
        if self.rules.softmax == "identity":
            weights = gate(self.switch, identity, weights, scores, kind="softmax")
        elif self.rules.softmax == "gradient" and self.budget:
            weights = gate(self.switch, softmax_gradient, weights, scores, kind="softmax")
        if id(module) in self._attention_ids:
            self.attentions.append(weights)
            self.attention_scores.append(scores)
        return weights

    def mixing_operands(self, weights: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``A, v`` of ``A·v``: half the relevance each (uniform rule), or all to ``v`` when the
        attention weights are held constant (``softmax="constant"``)."""
        if self.rules.softmax == "constant":
            return gate(self.switch, no_relevance, weights, weights), value
        return gate(self.switch, uniform_half, weights, weights), gate(self.switch, uniform_half, value, value)

    # ------------------------------------------------------------------ hooks
    def _owned(self) -> bool:
        return threading.get_ident() == self._owner

    def _linear_rule(self, module: nn.Linear):
        if self.rules.linear == "epsilon":
            return epsilon_linear(module.weight.detach(), self.rules.epsilon)
        if self.rules.linear == "gradient":
            return gradient_linear(module.weight.detach())
        return alpha1_beta0_linear(module.weight.detach())

    def _rule_for(self, module: nn.Module, activations: tuple[type, ...]):
        """``(rule, budget kind)`` for ``module``, or ``None`` if it gets no rule."""
        if isinstance(module, nn.Linear):
            return self._linear_rule(module), "linear"
        if isinstance(module, nn.LayerNorm):
            if self.rules.layer_norm == "identity":
                return identity, "layer_norm"
            weight = None if module.weight is None else module.weight.detach()
            return layer_norm_std_constant(weight, module.eps), "layer_norm"
        if isinstance(module, activations):
            return identity, "activation"
        return None

    def _output_hook(self, rule, kind: str):
        def hook(module, args, output):
            if not self._owned() or not args or not isinstance(output, torch.Tensor):
                return None
            return gate(self.switch, rule, output, args[0], kind=kind)

        return hook

    def _input_hook(self, module, args, kwargs):
        if not self._owned():
            return None
        if args:
            self.inputs = args[0].detach().requires_grad_(True)
            return (self.inputs, *args[1:]), kwargs
        self.inputs = kwargs["hidden_states"].detach().requires_grad_(True)
        return args, {**kwargs, "hidden_states": self.inputs}

    def _enter_layer(self, module, args):
        if self._owned():
            self._layer_depth += 1

    def _leave_layer(self, module, args, output):
        if self._owned():
            self._layer_depth -= 1

    # ------------------------------------------------------------------ enter / exit
    def _captured(self) -> bool:
        """Whether this thread already records the root's attention layers (e.g. the explainer's capture)."""
        return any(self._attention_ids <= r.module_ids for r in capture_module._active_recorders())

    def __enter__(self) -> RelevanceContext:
        self._owner = threading.get_ident()
        self.inputs, self.attentions, self.attention_scores, self._layer_depth = None, [], [], 0
        try:
            if not self._captured():
                capture = AttentionCapture(self.model, lambda layer, weights: None, self.root, self._modules)
                capture.__enter__()
                self._capture = capture  # only once entered: _restore must not release it twice
            activations = _activation_classes()
            for module in self.model.modules():
                ruled = self._rule_for(module, activations)
                if ruled is not None:
                    self._handles.append(module.register_forward_hook(self._output_hook(*ruled)))
            self._handles.append(self._layers[0].register_forward_pre_hook(self._input_hook, with_kwargs=True))
            if self.rules.add == "normalised":
                for layer in self._layers:
                    self._handles.append(layer.register_forward_pre_hook(self._enter_layer))
                    self._handles.append(layer.register_forward_hook(self._leave_layer, always_call=True))
                self._mode = _ResidualAdds(self)
                self._mode.__enter__()
            self._previous_function = capture_module.set_attention_function(attention_fn.relevance_attention)
            self._previous_context = attention_fn.active_context()
            attention_fn.set_active_context(self)
            self._entered = True
        except BaseException:
            self._restore()
            raise
        return self

    def _restore(self) -> None:
        if self._entered:
            attention_fn.set_active_context(self._previous_context)
            capture_module.set_attention_function(self._previous_function)
            self._entered = False
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        if self._mode is not None:
            self._mode.__exit__(None, None, None)
            self._mode = None
        if self._capture is not None:
            capture, self._capture = self._capture, None
            capture.__exit__(None, None, None)
        self._layer_depth = 0

    def __exit__(self, exc_type, exc, tb) -> None:
        self._restore()

    # ------------------------------------------------------------------ the relevance pass
    def initial_relevance(self, scores: torch.Tensor) -> torch.Tensor:
        """``(B,)`` relevance the rule set puts on the explained ``scores`` (its ``start``)."""
        return scores.detach() if self.rules.start == "score" else torch.ones_like(scores).detach()

    def relevance_grad(
        self,
        scores: torch.Tensor,
        targets,
        initial: torch.Tensor | None = None,
        retain_graph=False,
        ledger: Ledger | None = None,
    ):
        """Relevance densities of ``targets`` for the explained ``scores``.

        Args:
            scores: ``(B,)`` explained scores (e.g. a logit per image), from the forward pass run
                inside the context.
            targets: tensors of the graph (e.g. ``[ctx.inputs]`` or ``ctx.attentions``).
            initial: ``(B,)`` relevance put on the scores; default from the rule set's ``start``
                (the scores themselves for AttnLRP; one unit per image for Chefer et al.).
            retain_graph: keep the graph for a further backward pass.
            ledger: books what each kind of rule absorbs during this pass (see ``budget``).

        Returns:
            One density per target; the relevance of a target ``t`` is ``t ⊙ density``.
        """
        if initial is None:
            initial = self.initial_relevance(scores)
        grad_outputs = _ratio(initial.to(scores.dtype).detach(), scores.detach())
        self.switch.relevance, self.switch.ledger = True, ledger
        try:
            return torch.autograd.grad(scores, list(targets), grad_outputs=grad_outputs, retain_graph=retain_graph)
        finally:
            self.switch.relevance, self.switch.ledger = False, None
