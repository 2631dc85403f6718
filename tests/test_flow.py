"""Attention Flow is exact: compared with a plain networkx max-flow on float capacities, and with
scipy's Dinic on the same integer capacities (where the values must be identical)."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
import torch

from hf_vit_rollout.methods import METHODS, SCIPY_FLOW_SCALE, attention_flow, flow_error_bound, rollout_layer
from hf_vit_rollout.methods import flow as flow_module
from hf_vit_rollout.methods.flow import (
    flow_from_layers,
    integer_capacities,
    integer_max_flows,
    layered_graph,
    max_flows_to_sink,
    source_order,
)
from hf_vit_rollout.testing import clustered_attention


def reference_flow(attentions, head_fusion="mean", discard_ratio=0.0, output_weights=None, keep_index=0):
    """Straightforward definition: one networkx graph, one max-flow per input token, float capacities."""
    layers = [rollout_layer(a, head_fusion, discard_ratio, keep_index).double().numpy() for a in attentions]
    batch, _, n, _ = attentions[0].shape
    if output_weights is None:
        output_weights = np.eye(n)[0]
    out = np.zeros((batch, n))
    for b in range(batch):
        graph = nx.DiGraph()
        for layer, a in enumerate(layers):
            for i in range(n):
                for j in range(n):
                    if a[b, i, j] > 0:
                        graph.add_edge((layer, j), (layer + 1, i), capacity=float(a[b, i, j]))
        for i in range(n):
            if output_weights[i] > 0:
                graph.add_edge((len(layers), i), "sink", capacity=float(output_weights[i]))
        for j in range(n):
            out[b, j] = nx.maximum_flow_value(graph, (0, j), "sink") if graph.has_node((0, j)) else 0.0
    return out, sum(len(a[b].nonzero()[0]) for a in layers) + n


def scipy_integer_flows(layers, output_weights, sources):
    """scipy's Dinic from scratch for each source, on the int32 graph scaled by ``SCIPY_FLOW_SCALE``."""
    from scipy.sparse.csgraph import maximum_flow

    graph, sink = layered_graph(layers, output_weights)
    return np.array([maximum_flow(graph, int(j), sink, method="dinic").flow_value for j in sources])


CASES = [
    # (layers, tokens, heads, fusion, discard_ratio, strength, sharpness)
    (1, 5, 2, "mean", 0.0, 6.0, 1.5),
    (2, 6, 3, "max", 0.0, 6.0, 1.5),
    (3, 8, 2, "mean", 0.0, 10.0, 3.0),
    (4, 8, 4, "min", 0.0, 4.0, 4.0),
    (4, 10, 3, "mean", 0.5, 6.0, 2.0),
    (6, 7, 2, "max", 0.3, 8.0, 2.0),
]


@pytest.mark.parametrize("solver", ["push_relabel", "dinic"])
@pytest.mark.parametrize("layers,tokens,heads,fusion,ratio,strength,sharpness", CASES)
def test_flow_equals_networkx_reference(layers, tokens, heads, fusion, ratio, strength, sharpness, solver):
    attentions = clustered_attention(2, heads, tokens, layers, groups=3, strength=strength, sharpness=sharpness, seed=layers)
    ours = attention_flow(attentions, head_fusion=fusion, discard_ratio=ratio, solver=solver).double().numpy()
    expected, num_edges = reference_flow(attentions, fusion, ratio)
    # integer scaling makes ours a lower bound, short by at most the bound; float32 output
    scale = SCIPY_FLOW_SCALE if solver == "dinic" else flow_module.FLOW_SCALE
    tolerance = 1e-6 * np.abs(expected) + flow_error_bound(num_edges, scale) + 1e-7
    assert np.all(np.abs(ours - expected) <= tolerance), np.abs(ours - expected).max()


def test_fast_path_equals_scipy_dinic_at_vit_scale():
    """12 layers × 197 tokens, clustered: the warm-started kernel (all 197 sources, two threads, and
    one thread in another order) gives exactly scipy's integer max-flow on the same capacities."""
    attentions = clustered_attention(1, 3, 197, 12, groups=8, strength=8.0, sharpness=2.0, seed=0)
    layers = [rollout_layer(a)[0].double().numpy() for a in attentions]
    weights = np.eye(197)[0]
    capacity, top = integer_capacities(layers, weights, SCIPY_FLOW_SCALE)
    order = source_order(layers)
    ours = integer_max_flows(capacity, top, order, workers=2)
    again = integer_max_flows(capacity, top, np.roll(order, 100), workers=1)
    np.testing.assert_array_equal(ours, again)
    checked = np.arange(0, 197, 20)  # scipy takes 30-100 ms a source here
    np.testing.assert_array_equal(ours[checked], scipy_integer_flows(layers, weights, checked))
    # and the values are not the trivial bound min(1, first-layer column sum) everywhere
    trivial = np.minimum(layers[0].sum(0), 1.0)
    assert np.abs(ours / SCIPY_FLOW_SCALE - trivial).max() > 0.3


def test_fast_path_equals_scipy_dinic_on_the_demo_models_attention():
    from PIL import Image

    from hf_vit_rollout import RolloutExplainer
    from hf_vit_rollout.capture import AttentionCapture
    from hf_vit_rollout.demo import example_images

    explainer = RolloutExplainer.from_pretrained("demo")
    image = Image.open(example_images()[0]).convert("RGB")
    pixels = explainer.image_processor(images=[image], return_tensors="pt")["pixel_values"]
    maps = []
    with AttentionCapture(explainer.model, lambda layer, a: maps.append(a.detach())), torch.no_grad():
        explainer.model(pixel_values=pixels)
    layers = [rollout_layer(a)[0].double().numpy() for a in maps]
    n = layers[0].shape[0]
    weights = np.eye(n)[0]
    capacity, top = integer_capacities(layers, weights, SCIPY_FLOW_SCALE)
    ours = integer_max_flows(capacity, top, source_order(layers), workers=2)
    np.testing.assert_array_equal(ours, scipy_integer_flows(layers, weights, range(n)))


def test_flow_is_not_the_trivial_bound_on_clustered_graphs():
    """The exactness test above is meaningful: flows differ from min(1, first-layer column sum)."""
    attentions = clustered_attention(1, 2, 8, 3, groups=3, strength=10.0, sharpness=3.0, seed=3)
    ours = attention_flow(attentions)[0].numpy()
    trivial = np.minimum(rollout_layer(attentions[0])[0].sum(0).numpy(), 1.0)
    assert np.abs(ours - trivial).max() > 0.1


@pytest.mark.parametrize("solver", ["push_relabel", "dinic"])
def test_flow_with_mean_pooled_output(solver):
    attentions = clustered_attention(1, 2, 6, 3, groups=2, seed=5)
    weights = torch.tensor([0.0, 0.2, 0.2, 0.2, 0.2, 0.2])
    ours = attention_flow(attentions, keep_index=None, output_weights=weights, solver=solver).double().numpy()
    expected, num_edges = reference_flow(attentions, output_weights=weights.numpy())
    scale = {"push_relabel": flow_module.FLOW_SCALE, "dinic": SCIPY_FLOW_SCALE}[solver]
    assert flow_error_bound(num_edges, scale) < 1e-6  # the documented bound is a tight tolerance
    np.testing.assert_allclose(ours, expected, atol=flow_error_bound(num_edges, scale) + 1e-6)


def test_the_kept_token_survives_the_discard():
    attentions = clustered_attention(1, 2, 8, 3, groups=3, seed=3)
    kept_2 = attention_flow(attentions, discard_ratio=0.9, keep_index=2).double().numpy()
    expected, num_edges = reference_flow(attentions, discard_ratio=0.9, keep_index=2)
    np.testing.assert_allclose(kept_2, expected, atol=flow_error_bound(num_edges) + 1e-6)
    # the default keeps the class token (0), as rollout does
    default = attention_flow(attentions, discard_ratio=0.9).double().numpy()
    np.testing.assert_allclose(default, reference_flow(attentions, discard_ratio=0.9)[0], atol=1e-6)
    assert np.abs(kept_2 - default).max() > 1e-3


def test_flow_from_layers_defaults_to_the_exact_solver_without_a_bar(capsys):
    attentions = clustered_attention(2, 2, 7, 2, seed=8)
    layers = [rollout_layer(a) for a in attentions]
    weights = torch.zeros(7)
    weights[0] = 1.0
    flows = flow_from_layers(layers, weights)
    torch.testing.assert_close(flows, attention_flow(attentions, solver="push_relabel"))
    np.testing.assert_allclose(flows.double().numpy(), reference_flow(attentions)[0], atol=1e-6)
    attention_flow(attentions)
    assert capsys.readouterr().err == ""


def test_flow_batch_entries_are_independent():
    attentions = clustered_attention(3, 2, 9, 3, seed=7)
    full = attention_flow(attentions, discard_ratio=0.4)
    for b in range(3):
        torch.testing.assert_close(full[b : b + 1], attention_flow([a[b : b + 1] for a in attentions], discard_ratio=0.4))


def test_flow_values_are_bounded_and_discard_prunes_edges():
    attentions = clustered_attention(1, 3, 12, 4, seed=11)
    flows = attention_flow(attentions)
    assert (flows >= 0).all() and (flows <= 1 + 1e-6).all()
    dense = [rollout_layer(a)[0].numpy() for a in attentions]
    sparse = [rollout_layer(a, discard_ratio=0.8)[0].numpy() for a in attentions]
    weights = np.eye(12)[0]
    assert layered_graph(sparse, weights)[0].nnz < layered_graph(dense, weights)[0].nnz / 2


def test_flow_method_defaults_to_the_papers_definition():
    assert METHODS["flow"].default_discard_ratio == 0.0


@pytest.mark.parametrize("solver", ["push_relabel", "dinic"])
def test_progress_counts_every_source_once_including_skipped_ones(solver):
    attentions = clustered_attention(1, 2, 10, 3, seed=2)
    layers = [rollout_layer(a)[0].double().numpy() for a in attentions]
    layers[0][:, 4] = 0.0  # token 4 has no outgoing capacity: flow 0, skipped
    calls = []
    flows = max_flows_to_sink(layers, np.eye(10)[0], calls.append, solver=solver)
    assert sum(calls) == 10 and flows[4] == 0.0 and (flows[np.arange(10) != 4] > 0).all()


def test_progress_bar_over_sources(capsys):
    attentions = clustered_attention(2, 2, 7, 2, seed=4)
    attention_flow(attentions, progress=True)
    err = capsys.readouterr().err
    assert "14/14" in err and "attention flow: " in err and "source/s" in err


def test_without_numba_the_scipy_solver_is_used(monkeypatch):
    attentions = clustered_attention(1, 2, 9, 3, seed=9)
    fast = attention_flow(attentions)
    monkeypatch.setattr(flow_module, "_KERNEL", None)
    torch.testing.assert_close(attention_flow(attentions), fast, atol=1e-5, rtol=0)
    with pytest.raises(RuntimeError, match="needs numba"):
        integer_max_flows(np.zeros((1, 2, 2), dtype=np.int64), np.zeros(2, dtype=np.int64), [0])


def test_a_failed_numba_import_falls_back_to_scipy(monkeypatch, caplog):
    import sys

    attentions = clustered_attention(1, 2, 9, 3, seed=9)
    fast = attention_flow(attentions)
    monkeypatch.setattr(flow_module, "_KERNEL", False)  # not looked up yet
    monkeypatch.setitem(sys.modules, "hf_vit_rollout.methods._flow_kernel", None)  # importing it fails
    monkeypatch.delattr(sys.modules["hf_vit_rollout.methods"], "_flow_kernel")
    with caplog.at_level("WARNING", logger="hf_vit_rollout"):
        torch.testing.assert_close(attention_flow(attentions), fast, atol=1e-5, rtol=0)
    assert flow_module._KERNEL is None and "numba is not available" in caplog.text


def test_kernel_compiles_without_cache_when_no_cache_directory_is_usable(monkeypatch):
    from hf_vit_rollout.methods import _flow_kernel

    def njit(**options):
        if options.get("cache"):
            raise RuntimeError("cannot cache function 'f': no locator available for file 'x.py'")
        return lambda func: ("compiled", options, func)

    monkeypatch.setattr(_flow_kernel, "njit", njit)
    compiled = _flow_kernel._compiled(len)
    assert compiled == ("compiled", {"nogil": True}, len)


def test_source_order_is_a_permutation():
    layers = [rollout_layer(a)[0].double().numpy() for a in clustered_attention(1, 2, 15, 4, seed=1)]
    order = source_order(layers)
    assert order[0] == 0 and sorted(order.tolist()) == list(range(15))


@pytest.mark.parametrize(
    "kwargs,match",
    [({"solver": "edmonds"}, "unknown solver 'edmonds'"), ({"workers": 0}, "workers must be a positive integer"),
     ({"workers": True}, "workers must be a positive integer"), ({"workers": 2.0}, "workers must be a positive integer")],
)
def test_bad_solver_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        attention_flow(clustered_attention(1, 2, 5, 2), **kwargs)


def test_integer_capacities_follow_their_definition():
    # c -> floor(min(c, 1)·scale) in int64; edges into a last-layer token that cannot reach the sink are cut
    layers = [np.array([[0.5, 1.5], [0.25, 0.75]], dtype=np.float32), np.array([[0.3, 0.7], [0.6, 0.4]])]
    weights = np.array([1.0, 0.0])
    capacity, top = integer_capacities(layers, weights, scale=2**20)
    assert capacity.dtype == np.int64 and top.dtype == np.int64
    expected = np.floor(np.minimum(np.stack([np.asarray(a, dtype=np.float64) for a in layers]), 1.0) * 2**20)
    expected[-1][1] = 0  # token 1 of the last layer has output weight 0
    np.testing.assert_array_equal(capacity, expected.astype(np.int64))
    np.testing.assert_array_equal(top, [2**20, 0])


def test_scipy_graph_refuses_a_scale_past_int32():
    layers = [np.full((3, 3), 1 / 3)]
    graph, sink = layered_graph(layers, np.eye(3)[0], scale=2**30)
    assert graph[0, 3] == 2**30 // 3 and graph[3, sink] == 2**30  # (0, 0) -> (1, 0) and (1, 0) -> sink
    with pytest.raises(ValueError, match="scale must be at most 2\\*\\*30"):
        layered_graph(layers, np.eye(3)[0], scale=2**30 + 1)


def test_mismatched_layer_shapes_are_refused():
    with pytest.raises(ValueError, match=r"every layer must be an \(N, N\) map"):
        max_flows_to_sink([np.eye(4), np.eye(5)], np.eye(4)[0])


def test_nan_attention_is_refused():
    layers = [np.full((3, 3), 1 / 3), np.full((3, 3), np.nan)]
    with pytest.raises(ValueError, match="layer 1's attention map has NaN"):
        max_flows_to_sink(layers, np.eye(3)[0])


def test_flow_needs_layers():
    with pytest.raises(ValueError, match="no attention layers"):
        attention_flow([])
