"""Explanation methods: pure functions over attention tensors, and the registry that names them.

Most methods are a chain of per-layer ``(B, N, N)`` matrices ``M_l`` built from the layer's attention
(and, for class-specific methods, its gradient or its LRP relevance): rollout, gradient rollout, GAE
and Transformer Attribution multiply them (``R = M_L ··· M_s``), attention flow solves a max-flow
over them; raw attention reads one layer; LeGrad sums one ``(B, N)`` row per layer; AttnLRP, CP-LRP
and LibraGrad read the relevance at the network's input. Each :class:`MethodSpec` says what it needs
from the pass (:data:`NEEDS`) and how layers combine, so adding a method is one function plus one
:data:`METHODS` entry; the stages have no per-method branch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .attention import head_maps, raw_attention, raw_attention_layer
from .attribution import transformer_attribution, transformer_attribution_layer
from .flow import (
    FLOW_SCALE,
    SCIPY_FLOW_SCALE,
    attention_flow,
    flow_error_bound,
    flow_from_layers,
)
from .gradient import gae, gae_layer, gradient_rollout, gradient_rollout_layer
from .layers import check_head, check_layer, check_start_layer
from .legrad import legrad, legrad_layer, shift_to_patch_minimum
from .rollout import (
    HEAD_FUSIONS,
    add_residual_and_normalize,
    attention_rollout,
    chain_layers,
    check_head_fusion,
    discard_lowest,
    fuse_heads,
    kth_smallest,
    rollout_layer,
    token_relevance,
)


def _rollout_layer_map(attention, grad, head_fusion, discard_ratio, keep_index):
    return rollout_layer(attention, head_fusion, discard_ratio, keep_index)


#: What a method can need from the pass: the attention maps; their gradients (ordinary backward
#: pass); their LRP relevance; the LRP relevance of the tokens at the first encoder layer's input;
#: every layer read out through the model's own head, each attention map's gradient coming from its
#: own layer's readout only (LeGrad; :class:`~hf_vit_rollout.readout.LayerReadout`).
NEEDS = ("attention", "attention_gradient", "attention_relevance", "input_relevance", "layer_readout")
#: How a method combines what the pass gave: multiply the per-layer maps (``"product"``), max-flow
#: through them (``"flow"``), one layer's map (``"layer"``), the input relevance itself (``"input"``),
#: or add up one ``(B, N)`` row per layer (``"sum"``).
COMBINES = ("product", "flow", "layer", "input", "sum")
#: What a class-specific method explains of a class: its logit, or its softmax probability.
SCORES = ("logit", "probability")


@dataclass(frozen=True)
class MethodSpec:
    """A named explanation method.

    Attributes:
        name: registry key.
        needs_gradient: whether a target score is back-propagated (class-specific method).
        layer_map: ``(attention, grad | None, head_fusion, discard_ratio, keep_index) -> (B, N, N)``
            for ``"product"`` and ``"flow"`` (for methods that need attention relevance, the first
            argument is the relevance of the attention map); ``None`` otherwise.
        combine: one of :data:`COMBINES`.
        default_discard_ratio: used when the caller gives none.
        summary: one line for help texts.
        needs: what the pass must provide, a subset of :data:`NEEDS`; default the attention maps,
            plus their gradients for class-specific methods.
        rules: name of the LRP rule set (:data:`hf_vit_rollout.lrp.RULE_SETS`) for the relevance needs.
        score: what is explained of a class target (:data:`SCORES`): its logit, or its softmax
            probability (single-label classifiers; text and callable targets are taken as they are).

    ``layer_map`` of a ``"sum"`` method returns one ``(B, N)`` row per layer instead of a matrix.
    """

    name: str
    needs_gradient: bool
    layer_map: Callable | None
    combine: str
    default_discard_ratio: float
    summary: str
    needs: frozenset = frozenset()
    rules: str | None = None
    score: str = "logit"

    def __post_init__(self):
        if not self.needs:
            default = {"attention", "attention_gradient"} if self.needs_gradient else {"attention"}
            object.__setattr__(self, "needs", frozenset(default))
        unknown = set(self.needs) - set(NEEDS)
        if unknown or self.combine not in COMBINES:
            raise ValueError(f"method {self.name!r}: unknown needs {sorted(unknown)} or combine {self.combine!r}")
        relevance = self.needs & {"attention_relevance", "input_relevance"}
        if bool(relevance) != (self.rules is not None):
            raise ValueError(f"method {self.name!r}: relevance needs and an LRP rule set go together")
        if self.score not in SCORES or ("layer_readout" in self.needs and relevance):
            raise ValueError(f"method {self.name!r}: unknown score {self.score!r}, or a layer readout with LRP rules")

    @property
    def takes_start_layer(self) -> bool:
        """Whether ``start_layer`` applies: methods that multiply or add up per-layer terms."""
        return self.combine in ("product", "sum")


METHODS: dict[str, MethodSpec] = {
    spec.name: spec
    for spec in (
        MethodSpec("rollout", False, _rollout_layer_map, "product", 0.9, "Attention Rollout (Abnar & Zuidema 2020)"),
        MethodSpec(
            "grad_rollout", True, gradient_rollout_layer, "product", 0.9, "gradient-weighted rollout (classic)"
        ),
        MethodSpec("gae", True, gae_layer, "product", 0.0, "Chefer et al. 2021, generic attention explainability"),
        MethodSpec("flow", False, _rollout_layer_map, "flow", 0.0, "Attention Flow, exact max-flow (Abnar 2020)"),
        MethodSpec(
            "transformer_attribution",
            True,
            transformer_attribution_layer,
            "product",
            0.0,
            "Chefer et al. 2021 (CVPR), LRP relevance × gradient of attention, rolled out",
            needs=frozenset({"attention", "attention_gradient", "attention_relevance"}),
            rules="chefer2021",
        ),
        MethodSpec(
            "attnlrp",
            True,
            None,
            "input",
            0.0,
            "AttnLRP (Achtibat et al. 2024), relevance of the input tokens",
            needs=frozenset({"input_relevance"}),
            rules="attnlrp",
        ),
        MethodSpec(
            "cp_lrp",
            True,
            None,
            "input",
            0.0,
            "CP-LRP (Ali et al. 2022), AttnLRP's rules with the attention weights held constant",
            needs=frozenset({"input_relevance"}),
            rules="cp_lrp",
        ),
        MethodSpec(
            "libragrad",
            True,
            None,
            "input",
            0.0,
            "LibraGrad (Mehri et al. 2025), Input×Gradient of the class probability with balanced gradients",
            needs=frozenset({"input_relevance"}),
            rules="libragrad",
            score="probability",
        ),
        MethodSpec(
            "legrad",
            True,
            legrad_layer,
            "sum",
            0.0,
            "LeGrad (Bousselham et al. 2025), every layer's readout gradient on its own attention",
            needs=frozenset({"attention", "attention_gradient", "layer_readout"}),
        ),
        MethodSpec("attention", False, None, "layer", 0.0, "raw attention of one layer and head, from the output token"),
    )
}

__all__ = [
    "COMBINES",
    "FLOW_SCALE",
    "HEAD_FUSIONS",
    "METHODS",
    "NEEDS",
    "MethodSpec",
    "SCIPY_FLOW_SCALE",
    "SCORES",
    "add_residual_and_normalize",
    "attention_flow",
    "attention_rollout",
    "chain_layers",
    "check_head",
    "check_head_fusion",
    "check_layer",
    "check_start_layer",
    "discard_lowest",
    "flow_error_bound",
    "flow_from_layers",
    "fuse_heads",
    "gae",
    "gae_layer",
    "gradient_rollout",
    "gradient_rollout_layer",
    "head_maps",
    "kth_smallest",
    "legrad",
    "legrad_layer",
    "raw_attention",
    "raw_attention_layer",
    "rollout_layer",
    "shift_to_patch_minimum",
    "token_relevance",
    "transformer_attribution",
    "transformer_attribution_layer",
]
