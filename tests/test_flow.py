"""Attention Flow is exact: compared with a plain networkx max-flow on float capacities."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
import torch

from hf_vit_rollout.methods import attention_flow, flow_error_bound, rollout_layer
from hf_vit_rollout.methods.flow import layered_graph
from hf_vit_rollout.testing import clustered_attention


def reference_flow(attentions, head_fusion="mean", discard_ratio=0.0, output_weights=None):
    """Straightforward definition: one networkx graph, one max-flow per input token, float capacities."""
    layers = [rollout_layer(a, head_fusion, discard_ratio).double().numpy() for a in attentions]
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


CASES = [
    # (layers, tokens, heads, fusion, discard_ratio, strength, sharpness)
    (1, 5, 2, "mean", 0.0, 6.0, 1.5),
    (2, 6, 3, "max", 0.0, 6.0, 1.5),
    (3, 8, 2, "mean", 0.0, 10.0, 3.0),
    (4, 8, 4, "min", 0.0, 4.0, 4.0),
    (4, 10, 3, "mean", 0.5, 6.0, 2.0),
    (6, 7, 2, "max", 0.3, 8.0, 2.0),
]


@pytest.mark.parametrize("layers,tokens,heads,fusion,ratio,strength,sharpness", CASES)
def test_flow_equals_networkx_reference(layers, tokens, heads, fusion, ratio, strength, sharpness):
    attentions = clustered_attention(2, heads, tokens, layers, groups=3, strength=strength, sharpness=sharpness, seed=layers)
    ours = attention_flow(attentions, head_fusion=fusion, discard_ratio=ratio).double().numpy()
    expected, num_edges = reference_flow(attentions, fusion, ratio)
    # integer scaling makes ours a lower bound, short by at most num_edges / FLOW_SCALE; float32 output
    tolerance = 1e-6 * np.abs(expected) + flow_error_bound(num_edges) + 1e-7
    assert np.all(np.abs(ours - expected) <= tolerance), np.abs(ours - expected).max()


def test_flow_is_not_the_trivial_bound_on_clustered_graphs():
    """The exactness test above is meaningful: flows differ from min(1, first-layer column sum)."""
    attentions = clustered_attention(1, 2, 8, 3, groups=3, strength=10.0, sharpness=3.0, seed=3)
    ours = attention_flow(attentions)[0].numpy()
    trivial = np.minimum(rollout_layer(attentions[0])[0].sum(0).numpy(), 1.0)
    assert np.abs(ours - trivial).max() > 0.1


def test_flow_with_mean_pooled_output():
    attentions = clustered_attention(1, 2, 6, 3, groups=2, seed=5)
    weights = torch.tensor([0.0, 0.2, 0.2, 0.2, 0.2, 0.2])
    ours = attention_flow(attentions, keep_index=None, output_weights=weights).double().numpy()
    expected, num_edges = reference_flow(attentions, output_weights=weights.numpy())
    np.testing.assert_allclose(ours, expected, atol=flow_error_bound(num_edges) + 1e-6)


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


def test_flow_needs_layers():
    with pytest.raises(ValueError, match="no attention layers"):
        attention_flow([])
