"""Compiled push–relabel kernel for :mod:`hf_vit_rollout.methods.flow` (numba, cached on disk).

Imported lazily by ``flow.py``: importing this module imports numba and loads the kernel from
numba's on-disk cache (compiling and caching it the first time on a machine). Not public API.

Graph: the *reversed* layered graph of one sample (see ``flow.py`` for the definition)
------------------------------------------------------------------------------------
Node ``(l, i)`` (layer ``l = 0 .. L``, token ``i``) has index ``l·N + i``. The attention edge
``(l, j) → (l+1, i)`` of capacity ``C[l, i, j]`` is reversed into the arc ``(l+1, i) → (l, j)``
("down"); its residual partner ``(l, j) → (l+1, i)`` is the "up" arc. With ``F[l, i, j]`` the flow
on the down arc, the residual capacities are ``C − F`` (down) and ``F`` (up). ``C``, its transpose
``CT`` (read-only, shared by threads) and ``F``, ``FT`` (its transpose, kept in step) are
``(L, N, N)`` int64 arrays, so that every scan of a node's arcs, in either direction, reads
contiguous memory.

The super source ``t`` (the output side of the original graph) feeds ``(L, i)`` with capacity
``W[i]``; those arcs are saturated once, at the start, and never carry flow back: the kernel only
runs the first phase of push–relabel (a *maximum preflow*), which already gives the max-flow value.

Warm start across sinks, and why the value is exact
---------------------------------------------------
The sinks ``(0, s)`` (the input tokens) are solved one after another on the same residual graph.
After sink ``s`` is solved its excess stays where it is, so the current preflow is a valid preflow
for the next sink (excess ``≥ 0`` everywhere but ``t``, whose arcs are saturated). The next solve
recomputes exact distance labels (a breadth-first search from the new sink over residual arcs;
label ``num_nodes`` = cannot reach it) and runs push–relabel until no node with a label below
``num_nodes`` holds excess. Labels stay valid lower bounds of the distance to the sink (relabels,
gaps and global relabels keep them so), so then no node that can reach the sink in the residual
graph holds excess. Let ``X`` be those nodes: arcs into ``X`` are saturated and arcs out of ``X``
carry no flow, so the sink's excess equals the capacity of the cut into ``X``; and no preflow puts
more than a cut's capacity into the sink. So the sink's excess is the maximum flow value (Goldberg
& Tarjan's first phase, started from any valid preflow). Capacities are integers, so every push is
exact and the algorithm terminates.

Heuristics: highest-label selection, current arcs, the gap heuristic, and a global relabel at each
new sink and after every ``relabel_work × num_nodes`` relabels.

If numba cannot write its cache next to this file it uses its user-wide cache directory
(``NUMBA_CACHE_DIR``), then a directory of this user's alone under the temporary directory
(:func:`private_cache_dir`); if none is usable the kernel is compiled in memory, once per process
(a few seconds), with a logged warning.
"""

from __future__ import annotations

import logging
import os
import tempfile

import numba
import numpy as np
from numba import njit

logger = logging.getLogger(__name__)


def private_cache_dir() -> str | None:
    """A cache directory only this user can write: ``<tmp>/hf_vit_rollout-numba-<uid>``, created with
    mode 0700; ``None`` if it cannot be made or is not this user's alone (another user could plant
    cache files in it, which numba would load)."""
    uid = os.getuid() if hasattr(os, "getuid") else None
    path = os.path.join(tempfile.gettempdir(), f"hf_vit_rollout-numba-{uid if uid is not None else 'user'}")
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        info = os.stat(path)
    except OSError:
        return None
    if uid is not None and (info.st_uid != uid or info.st_mode & 0o022 or not os.access(path, os.W_OK)):
        return None
    return path


def _compiled(func):
    """``numba.njit(cache=True, nogil=True)``, cached where numba can write: next to this file, in
    numba's user-wide cache (``NUMBA_CACHE_DIR`` if set), else in :func:`private_cache_dir` (a
    read-only install: a Docker image, a Space running as a non-root user). Only if none is usable
    is the kernel compiled in memory, once per process, with a logged warning."""
    try:
        return njit(cache=True, nogil=True)(func)
    except RuntimeError as exc:  # numba: "cannot cache function ...: no locator available"
        reason = exc
    fallback = private_cache_dir()
    if fallback is not None:
        previous = numba.config.CACHE_DIR
        numba.config.CACHE_DIR = fallback  # read when the cache is set up, just below; then restored
        try:
            compiled = njit(cache=True, nogil=True)(func)
            logger.info("attention-flow kernel: the install is read-only, so it is cached in %s", fallback)
            return compiled
        except RuntimeError as exc:
            reason = exc
        finally:
            numba.config.CACHE_DIR = previous
    logger.warning("attention-flow kernel cannot be cached (%s); it is compiled once per process", reason)
    return njit(nogil=True)(func)


@_compiled
def _global_relabel(C, CT, F, FT, excess, label, cur, count, queue, bucket_head, bucket_next, sink):
    """Exact distance labels to ``sink`` by breadth-first search over residual arcs; rebuild the buckets.

    Returns the highest label of an active node (``-1`` if none).
    """
    num_layers, n, _ = C.shape
    num_nodes = (num_layers + 1) * n
    # unlabelled tokens of each layer, so that a scan skips the nodes already reached
    unlabelled = np.empty((num_layers + 1, n), dtype=np.int64)
    left = np.full(num_layers + 1, n, dtype=np.int64)
    for v in range(num_nodes):
        label[v] = num_nodes
        cur[v] = 0
    for layer in range(num_layers + 1):
        for i in range(n):
            unlabelled[layer, i] = i
    label[sink] = 0
    unlabelled[0, sink] = n - 1
    unlabelled[0, n - 1] = sink
    left[0] = n - 1
    queue[0] = sink
    head = 0
    tail = 1
    while head < tail:
        w = queue[head]
        head += 1
        lw = w // n
        jw = w - lw * n
        dn = label[w] + 1
        if lw < num_layers:
            # u = (lw+1, i) --down--> w, residual C[lw, i, jw] - F[lw, i, jw] = CT[lw, jw, i] - FT[lw, jw, i]
            up = lw + 1
            x = 0
            while x < left[up]:
                i = unlabelled[up, x]
                if CT[lw, jw, i] > FT[lw, jw, i]:
                    u = up * n + i
                    label[u] = dn
                    queue[tail] = u
                    tail += 1
                    left[up] -= 1
                    unlabelled[up, x] = unlabelled[up, left[up]]
                else:
                    x += 1
        if lw > 0:
            # u = (lw-1, k) --up--> w, residual F[lw-1, jw, k]
            down = lw - 1
            x = 0
            while x < left[down]:
                k = unlabelled[down, x]
                if F[down, jw, k] > 0:
                    u = down * n + k
                    label[u] = dn
                    queue[tail] = u
                    tail += 1
                    left[down] -= 1
                    unlabelled[down, x] = unlabelled[down, left[down]]
                else:
                    x += 1
    for d in range(num_nodes + 1):
        count[d] = 0
        bucket_head[d] = -1
    highest = -1
    for v in range(num_nodes):
        d = label[v]
        if d < num_nodes:
            count[d] += 1
            if excess[v] > 0 and v != sink:
                bucket_next[v] = bucket_head[d]
                bucket_head[d] = v
                if d > highest:
                    highest = d
    return highest


@_compiled
def solve_sink(C, CT, F, FT, excess, label, cur, count, queue, bucket_head, bucket_next, stats, sink, relabel_work):
    """Move the current preflow's excess towards ``sink`` until it is a maximum preflow for it.

    Arrays are modified in place (they carry the warm start to the next sink). Returns the sink's
    excess: the maximum flow value into ``sink``, in capacity units.
    """
    num_layers, n, _ = C.shape
    num_nodes = (num_layers + 1) * n
    relabel_every = int(relabel_work * num_nodes)
    highest = _global_relabel(C, CT, F, FT, excess, label, cur, count, queue, bucket_head, bucket_next, sink)
    stats[2] += 1
    work = 0
    pushes = 0
    relabels = 0
    gaps = 0
    scanned = 0
    while highest >= 0:
        v = bucket_head[highest]
        if v < 0:
            highest -= 1
            continue
        bucket_head[highest] = bucket_next[v]
        if label[v] != highest or excess[v] == 0:
            continue  # stale entry (its label was raised by a gap)
        lv = v // n
        iv = v - lv * n
        ev = excess[v]  # v's excess, kept in a register while v is discharged
        # discharge v: push along admissible arcs (to label d(v) - 1) from the current arc on; when
        # none is left, relabel to one more than the lowest label over a residual arc
        while True:
            dv = label[v]
            start = cur[v]
            a = start
            low = num_nodes  # lowest label over the residual arcs scanned in [start, a), pushes aside
            low_arc = 0  # the first arc with that label
            if lv == 0 and a < n:
                a = n
            if lv > 0:
                base = (lv - 1) * n
                # down arcs v = (lv, iv) -> (lv-1, j), residual C[lv-1, iv, j] - F[lv-1, iv, j]
                while a < n:
                    w = base + a
                    lw = label[w]
                    # the label first: most arcs are neither admissible nor lower than `low`
                    r = C[lv - 1, iv, a] - F[lv - 1, iv, a] if lw == dv - 1 or lw < low else 0
                    if r > 0:
                        if lw == dv - 1:
                            delta = min(r, ev)
                            F[lv - 1, iv, a] += delta
                            FT[lv - 1, a, iv] += delta
                            ev -= delta
                            pushes += 1
                            if excess[w] == 0 and w != sink:
                                bucket_next[w] = bucket_head[lw]
                                bucket_head[lw] = w
                                if lw > highest:
                                    highest = lw
                            excess[w] += delta
                            if ev == 0:
                                break
                        elif lw < low:
                            low = lw
                            low_arc = a
                    a += 1
            if ev > 0:
                if lv < num_layers:
                    base = (lv + 1) * n
                    # up arcs v = (lv, iv) -> (lv+1, k), residual F[lv, k, iv] = FT[lv, iv, k]
                    while a < 2 * n:
                        k = a - n
                        w = base + k
                        lw = label[w]
                        r = FT[lv, iv, k] if lw == dv - 1 or lw < low else 0
                        if r > 0:
                            if lw == dv - 1:
                                delta = min(r, ev)
                                FT[lv, iv, k] = r - delta
                                F[lv, k, iv] -= delta
                                ev -= delta
                                pushes += 1
                                if excess[w] == 0 and w != sink:
                                    bucket_next[w] = bucket_head[lw]
                                    bucket_head[lw] = w
                                    if lw > highest:
                                        highest = lw
                                excess[w] += delta
                                if ev == 0:
                                    break
                            elif lw < low:
                                low = lw
                                low_arc = a
                        a += 1
                else:
                    a = 2 * n
            cur[v] = a
            scanned += a - start
            if ev == 0:
                break
            # relabel: the arcs before `start` were passed in earlier scans, so look at them again;
            # no arc was admissible, so every residual neighbour has a label >= d(v) and the new
            # label low + 1 is larger than d(v)
            if start > 0:
                first = num_nodes
                first_arc = 0
                if lv > 0:
                    base = (lv - 1) * n
                    for j in range(min(start, n)):
                        if label[base + j] < first and C[lv - 1, iv, j] > F[lv - 1, iv, j]:
                            first = label[base + j]
                            first_arc = j
                if lv < num_layers and start > n:
                    base = (lv + 1) * n
                    for k in range(start - n):
                        if label[base + k] < first and FT[lv, iv, k] > 0:
                            first = label[base + k]
                            first_arc = n + k
                if first <= low:
                    low = first
                    low_arc = first_arc
            relabels += 1
            work += 1
            count[dv] -= 1
            # after the relabel the admissible arcs are those at label `low`: none comes before `low_arc`
            cur[v] = low_arc
            if count[dv] == 0:
                # gap: no node is left at label dv, so no node above it can reach the sink
                gaps += 1
                for u in range(num_nodes):
                    if dv < label[u] < num_nodes:
                        count[label[u]] -= 1
                        label[u] = num_nodes
                label[v] = num_nodes
                break
            if low + 1 >= num_nodes:
                label[v] = num_nodes
                break
            label[v] = low + 1
            count[low + 1] += 1
        excess[v] = ev
        # v has no excess left or can no longer reach the sink
        if work > relabel_every:
            work = 0
            stats[2] += 1
            highest = _global_relabel(C, CT, F, FT, excess, label, cur, count, queue, bucket_head, bucket_next, sink)
    stats[0] += pushes
    stats[1] += relabels
    stats[3] += gaps
    stats[4] += scanned
    return excess[sink]


def shared_arrays(capacity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(C, CT)``: the read-only capacities and their per-layer transpose, shared by all states.

    Args:
        capacity: ``(L, N, N)`` int64, ``capacity[l, i, j]`` = capacity of ``(l, j) → (l+1, i)``.
    """
    C = np.ascontiguousarray(capacity, dtype=np.int64)
    return C, np.ascontiguousarray(C.transpose(0, 2, 1))


def new_state(shared: tuple[np.ndarray, np.ndarray], top: np.ndarray) -> tuple:
    """Residual state of the reversed graph with zero flow and the source's arcs saturated.

    Args:
        shared: :func:`shared_arrays` of the capacities.
        top: ``(N,)`` int64 capacities from the super source into ``(L, i)``.

    Returns:
        The arguments of :func:`solve_sink` before ``sink``; ``stats`` (the last) counts pushes,
        relabels, global relabels, gaps and arcs scanned over all sinks solved with this state.
    """
    C, CT = shared
    num_layers, n, _ = C.shape
    num_nodes = (num_layers + 1) * n
    F = np.zeros_like(C)
    FT = np.zeros_like(C)
    excess = np.zeros(num_nodes, dtype=np.int64)
    excess[num_layers * n :] = top
    label = np.zeros(num_nodes, dtype=np.int32)
    cur = np.zeros(num_nodes, dtype=np.int64)
    count = np.zeros(num_nodes + 1, dtype=np.int64)
    queue = np.zeros(num_nodes, dtype=np.int64)
    bucket_head = np.zeros(num_nodes + 1, dtype=np.int64)
    bucket_next = np.zeros(num_nodes, dtype=np.int64)
    stats = np.zeros(5, dtype=np.int64)
    return C, CT, F, FT, excess, label, cur, count, queue, bucket_head, bucket_next, stats
