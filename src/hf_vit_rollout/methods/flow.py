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
With ``discard_ratio=0`` (the default) this is the paper's definition.

Implementation
--------------
* Capacities are scaled by :data:`FLOW_SCALE` (``2**50``) and floored to int64, so every push is
  exact integer arithmetic. The integer flow divided by the scale is feasible for the real
  capacities, and the real maximum exceeds it by less than ``|C| / FLOW_SCALE`` for the integer
  minimum cut ``C``; so each result ``f`` satisfies ``f ≤ true ≤ f + num_edges / FLOW_SCALE``
  (:func:`flow_error_bound`, about ``4e-10`` for 12 layers × 197 tokens).
* All ``N`` max-flows share one graph and one sink. They are solved in the reversed graph (one
  source ``t``, the sinks ``(0, j)`` one after another) by a compiled push–relabel kernel
  (:mod:`._flow_kernel`, numba, cached on disk) that *warm-starts* each sink from the previous one's
  maximum preflow; the layered structure is used for the data layout (every arc scan reads
  contiguous memory). See that module for the algorithm and why it is exact.
* Sinks are solved in an order where consecutive tokens are alike (:func:`source_order`), which
  keeps the work moved between warm starts small; the order never changes a value.
* Optionally (``workers > 1``) the sources are split into runs of that order, each solved on its
  own residual graph in a parallel thread (the kernel releases the GIL).
* Sources with no outgoing capacity have flow zero and are skipped.
* Without numba (or with ``solver="dinic"``) each source is solved from scratch with
  ``scipy.sparse.csgraph.maximum_flow`` (Dinic), on int32 capacities scaled by
  :data:`SCIPY_FLOW_SCALE` (``2**30``): the same bound with that scale.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

import numpy as np
import torch

from .rollout import rollout_layer

logger = logging.getLogger(__name__)

#: Capacities are scaled by this and floored to int64 for the compiled kernel (max capacity 1).
FLOW_SCALE = 2**50
#: Scale for ``scipy.sparse.csgraph.maximum_flow``, which takes int32 capacities.
SCIPY_FLOW_SCALE = 2**30
#: Max-flow solvers: the warm-started push–relabel kernel, or scipy's Dinic per source.
SOLVERS = ("push_relabel", "dinic")
#: Global relabel after this many relabels per node (tuned on clustered 12 × 197 graphs).
_GLOBAL_RELABEL_PER_NODE = 0.3
#: Fewest sources per parallel run.
_MIN_RUN = 32


def flow_error_bound(num_edges: int, scale: int = FLOW_SCALE) -> float:
    """Largest possible shortfall of a flow value caused by integer capacity scaling."""
    return num_edges / scale


def _check_layers(layers: Sequence[np.ndarray], output_weights: np.ndarray) -> int:
    if not len(layers):
        raise ValueError("no attention layers were given")
    n = layers[0].shape[-1]
    if any(a.shape != (n, n) for a in layers) or np.shape(output_weights) != (n,):
        raise ValueError(
            f"every layer must be an (N, N) map and output_weights an (N,) vector; got layer shapes "
            f"{sorted({tuple(a.shape) for a in layers})} and output_weights {np.shape(output_weights)}"
        )
    return n


def integer_capacities(layers: Sequence[np.ndarray], output_weights: np.ndarray, scale: int = FLOW_SCALE):
    """Scaled integer capacities of the layered graph of one sample.

    Args:
        layers: ``L`` row-stochastic ``(N, N)`` arrays ``Â_l``, first layer first.
        output_weights: ``(N,)`` non-negative weights of the output tokens (capacities into the sink).
        scale: capacities ``c`` become ``floor(min(c, 1)·scale)``.

    Returns:
        ``(capacity, top)``: ``(L, N, N)`` int64 with ``capacity[l, i, j]`` for the edge
        ``(l, j) → (l+1, i)`` (edges into last-layer tokens with zero output weight are zero: they
        cannot reach the sink), and ``(N,)`` int64 capacities ``(L, i) → t``.
    """
    _check_layers(layers, output_weights)
    weights = np.asarray(output_weights, dtype=np.float64)
    capacity = np.empty((len(layers), *layers[0].shape), dtype=np.int64)
    for layer, a in enumerate(layers):
        a = np.asarray(a, dtype=np.float64)
        if not np.isfinite(a).all() or (a < 0).any():
            raise ValueError(f"layer {layer}'s attention map has NaN, infinite or negative entries: no flow graph")
        np.floor(np.minimum(a, 1.0) * scale, out=capacity[layer], casting="unsafe")
    capacity[-1][weights <= 0] = 0
    top = np.floor(np.minimum(np.maximum(weights, 0.0), 1.0) * scale).astype(np.int64)
    return capacity, top


def layered_graph(layers: Sequence[np.ndarray], output_weights: np.ndarray, scale: int = SCIPY_FLOW_SCALE):
    """The layered graph of one sample as a sparse matrix, for ``scipy`` (and tests).

    Args:
        layers: ``L`` row-stochastic ``(N, N)`` arrays ``Â_l``, first layer first.
        output_weights: ``(N,)`` non-negative weights of the output tokens (capacities into the sink).
        scale: capacities ``c`` become ``floor(min(c, 1)·scale)`` (int32, so at most ``2**30``).

    Returns:
        ``(graph, sink)``: a ``scipy.sparse.csr_matrix`` of int32 capacities over ``(L+1)·N + 1``
        nodes (node ``(l, i)`` has index ``l·N + i``; the sink is the last node) and the sink index.
        Zero-capacity edges are left out.
    """
    import scipy.sparse as sp

    if scale > 2**30:
        raise ValueError(f"scipy's max-flow takes int32 capacities: scale must be at most 2**30, got {scale}")
    n = _check_layers(layers, output_weights)
    capacity, top = integer_capacities(layers, output_weights, scale)
    num_layers = len(layers)
    sink = (num_layers + 1) * n
    layer, ti, tj = np.nonzero(capacity)
    live = np.flatnonzero(top)
    rows = np.concatenate([layer * n + tj, num_layers * n + live])
    cols = np.concatenate([(layer + 1) * n + ti, np.full(live.shape, sink)])
    caps = np.concatenate([capacity[layer, ti, tj], top[live]]).astype(np.int32)
    graph = sp.csr_matrix((caps, (rows, cols)), shape=(sink + 1, sink + 1))
    graph.sum_duplicates()
    return graph, sink


def source_order(layers: Sequence[np.ndarray], depth: int = 4) -> np.ndarray:
    """An order of the input tokens in which consecutive tokens spread through the graph alike.

    Token ``j``'s profile is column ``j`` of ``Â_depth ··· Â_1`` (where its flow can go in the first
    ``depth`` layers); the order is a greedy nearest-neighbour chain over the cosine similarity of
    the profiles, starting at token 0. Only the speed of the warm-started solver depends on it.

    Args:
        layers: ``L`` ``(N, N)`` arrays, first layer first.
        depth: number of layers in the profile.

    Returns:
        ``(N,)`` permutation of ``range(N)``.
    """
    n = layers[0].shape[-1]
    profile = np.eye(n)
    for a in layers[:depth]:
        profile = np.asarray(a, dtype=np.float64) @ profile
    columns = profile.T
    columns = columns / np.maximum(np.linalg.norm(columns, axis=1, keepdims=True), 1e-300)
    similarity = columns @ columns.T
    order = np.empty(n, dtype=np.int64)
    taken = np.zeros(n, dtype=bool)
    current = 0
    for step in range(n):
        order[step] = current
        taken[current] = True
        if step + 1 < n:
            row = np.where(taken, -np.inf, similarity[current])
            current = int(np.argmax(row))
    return order


def _kernel():
    """The compiled kernel module, or ``None`` (with a warning, once) if numba cannot be imported."""
    global _KERNEL
    if _KERNEL is False:
        try:
            from . import _flow_kernel
        except ImportError as exc:
            logger.warning("numba is not available (%s): attention flow falls back to scipy's Dinic, much slower", exc)
            _flow_kernel = None
        _KERNEL = _flow_kernel
    return _KERNEL


_KERNEL = False


def integer_max_flows(
    capacity: np.ndarray,
    top: np.ndarray,
    sources: Sequence[int],
    progress: Callable[[int], object] | None = None,
    workers: int = 1,
) -> np.ndarray:
    """Exact integer max-flow values with the warm-started push–relabel kernel (needs numba).

    Args:
        capacity: ``(L, N, N)`` int64 capacities, ``capacity[l, i, j]`` for ``(l, j) → (l+1, i)``
            (:func:`integer_capacities`).
        top: ``(N,)`` int64 capacities ``(L, i) → t``.
        sources: input tokens to solve, in this order (:func:`source_order` makes it fast).
        progress: optional callable invoked with ``1`` after each source.
        workers: split ``sources`` into this many consecutive runs, solved in parallel threads.

    Returns:
        ``(N,)`` int64: the max-flow value of each source in ``sources`` (zero elsewhere).
    """
    kernel = _kernel()
    if kernel is None:
        raise RuntimeError("the push-relabel solver needs numba: pip install numba")
    sources = np.asarray(sources, dtype=np.int64)
    flows = np.zeros(capacity.shape[-1], dtype=np.int64)
    # a thread pays off only with enough sources to share (each run starts from zero flow)
    runs = [run for run in np.array_split(sources, max(1, min(workers, len(sources) // _MIN_RUN))) if len(run)]
    shared = kernel.shared_arrays(capacity)
    top = np.ascontiguousarray(top, dtype=np.int64)
    lock = threading.Lock()

    def solve(run):
        state = kernel.new_state(shared, top)
        for sink in run:
            flows[sink] = kernel.solve_sink(*state, int(sink), _GLOBAL_RELABEL_PER_NODE)
            if progress is not None:
                with lock:
                    progress(1)

    if len(runs) == 1:
        solve(runs[0])
    elif runs:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=len(runs), thread_name_prefix="attention-flow") as pool:
            for future in [pool.submit(solve, run) for run in runs]:
                future.result()
    return flows


def _dinic(layers, output_weights, sources, progress):
    """Max-flow values of ``sources``, each solved from scratch by scipy's Dinic."""
    from scipy.sparse.csgraph import maximum_flow

    graph, sink = layered_graph(layers, output_weights)
    flows = np.zeros(layers[0].shape[-1], dtype=np.float64)
    for j in sources:
        flows[j] = maximum_flow(graph, int(j), sink, method="dinic").flow_value / SCIPY_FLOW_SCALE
        if progress is not None:
            progress(1)
    return flows


def max_flows_to_sink(
    layers: Sequence[np.ndarray],
    output_weights: np.ndarray,
    progress: Callable[[int], object] | None = None,
    *,
    solver: str = "push_relabel",
    workers: int = 1,
) -> np.ndarray:
    """Max-flow value from every input token ``(0, j)`` to the sink, for one sample.

    Args:
        layers: ``L`` ``(N, N)`` row-stochastic arrays, first layer first.
        output_weights: ``(N,)`` capacities into the sink (sum at most one).
        progress: optional callable invoked with ``1`` after each source (e.g. ``tqdm.update``);
            sources skipped because their flow is provably zero are reported at once.
        solver: ``"push_relabel"`` (compiled, warm-started; falls back to ``"dinic"`` without numba)
            or ``"dinic"`` (scipy, one solve per source).
        workers: parallel threads for ``"push_relabel"`` (default 1). Each thread solves a run of
            the source order on its own residual graph; on the 2-core machine this was measured on,
            shared with other jobs, two threads were not faster than one.

    Returns:
        ``(N,)`` float64 flows, each at most ``flow_error_bound(num_edges)`` below the exact value
        (with ``scale=SCIPY_FLOW_SCALE`` for ``"dinic"``).
    """
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; choose one of {', '.join(SOLVERS)}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    n = _check_layers(layers, output_weights)
    capacity, top = integer_capacities(layers, output_weights)
    # a source with no outgoing capacity (or a graph whose sink has none) has flow zero
    reachable = capacity[0].any(axis=0) & bool(top.any())
    skipped = int(n - reachable.sum())
    if progress is not None and skipped:
        progress(skipped)
    if solver == "dinic" or _kernel() is None:
        return _dinic(layers, output_weights, np.flatnonzero(reachable), progress)
    order = source_order(layers)
    sources = order[reachable[order]]
    return integer_max_flows(capacity, top, sources, progress, workers) / FLOW_SCALE


def flow_from_layers(
    layers: Sequence[torch.Tensor],
    output_weights: torch.Tensor,
    progress: bool = False,
    *,
    solver: str = "push_relabel",
    workers: int = 1,
) -> torch.Tensor:
    """Attention Flow over already residual-adjusted, row-stochastic layer maps.

    Args:
        layers: one ``(B, N, N)`` map ``Â_l`` per layer, first layer first.
        output_weights: ``(N,)`` capacities into the sink (sum at most one).
        progress: show a ``tqdm`` progress bar over samples × sources.
        solver: see :func:`max_flows_to_sink`.
        workers: see :func:`max_flows_to_sink`.

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
            max_flows_to_sink(
                [a[b] for a in arrays], weights, bar.update if bar else None, solver=solver, workers=workers
            )
            for b in range(batch)
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
    *,
    solver: str = "push_relabel",
    workers: int = 1,
) -> torch.Tensor:
    """Attention Flow relevance of every input token (see the module docstring for the definition).

    Args:
        attentions: one ``(B, H, N, N)`` tensor per layer, first layer first.
        head_fusion: ``"mean"``, ``"min"`` or ``"max"``.
        discard_ratio: fraction of the weakest fused attentions zeroed in each layer, in ``[0, 1)``;
            ``0`` (the default) is the paper's Attention Flow, anything else changes the graph.
        keep_index: token whose self-attention is never discarded (the class token), or ``None``.
        output_weights: ``(N,)`` capacities into the sink; default one-hot on token 0 (CLS).
        progress: show a ``tqdm`` progress bar over samples × sources.
        solver: see :func:`max_flows_to_sink`.
        workers: see :func:`max_flows_to_sink`.

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
    return flow_from_layers(layers, output_weights, progress, solver=solver, workers=workers)
