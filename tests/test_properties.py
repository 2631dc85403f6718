"""Property tests (hypothesis) of the pure functions."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hf_vit_rollout.methods import (
    attention_flow,
    attention_rollout,
    discard_lowest,
    fuse_heads,
    gae,
    gradient_rollout,
    rollout_layer,
)

FUSIONS = st.sampled_from(["mean", "min", "max"])
RATIOS = st.sampled_from([0.0, 0.25, 0.5, 0.9, 0.99])


@st.composite
def attention_stacks(draw, max_tokens=9, max_layers=4):
    batch = draw(st.integers(1, 3))
    heads = draw(st.integers(1, 4))
    tokens = draw(st.integers(2, max_tokens))
    layers = draw(st.integers(1, max_layers))
    seed = draw(st.integers(0, 2**31 - 1))
    temperature = draw(st.sampled_from([0.1, 1.0, 5.0]))
    g = torch.Generator().manual_seed(seed)
    attentions = [(torch.randn(batch, heads, tokens, tokens, generator=g) * temperature).softmax(-1) for _ in range(layers)]
    grads = [torch.randn(batch, heads, tokens, tokens, generator=g) for _ in range(layers)]
    return attentions, grads


@settings(max_examples=60, deadline=None)
@given(attention_stacks(), FUSIONS, RATIOS)
def test_rollout_is_finite_nonnegative_and_row_stochastic(stack, fusion, ratio):
    attentions, _ = stack
    result = attention_rollout(attentions, fusion, ratio)
    assert torch.isfinite(result).all() and (result >= 0).all()
    torch.testing.assert_close(result.sum(-1), torch.ones(result.shape[:2]), atol=1e-5, rtol=1e-5)


@settings(max_examples=60, deadline=None)
@given(attention_stacks(), FUSIONS, RATIOS)
def test_gradient_methods_are_finite_and_nonnegative(stack, fusion, ratio):
    attentions, grads = stack
    for method in (gradient_rollout, gae):
        result = method(attentions, grads, fusion, ratio)
        assert torch.isfinite(result).all() and (result >= 0).all()


@settings(max_examples=40, deadline=None)
@given(attention_stacks(), FUSIONS, RATIOS, st.data())
def test_invariant_to_batch_composition(stack, fusion, ratio, data):
    attentions, grads = stack
    batch = attentions[0].shape[0]
    order = data.draw(st.permutations(list(range(batch))))
    shuffled = [a[order] for a in attentions]
    torch.testing.assert_close(attention_rollout(shuffled, fusion, ratio), attention_rollout(attentions, fusion, ratio)[order])
    one = [a[:1] for a in attentions]
    torch.testing.assert_close(attention_rollout(one, fusion, ratio), attention_rollout(attentions, fusion, ratio)[:1])
    torch.testing.assert_close(
        gae([a[order] for a in attentions], [g[order] for g in grads], fusion, ratio), gae(attentions, grads, fusion, ratio)[order]
    )


@settings(max_examples=40, deadline=None)
@given(attention_stacks(), FUSIONS, RATIOS, st.data())
def test_invariant_to_head_order(stack, fusion, ratio, data):
    attentions, grads = stack
    heads = attentions[0].shape[1]
    order = data.draw(st.permutations(list(range(heads))))
    torch.testing.assert_close(
        attention_rollout([a[:, order] for a in attentions], fusion, ratio), attention_rollout(attentions, fusion, ratio)
    )
    torch.testing.assert_close(
        gradient_rollout([a[:, order] for a in attentions], [g[:, order] for g in grads], fusion, ratio),
        gradient_rollout(attentions, grads, fusion, ratio),
    )


@settings(max_examples=40, deadline=None)
@given(attention_stacks(), FUSIONS)
def test_discard_zero_equals_no_discarding(stack, fusion):
    attentions, _ = stack
    for a in attentions:
        fused = fuse_heads(a, fusion)
        assert torch.equal(discard_lowest(fused, 0.0), fused)
        # the layer map is then norm(0.5·fused + 0.5·I), nothing zeroed (both the numpy and the torch path)
        step = 0.5 * fused + 0.5 * torch.eye(fused.shape[-1])
        expected = step / step.sum(-1, keepdim=True)
        torch.testing.assert_close(rollout_layer(a, fusion, 0.0), expected)
        torch.testing.assert_close(rollout_layer(a.double(), fusion, 0.0), expected)


@settings(max_examples=40, deadline=None)
@given(attention_stacks(), st.integers(2, 6))
def test_mean_fusion_of_identical_heads_equals_one_head(stack, copies):
    attentions, grads = stack
    single = [a[:, :1] for a in attentions]
    repeated = [a.repeat(1, copies, 1, 1) for a in single]
    torch.testing.assert_close(attention_rollout(repeated), attention_rollout(single))
    g_single = [g[:, :1] for g in grads]
    g_repeated = [g.repeat(1, copies, 1, 1) for g in g_single]
    torch.testing.assert_close(gae(repeated, g_repeated), gae(single, g_single))


@settings(max_examples=25, deadline=None)
@given(attention_stacks(max_tokens=7, max_layers=3), FUSIONS, RATIOS)
def test_flow_is_bounded_by_the_trivial_cuts(stack, fusion, ratio):
    attentions, _ = stack
    flows = attention_flow(attentions, fusion, ratio).double()
    assert torch.isfinite(flows).all() and (flows >= 0).all()
    first_layer_out = rollout_layer(attentions[0], fusion, ratio).double().sum(1)  # capacity leaving each source
    assert (flows <= torch.clamp(first_layer_out, max=1.0) + 1e-6).all()
