"""The pure math against plain, obviously-correct loops."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hf_vit_rollout.methods import (
    add_residual_and_normalize,
    attention_rollout,
    chain_layers,
    discard_lowest,
    fuse_heads,
    gae,
    gradient_rollout,
    kth_smallest,
    rollout_layer,
    token_relevance,
)
from hf_vit_rollout.methods.chain import ChainFold


def random_attention(batch=2, heads=3, tokens=7, layers=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, heads, tokens, tokens, generator=g).mul(2).softmax(-1) for _ in range(layers)]


def random_grads(attentions, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(a.shape, generator=g) for a in attentions]


# ----------------------------------------------------------------------------- reference loops
def ref_fuse(a: np.ndarray, fusion: str) -> np.ndarray:  # a: (H, N, N)
    heads, n, _ = a.shape
    out = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            values = [a[h, i, j] for h in range(heads)]
            out[i, j] = {"mean": sum(values) / heads, "min": min(values), "max": max(values)}[fusion]
    return out


def ref_discard(fused: np.ndarray, ratio: float, keep: int = 0) -> np.ndarray:
    n = fused.shape[0]
    flat = fused.flatten().copy()
    k = int(n * n * ratio)
    order = sorted(range(n * n), key=lambda idx: flat[idx])[:k]
    for idx in order:
        if idx != keep * n + keep:  # the kept token's (the class token's) self-attention stays
            flat[idx] = 0.0
    return flat.reshape(n, n)


def ref_layer(fused: np.ndarray, ratio: float, keep: int = 0) -> np.ndarray:
    n = fused.shape[0]
    a = ref_discard(fused, ratio, keep)
    a = 0.5 * a + 0.5 * np.eye(n)
    for i in range(n):
        a[i, :] = a[i, :] / sum(a[i, :])
    return a


def ref_rollout(attentions, fusion, ratio, grads=None, rule="rollout", keep=0):
    batch, _, n, _ = attentions[0].shape
    out = np.zeros((batch, n, n))
    for b in range(batch):
        result = np.eye(n)
        for layer, att in enumerate(attentions):
            a = att[b].double().numpy()
            if rule == "rollout":
                m = ref_layer(ref_fuse(a, fusion), ratio, keep)
            elif rule == "grad":
                weighted = ref_fuse(a * grads[layer][b].double().numpy(), fusion)
                m = ref_layer(np.maximum(weighted, 0), ratio, keep)
            else:  # gae: R <- R + mean_h(max(grad * A, 0)) @ R
                cam = ref_discard(ref_fuse(np.maximum(a * grads[layer][b].double().numpy(), 0), fusion), ratio, keep)
                result = result + cam @ result
                continue
            result = m @ result
        out[b] = result
    return out


# ----------------------------------------------------------------------------- rollout
@pytest.mark.parametrize("fusion", ["mean", "min", "max"])
@pytest.mark.parametrize("ratio", [0.0, 0.3, 0.9])
def test_rollout_matches_reference_loop(fusion, ratio):
    attentions = random_attention()
    ours = attention_rollout(attentions, head_fusion=fusion, discard_ratio=ratio).double().numpy()
    np.testing.assert_allclose(ours, ref_rollout(attentions, fusion, ratio), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("fusion", ["mean", "min", "max"])
@pytest.mark.parametrize("ratio", [0.0, 0.5, 0.95])
def test_each_layer_is_row_stochastic_after_residual(fusion, ratio):
    for attention in random_attention(tokens=9):
        layer = rollout_layer(attention, fusion, ratio)
        torch.testing.assert_close(layer.sum(-1), torch.ones(layer.shape[:2]))
        assert (layer >= 0).all()


def test_rollout_rows_sum_to_one():
    result = attention_rollout(random_attention(tokens=11, layers=6), discard_ratio=0.5)
    torch.testing.assert_close(result.sum(-1), torch.ones(result.shape[:2]))


def test_normalisation_is_over_rows_not_columns():
    """The original's ``a / a.sum(dim=-1)`` (no keepdim) divides column j by row j's sum."""
    fused = fuse_heads(random_attention(batch=1, tokens=5, layers=1)[0])
    fused = discard_lowest(fused, 0.6)  # rows no longer sum to one
    a = 0.5 * fused + 0.5 * torch.eye(5)
    buggy = a / a.sum(dim=-1)
    ours = add_residual_and_normalize(fused)
    assert not torch.allclose(buggy, ours)
    torch.testing.assert_close(ours.sum(-1), torch.ones(1, 5))
    torch.testing.assert_close(ours, a / a.sum(dim=-1, keepdim=True))


def test_discard_is_per_sample_and_protects_class_token():
    fused = torch.rand(3, 6, 6)
    fused[1] *= 100  # a different scale per sample must not change which entries each sample drops
    out = discard_lowest(fused, 0.5)
    for b in range(3):
        assert (out[b] == 0).sum() == 18 - (1 if fused[b].flatten().argsort()[:18].eq(0).any() else 0)
    tiny = torch.ones(1, 4, 4)
    tiny[0, 0, 0] = 1e-9  # the lowest value sits on the protected entry
    assert discard_lowest(tiny, 0.5)[0, 0, 0] == pytest.approx(1e-9)


def test_discard_zero_is_identity_and_fusion_of_identical_heads():
    attention = random_attention(batch=1, heads=1, layers=1)[0]
    stacked = attention.repeat(1, 5, 1, 1)
    for fusion in ("mean", "min", "max"):
        torch.testing.assert_close(fuse_heads(stacked, fusion), attention[:, 0])
    fused = fuse_heads(attention)
    assert discard_lowest(fused, 0.0) is fused


def test_unknown_fusion_is_rejected():
    with pytest.raises(ValueError, match="head_fusion"):
        fuse_heads(torch.rand(1, 2, 3, 3), "median")


# ----------------------------------------------------------------------------- gradient methods
@pytest.mark.parametrize("fusion", ["mean", "max"])
@pytest.mark.parametrize("ratio", [0.0, 0.5])
def test_gradient_rollout_matches_reference_loop(fusion, ratio):
    attentions = random_attention()
    grads = random_grads(attentions)
    ours = gradient_rollout(attentions, grads, head_fusion=fusion, discard_ratio=ratio).double().numpy()
    np.testing.assert_allclose(ours, ref_rollout(attentions, fusion, ratio, grads, "grad"), rtol=1e-5, atol=1e-6)


def test_gae_matches_chefer_update_rule():
    attentions = random_attention(tokens=6, layers=5)
    grads = random_grads(attentions)
    ours = gae(attentions, grads).double().numpy()
    np.testing.assert_allclose(ours, ref_rollout(attentions, "mean", 0.0, grads, "gae"), rtol=1e-5, atol=1e-6)


def test_attention_rollout_honours_start_layer_and_the_kept_token():
    attentions = random_attention(tokens=6, layers=4, seed=7)
    settings = dict(head_fusion="max", discard_ratio=0.5, keep_index=3, start_layer=2)
    ours = attention_rollout(attentions, **settings).double().numpy()
    np.testing.assert_allclose(ours, ref_rollout(attentions[2:], "max", 0.5, keep=3), rtol=1e-5, atol=1e-6)
    for change in ({"keep_index": 0}, {"start_layer": 0}):
        other = attention_rollout(attentions, **{**settings, **change}).double().numpy()
        assert np.abs(other - ours).max() > 1e-3, change  # each setting matters on these inputs


def test_token_relevance_weighs_the_rollouts_rows():
    generator = torch.Generator().manual_seed(8)
    rollout = torch.rand(2, 5, 5, dtype=torch.float64, generator=generator)
    weights = torch.rand(5, generator=generator)  # float32 weights over a float64 rollout
    relevance = token_relevance(rollout, weights)
    assert relevance.dtype == torch.float64
    expected = np.stack([weights.double().numpy() @ r for r in rollout.numpy()])
    np.testing.assert_allclose(relevance.numpy(), expected, rtol=1e-12, atol=0)


@pytest.mark.parametrize("rule", ["grad", "gae"])
def test_gradient_methods_honour_start_layer_kept_token_and_fusion(rule):
    # the chain starts at start_layer (earlier layers left out), the kept token's self-attention
    # survives the discard, and the heads are fused as asked, against the loops above
    attentions = random_attention(tokens=6, layers=4, seed=5)
    grads = random_grads(attentions, seed=6)
    function = {"grad": gradient_rollout, "gae": gae}[rule]
    settings = dict(head_fusion="max", discard_ratio=0.5, keep_index=3, start_layer=2)
    ours = function(attentions, grads, **settings).double().numpy()
    expected = ref_rollout(attentions[2:], "max", 0.5, grads[2:], rule, keep=3)
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-6)
    for change in ({"keep_index": 0}, {"head_fusion": "mean"}, {"start_layer": 0}):
        other = function(attentions, grads, **{**settings, **change}).double().numpy()
        assert np.abs(other - ours).max() > 1e-3, change  # each setting matters on these inputs


def test_gradients_are_paired_with_their_own_layer():
    """With only layer ``l``'s gradient nonzero, every other layer's factor is the identity, so the
    result is layer ``l``'s own factor, built here from ``A_l`` and ``∇A_l``: a gradient paired
    with another layer's map (e.g. backward-ordered gradients zipped with forward-ordered maps)
    gives another matrix."""
    attentions = random_attention(layers=3)
    grads = random_grads(attentions)
    eye = torch.eye(attentions[0].shape[-1])
    for layer in range(3):
        only = [g if i == layer else torch.zeros_like(g) for i, g in enumerate(grads)]
        weighted = attentions[layer] * grads[layer]
        torch.testing.assert_close(gae(attentions, only), eye + weighted.clamp(min=0).mean(1))
        step = 0.5 * weighted.mean(1).clamp(min=0) + 0.5 * eye
        torch.testing.assert_close(gradient_rollout(attentions, only, discard_ratio=0.0), step / step.sum(-1, keepdim=True))


def test_gradient_shapes_must_match():
    attentions = random_attention(layers=2)
    with pytest.raises(ValueError, match="one per layer"):
        gradient_rollout(attentions, random_grads(attentions)[:1])
    with pytest.raises(ValueError, match="differ in shape"):
        gae(attentions, [g[:, :2] for g in random_grads(attentions)])


def test_batch_entries_are_independent():
    attentions = random_attention(batch=4)
    grads = random_grads(attentions)
    full = gradient_rollout(attentions, grads, discard_ratio=0.7)
    for b in range(4):
        single = gradient_rollout([a[b : b + 1] for a in attentions], [g[b : b + 1] for g in grads], discard_ratio=0.7)
        torch.testing.assert_close(full[b : b + 1], single)


# ----------------------------------------------------------------------------- streaming accumulation
# forward with a 2-map buffer: the 3rd map overflows it (3 folded into the product), the last 2 stay held
@pytest.mark.parametrize(
    "direction,buffered_maps,expected_folds",
    [("backward", 0, 0), ("forward", 0, 5), ("forward", 2, 3), ("forward", 5, 0), ("forward", 100, 0)],
)
def test_chain_fold_equals_full_product_whatever_the_arrival_order(direction, buffered_maps, expected_folds):
    layers = [rollout_layer(a) for a in random_attention(layers=5)]
    map_bytes = layers[0].numel() * layers[0].element_size()
    weights = torch.zeros(7)
    weights[0] = 1.0
    expected = chain_layers(layers)[:, 0]
    orders = {"forward": [0, 1, 2, 3, 4], "backward": [4, 3, 2, 1, 0]}
    for order in (orders[direction], [2, 0, 4, 1, 3]):
        fold = ChainFold(weights, direction, buffer_bytes=buffered_maps * map_bytes)
        if direction == "backward":
            fold.start_backward(5)
        for layer in order:
            fold.add(layer, layers[layer])
        torch.testing.assert_close(fold.relevance(5), expected)
        assert fold.num_folded == expected_folds


@pytest.mark.parametrize("buffer_bytes", [0, float("inf")])
def test_forward_fold_of_a_merging_chain_weighs_its_last_maps_rows(buffer_bytes):
    # (16 -> 16 -> 4) tokens: the output weights weigh the last map's 4 rows, held or folded
    generator = torch.Generator().manual_seed(4)
    maps = [torch.rand(2, 16, 16, generator=generator), torch.rand(2, 4, 16, generator=generator)]
    weights = torch.rand(4, generator=generator)
    fold = ChainFold(weights, "forward", buffer_bytes=buffer_bytes)
    for layer, layer_map in enumerate(maps):
        fold.add(layer, layer_map)
    expected = torch.stack([weights @ m1 @ m0 for m0, m1 in zip(*maps)])
    torch.testing.assert_close(fold.relevance(2), expected)
    fold = ChainFold(torch.rand(16, generator=generator), "forward", buffer_bytes=buffer_bytes)
    for layer, layer_map in enumerate(maps):
        fold.add(layer, layer_map)
    with pytest.raises(ValueError, match="the last layer has 4 output tokens but 16 output weights"):
        fold.relevance(2)


@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_chain_fold_keeps_the_maps_precision(direction):
    # float32 output weights (as the explainer makes them) over float64 maps: the fold runs in the
    # maps' precision, so it matches the float64 product far below float32's resolution
    generator = torch.Generator().manual_seed(3)
    layers = [torch.rand(2, 6, 6, dtype=torch.float64, generator=generator) for _ in range(4)]
    weights = torch.rand(6, generator=generator)
    expected = torch.stack([weights.double() @ m3 @ m2 @ m1 @ m0 for m0, m1, m2, m3 in zip(*layers)])
    fold = ChainFold(weights, direction)
    if direction == "backward":
        fold.start_backward(4)
    for layer in (range(4) if direction == "forward" else range(3, -1, -1)):
        fold.add(layer, layers[layer])
    relevance = fold.relevance(4)
    assert relevance.dtype == torch.float64
    torch.testing.assert_close(relevance, expected, rtol=1e-12, atol=0)


def test_chain_fold_refuses_incomplete_chains():
    fold = ChainFold(torch.ones(3) / 3, "forward")
    fold.add(0, torch.eye(3)[None])
    with pytest.raises(RuntimeError, match="incomplete"):
        fold.relevance(2)
    # a map of a layer the model does not have is refused, not silently left out
    for direction in ("forward", "backward"):
        fold = ChainFold(torch.ones(3) / 3, direction)
        fold.add(3, torch.eye(3)[None])
        if direction == "backward":
            fold.start_backward(2)
        fold.add(1, torch.eye(3)[None])
        fold.add(0, torch.eye(3)[None])
        with pytest.raises(RuntimeError, match="1 out of order"):
            fold.relevance(2)
    with pytest.raises(ValueError, match="twice"):
        fold.add(0, torch.eye(3)[None])


@pytest.mark.parametrize("fusion", ["mean", "max", "min"])
@pytest.mark.parametrize("discard", [0.0, 0.5, 0.9])
@pytest.mark.parametrize("keep_index", [0, 2, None])
def test_numpy_cpu_path_equals_the_torch_path(fusion, discard, keep_index):
    from hf_vit_rollout.methods.rollout import _rollout_layer_numpy, _rollout_layer_torch

    attention = random_attention(batch=3, heads=4, tokens=9, layers=1)[0]
    tied = attention.clone()
    tied[1] = 1.0 / 9  # uniform: every entry ties at the threshold
    tied[2, :, :3] = torch.tensor([0.5, 0.25, 0.25] + [0.0] * 6)  # exact zeros and repeated values
    strided = torch.randn(3, 9, 4, 9).softmax(-1).transpose(1, 2)  # not contiguous
    one_head = random_attention(batch=2, heads=1, tokens=9, layers=1)[0]
    for a in (attention, tied, strided, one_head):
        expected = _rollout_layer_torch(a, fusion, discard, keep_index)
        got = _rollout_layer_numpy(a, fusion, discard, keep_index)
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-7)
        assert torch.equal(got == 0, expected == 0)  # the same entries discarded
    assert rollout_layer(attention.requires_grad_()).requires_grad  # autograd input: torch path
    with pytest.raises(ValueError, match="unknown head_fusion"):
        _rollout_layer_numpy(attention.detach(), "median", 0.0, 0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_kth_smallest_agrees_with_kthvalue(dtype):
    torch.manual_seed(0)
    flat = torch.rand(5, 300).to(dtype)
    flat[1] = torch.randint(0, 4, (300,)).to(dtype)  # heavy ties
    flat[2, :7] = float("nan")  # NaN sorts last in both
    for k in (1, 150, 299, 300):
        expected = flat.kthvalue(k, dim=-1, keepdim=True).values
        got = kth_smallest(flat, k)
        assert got.dtype == dtype and got.shape == (5, 1)
        torch.testing.assert_close(got, expected, equal_nan=True)


def test_discard_drops_exactly_k_entries_even_with_ties():
    flat = torch.ones(2, 5, 5)  # every entry ties at the threshold
    flat[1, 2] = 0.5  # a row of lower values, then ties
    out = discard_lowest(flat, 0.4, keep_index=None)
    assert ((out == 0).sum(dim=(1, 2)) == 10).all()
    assert (out[1, 2] == 0).all()  # the strictly lower values go first
    protected = discard_lowest(torch.ones(1, 4, 4), 0.5)
    assert protected[0, 0, 0] == 1 and (protected == 0).sum() == 7  # 8 chosen, the CLS entry kept


def _keep_first_discard(fused, ratio):
    """The original tool's discard on one ``(N, N)`` map: the ``ratio`` smallest entries zeroed, entry 0 kept."""
    flat = fused.flatten().clone()
    order = flat.argsort()[: int(flat.numel() * ratio)]
    flat[order[order != 0]] = 0
    return flat.reshape(fused.shape)


def test_the_functions_defaults_are_the_papers():
    """Called with their defaults, the gradient methods, Transformer Attribution and LeGrad compute
    the papers' formulas, written out here: mean over heads, nothing discarded (and where a ratio is
    given, the class token's self-attention kept), every layer from the first, minimum over all
    tokens when no prefix tokens are named."""
    from hf_vit_rollout.methods import gae_layer, gradient_rollout_layer, legrad, transformer_attribution
    from hf_vit_rollout.methods import transformer_attribution_layer

    attentions = random_attention(batch=1, tokens=5, layers=3)
    grads = random_grads(attentions)
    for g in grads:
        g[:, :, 0, 0] = 1e-3  # the class token's self-attention: small, so a discard would drop it
        g[:, :, :, 0] = g[:, :, :, 0].clamp(max=0)  # token 0 holds LeGrad's minimum (0)
        g[:, :, 0, 0] = 1e-3
    eye = torch.eye(5)
    a, g = attentions[0], grads[0]
    weighted = a * g
    step = 0.5 * weighted.mean(1).clamp(min=0) + 0.5 * eye
    torch.testing.assert_close(gradient_rollout_layer(a, g), step / step.sum(-1, keepdim=True))
    steps = []
    for a_l, g_l in zip(attentions, grads):
        s = 0.5 * (a_l * g_l).mean(1).clamp(min=0) + 0.5 * eye
        steps.append(s / s.sum(-1, keepdim=True))
    torch.testing.assert_close(gradient_rollout(attentions, grads), steps[2] @ steps[1] @ steps[0])
    g_pos = g.abs()  # no zeros after the clamp, so the discard's threshold falls above the tiny (0, 0)
    g_pos[:, :, 0, 0] = 1e-3
    discarded = _keep_first_discard((a * g_pos).mean(1)[0], 0.6)
    step = 0.5 * discarded + 0.5 * eye
    torch.testing.assert_close(gradient_rollout_layer(a, g_pos, discard_ratio=0.6)[0], step / step.sum(-1, keepdim=True))
    positive = weighted.clamp(min=0).mean(1)
    torch.testing.assert_close(gae_layer(a, g), eye + positive)
    kept = _keep_first_discard(positive[0], 0.6)
    torch.testing.assert_close(gae_layer(a, g, discard_ratio=0.6)[0], eye + kept)
    torch.testing.assert_close(gae(attentions[:1], grads[:1], discard_ratio=0.6)[0], eye + kept)
    torch.testing.assert_close(transformer_attribution_layer(a, g, discard_ratio=0.6)[0], eye + kept)
    factors = [eye + (a_l * g_l).clamp(min=0).mean(1) for a_l, g_l in zip(attentions, grads)]
    torch.testing.assert_close(transformer_attribution(attentions, grads), factors[2] @ factors[1] @ factors[0])
    rows = sum(g_l.clamp(min=0).mean(1).mean(1) for g_l in grads)
    torch.testing.assert_close(legrad(grads), rows - rows.amin(1, keepdim=True))


def test_the_first_layer_can_be_named_from_the_end():
    from hf_vit_rollout.methods import check_layer, check_start_layer

    assert check_layer(-3, 3) == 0 and check_start_layer(-3, 3) == 0


def _keep_first_discard_stable(fused, ratio):
    """As :func:`_keep_first_discard`, ties at the threshold dropped in row-major order (first first)."""
    flat = fused.flatten().clone()
    order = flat.argsort(stable=True)[: int(flat.numel() * ratio)]
    flat[order[order != 0]] = 0
    return flat.reshape(fused.shape)


@pytest.mark.parametrize("fusion", ["mean", "max", "min"])
@pytest.mark.parametrize("ratio", [0.0, 0.03, 0.3, 0.9])
@pytest.mark.parametrize("path", ["numpy", "torch"])
@pytest.mark.parametrize("tokens,ties", [(6, False), (40, False), (6, True)])
def test_rollout_layer_on_both_paths_equals_the_original_tools_formula(fusion, ratio, path, tokens, ties):
    """Rollout's layer map, written out: fuse the heads, zero the ``ratio`` smallest entries of each
    image's map (the class token's self-attention kept), ``0.5·A + 0.5·I``, rows renormalised. Float32
    CPU inputs without gradient history take the numpy path, float64 the torch one; both must equal it,
    with the defaults (``discard_ratio=0``, ``keep_index=0``) equal to passing them."""
    from hf_vit_rollout.methods import rollout_layer

    attention = random_attention(batch=3, heads=3, tokens=tokens, layers=1, seed=7)[0]
    if ties:  # a third of the entries equal in every head: the discard's threshold falls on ties
        attention = attention.where(torch.arange(tokens * tokens).reshape(tokens, tokens) % 3 != 1, torch.tensor(0.05))
    attention = attention.float() if path == "numpy" else attention.double()
    fused = {"mean": attention.mean(1), "max": attention.amax(1), "min": attention.amin(1)}[fusion]
    eye = torch.eye(tokens, dtype=attention.dtype)
    for b in range(3):
        kept = _keep_first_discard_stable(fused[b], ratio)
        step = 0.5 * kept + 0.5 * eye
        got = rollout_layer(attention, fusion, ratio, 0)[b]
        torch.testing.assert_close(got.to(attention.dtype), step / step.sum(-1, keepdim=True))
    if ratio == 0.0:
        from hf_vit_rollout.methods import attention_rollout

        torch.testing.assert_close(rollout_layer(attention, fusion), rollout_layer(attention, fusion, 0.0, 0))
        layers = [attention, attention.flip(-1)]
        torch.testing.assert_close(attention_rollout(layers, fusion), attention_rollout(layers, fusion, 0.0, 0, 0))


# ------------------------------------------------------------------ mutmut survivors of attribution, legrad,
# layers and attention (docs/testing.md)
def test_transformer_attribution_fuses_heads_as_asked():
    from hf_vit_rollout.methods.attribution import transformer_attribution

    g = torch.Generator().manual_seed(7)
    relevances = [torch.randn(2, 3, 5, 5, generator=g) for _ in range(3)]
    grads = [torch.randn(2, 3, 5, 5, generator=g) for _ in range(3)]
    for fusion, fuse in (("max", lambda t: t.amax(1)), ("min", lambda t: t.amin(1)), ("mean", lambda t: t.mean(1))):
        expected = torch.eye(5).expand(2, 5, 5)
        for r, d in zip(relevances, grads):  # R <- (I + fuse_h((∇A ⊙ R_A)+)) R, first layer first
            expected = (torch.eye(5) + fuse((r * d).clamp(min=0))) @ expected
        torch.testing.assert_close(transformer_attribution(relevances, grads, head_fusion=fusion), expected)


def test_transformer_attribution_layer_protects_only_the_kept_token():
    from hf_vit_rollout.methods.attribution import transformer_attribution_layer

    relevance = torch.ones(1, 1, 4, 4) + torch.arange(16.0).reshape(1, 1, 4, 4)  # [0, 0] is the smallest entry
    grad = torch.ones(1, 1, 4, 4)
    kept = transformer_attribution_layer(relevance, grad, "mean", 0.25, keep_index=0)
    unprotected = transformer_attribution_layer(relevance, grad, "mean", 0.25, keep_index=None)
    assert float(kept[0, 0, 0]) == 2.0  # 1 (identity) + its own value, never discarded
    assert float(unprotected[0, 0, 0]) == 1.0  # discarded with the other three smallest: identity only


@pytest.mark.parametrize("name", ["legrad_layer", "raw_attention_layer"])
def test_layer_functions_fuse_heads_by_the_mean_by_default(name):
    import importlib

    module = "hf_vit_rollout.methods." + ("legrad" if name == "legrad_layer" else "attention")
    function = getattr(importlib.import_module(module), name)
    a = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(3))
    if name == "legrad_layer":
        torch.testing.assert_close(function(None, a - 0.5), (a - 0.5).clamp(min=0).mean(1).mean(-2))
    else:
        torch.testing.assert_close(function(a), a.mean(1))


def test_attention_maps_keep_a_float64_models_precision():
    from hf_vit_rollout.methods.attention import head_maps, raw_attention

    a = torch.rand(1, 2, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    weights = torch.tensor([1.0, 0.0, 0.0])  # float32, as layouts make them
    torch.testing.assert_close(head_maps(a, weights), a[:, :, 0])
    assert head_maps(a, weights).dtype == torch.float64
    torch.testing.assert_close(raw_attention([a.float()], weights), a.float().mean(1)[:, 0])
    torch.testing.assert_close(raw_attention([a], weights.double()), a.float().mean(1)[:, 0])  # float64 weights too


@pytest.mark.parametrize(
    "check,args,message",
    [
        ("check_layer", (5, 3), "layer 5 is out of range: the model has 3 attention layers (0 to 2, or -1 to -3 from the end)"),
        ("check_head", (4, 2), "head 4 is out of range: the model's attention layers have 2 heads (0 to 1); pass head=None to fuse them"),
        ("check_start_layer", (-4, 3), "start_layer -4 is out of range: the model has 3 attention layers, so start_layer must "
                                       "lie in 0 to 2 (or -1 to -3 from the end)"),
    ],
)
def test_range_errors_name_the_valid_range_exactly(check, args, message):
    from hf_vit_rollout.methods import layers

    with pytest.raises(ValueError) as caught:
        getattr(layers, check)(*args)
    assert str(caught.value) == message
