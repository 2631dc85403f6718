"""Attention Flow (Abnar & Zuidema, 2020, "Quantifying Attention Flow in Transformers").

Definition
----------
For one sample with layers ``l = 0 .. L-1`` build the layered graph with nodes ``(l, i)`` for
``l = 0 .. L`` and tokens ``i``. Each layer contributes the edges ``(l, j) → (l+1, i)`` with capacity
``Â_l[i, j]``, where ``Â_l = norm(0.5·fuse(A_l) + 0.5·I)`` is exactly the per-layer map of
:func:`~hf_vit_rollout.methods.rollout.rollout_layer` (same ``head_fusion``, ``discard_ratio`` and
protected class-token entry). The output side is a super sink ``t`` fed by ``(L, i) → t`` with
capacity ``w_i`` (``output_weights``): one-hot on the class token for CLS models, which makes ``t``
equivalent to the node ``(L, cls)``; uniform over patch tokens for models without one, as in rollout.
The relevance of input token ``j`` is the value of the maximum flow from ``(0, j)`` to ``t``.

Implementation
--------------
* One graph per sample, built vectorised (numpy) and shared by all ``N`` sources: the reference code
  rebuilt a ``networkx`` graph and ran one Edmonds–Karp per (input, output) pair.
* Only the sink's tokens of the last layer are kept (edges into ``(L, i)`` with ``w_i = 0`` cannot
  reach ``t``); zero-capacity edges (everything ``discard_ratio`` removed) are dropped, so a higher
  ``discard_ratio`` makes the graph sparser and the solve faster.
* Sources whose flow is provably zero (no edge leaves them) are skipped.
* The max-flow itself is ``scipy.sparse.csgraph.maximum_flow`` (Dinic's algorithm, compiled).
  It needs integer capacities: every capacity ``c`` is replaced by ``floor(c·FLOW_SCALE)``. The
  integer flow divided by ``FLOW_SCALE`` is feasible for the real capacities, and the real maximum
  exceeds it by less than ``|C| / FLOW_SCALE`` for the integer minimum cut ``C``; so each result
  ``f`` satisfies ``f ≤ true ≤ f + num_edges / FLOW_SCALE`` (:func:`flow_error_bound`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from .rollout import rollout_layer

logger = logging.getLogger(__name__)

#: Capacities are scaled by this and floored to int32 for the compiled max-flow (max capacity 1).
FLOW_SCALE = 2**30


def flow_error_bound(num_edges: int) -> float:
    """Largest possible shortfall of :func:`max_flows_to_sink` caused by integer capacity scaling."""
    return num_edges / FLOW_SCALE


def layered_graph(layers: Sequence[np.ndarray], output_weights: np.ndarray):
    """Capacity matrix of the layered attention graph of one sample.

    Args:
        layers: ``L`` row-stochastic ``(N, N)`` arrays ``Â_l``, first layer first.
        output_weights: ``(N,)`` non-negative weights of the output tokens (capacities into the sink).

    Returns:
        ``(graph, sink)``: a ``scipy.sparse.csr_matrix`` of int32 capacities over ``(L+1)·N + 1``
        nodes (node ``(l, i)`` has index ``l·N + i``; the sink is the last node) and the sink index.
    """
    import scipy.sparse as sp

    num_layers = len(layers)
    n = layers[0].shape[-1]
    sink = (num_layers + 1) * n
    live_out = np.flatnonzero(output_weights > 0)
    rows, cols, caps = [], [], []
    for layer, a in enumerate(layers):
        targets = live_out if layer == num_layers - 1 else np.arange(n)
        block = np.asarray(a, dtype=np.float64)[targets]  # (len(targets), N): [i, j] = cap (l, j) -> (l+1, i)
        ti, tj = np.nonzero(block > 0)
        rows.append(layer * n + tj)
        cols.append((layer + 1) * n + targets[ti])
        caps.append(block[ti, tj])
    rows.append(num_layers * n + live_out)
    cols.append(np.full(live_out.shape, sink))
    caps.append(np.asarray(output_weights, dtype=np.float64)[live_out])
    r, c, cap = np.concatenate(rows), np.concatenate(cols), np.concatenate(caps)
    int_cap = np.floor(np.minimum(cap, 1.0) * FLOW_SCALE).astype(np.int32)
    keep = int_cap > 0
    graph = sp.csr_matrix((int_cap[keep], (r[keep], c[keep])), shape=(sink + 1, sink + 1))
    graph.sum_duplicates()
    return graph, sink


def max_flows_to_sink(
    layers: Sequence[np.ndarray],
    output_weights: np.ndarray,
    progress=None,
) -> np.ndarray:
    """Max-flow value from every input token ``(0, j)`` to the sink, for one sample.

    Args:
        layers: ``L`` ``(N, N)`` row-stochastic arrays, first layer first.
        output_weights: ``(N,)`` capacities into the sink (sum at most one).
        progress: optional callable invoked with ``1`` after each source (e.g. ``tqdm.update``).

    Returns:
        ``(N,)`` float64 flows, each within ``flow_error_bound(num_edges)`` below the exact value.
    """
    from scipy.sparse.csgraph import maximum_flow

    graph, sink = layered_graph(layers, output_weights)
    n = layers[0].shape[-1]
    out_degree = np.diff(graph.indptr)
    flows = np.zeros(n, dtype=np.float64)
    for j in range(n):
        if out_degree[j] > 0:
            flows[j] = maximum_flow(graph, j, sink, method="dinic").flow_value / FLOW_SCALE
        if progress is not None:
            progress(1)
    return flows


def flow_from_layers(
    layers: Sequence[torch.Tensor],
    output_weights: torch.Tensor,
    progress: bool = False,
) -> torch.Tensor:
    """Attention Flow over already residual-adjusted, row-stochastic layer maps.

    Args:
        layers: one ``(B, N, N)`` map ``Â_l`` per layer, first layer first.
        output_weights: ``(N,)`` capacities into the sink (sum at most one).
        progress: show a ``tqdm`` progress bar over samples × sources.

    Returns:
        ``(B, N)`` float32 tensor of flow values in ``[0, 1]``.
    """
    if not layers:
        raise ValueError("no attention layers were given")
    batch, n, _ = layers[0].shape
    weights = output_weights.detach().double().cpu().numpy()
    arrays = [layer.detach().double().cpu().numpy() for layer in layers]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=batch * n, desc="attention flow", unit="source")
    try:
        result = [
            max_flows_to_sink([a[b] for a in arrays], weights, bar.update if bar else None) for b in range(batch)
        ]
    finally:
        if bar is not None:
            bar.close()
    return torch.from_numpy(np.stack(result)).float().to(layers[0].device)


def attention_flow(
    attentions: Sequence[torch.Tensor],
    head_fusion: str = "mean",
    discard_ratio: float = 0.0,
    keep_index: int | None = 0,
    output_weights: torch.Tensor | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Attention Flow relevance of every input token (see the module docstring for the definition).

    Args:
        attentions: one ``(B, H, N, N)`` tensor per layer, first layer first.
        head_fusion: ``"mean"``, ``"min"`` or ``"max"``.
        discard_ratio: fraction of the weakest fused attentions zeroed in each layer, in ``[0, 1)``.
        keep_index: token whose self-attention is never discarded (the class token), or ``None``.
        output_weights: ``(N,)`` capacities into the sink; default one-hot on token 0 (CLS).
        progress: show a ``tqdm`` progress bar over samples × sources.

    Returns:
        ``(B, N)`` float32 tensor of flow values in ``[0, 1]``.
    """
    if not attentions:
        raise ValueError("no attention layers were given")
    n = attentions[0].shape[-1]
    if output_weights is None:
        output_weights = torch.zeros(n)
        output_weights[0] = 1.0
    layers = [rollout_layer(a, head_fusion, discard_ratio, keep_index) for a in attentions]
    return flow_from_layers(layers, output_weights, progress)
