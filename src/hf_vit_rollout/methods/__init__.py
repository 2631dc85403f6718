"""Explanation methods: pure functions over attention tensors, and the registry that names them.

Every method is a chain of per-layer ``(B, N, N)`` matrices ``M_l`` built from the layer's attention
(and, for class-specific methods, its gradient): rollout and gradient rollout multiply them
(``R = M_L ··· M_1``), attention flow solves a max-flow over them. Adding a method is one
``layer_map`` function plus one :data:`METHODS` entry; the explainer has no per-method branches.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .flow import FLOW_SCALE, SCIPY_FLOW_SCALE, attention_flow, flow_error_bound, flow_from_layers
from .gradient import gae, gae_layer, gradient_rollout, gradient_rollout_layer
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


@dataclass(frozen=True)
class MethodSpec:
    """A named explanation method.

    Attributes:
        name: registry key.
        needs_gradient: whether a target score is back-propagated (class-specific method).
        layer_map: ``(attention, grad | None, head_fusion, discard_ratio, keep_index) -> (B, N, N)``.
        combine: ``"product"`` (relevance ``= w·M_L···M_1``) or ``"flow"`` (max-flow over the maps).
        default_discard_ratio: used when the caller gives none.
        summary: one line for help texts.
    """

    name: str
    needs_gradient: bool
    layer_map: Callable
    combine: str
    default_discard_ratio: float
    summary: str


METHODS: dict[str, MethodSpec] = {
    spec.name: spec
    for spec in (
        MethodSpec("rollout", False, _rollout_layer_map, "product", 0.9, "Attention Rollout (Abnar & Zuidema 2020)"),
        MethodSpec(
            "grad_rollout", True, gradient_rollout_layer, "product", 0.9, "gradient-weighted rollout (classic)"
        ),
        MethodSpec("gae", True, gae_layer, "product", 0.0, "Chefer et al. 2021, generic attention explainability"),
        MethodSpec("flow", False, _rollout_layer_map, "flow", 0.0, "Attention Flow, exact max-flow (Abnar 2020)"),
    )
}

__all__ = [
    "FLOW_SCALE",
    "HEAD_FUSIONS",
    "METHODS",
    "MethodSpec",
    "SCIPY_FLOW_SCALE",
    "add_residual_and_normalize",
    "attention_flow",
    "attention_rollout",
    "chain_layers",
    "check_head_fusion",
    "discard_lowest",
    "flow_error_bound",
    "flow_from_layers",
    "fuse_heads",
    "gae",
    "gae_layer",
    "gradient_rollout",
    "gradient_rollout_layer",
    "kth_smallest",
    "rollout_layer",
    "token_relevance",
]
