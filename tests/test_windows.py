"""Window attention and patch merging folded into token space, checked against small random Swins."""

from __future__ import annotations

import copy

import pytest
import torch
import transformers as T
from transformers.models.swin.modeling_swin import window_partition

from hf_vit_rollout.methods import gae_layer, rollout_layer
from hf_vit_rollout.methods.chain import ChainFold
from hf_vit_rollout.families.window_layout import WindowedLayout
from hf_vit_rollout.families.windows import (
    fold_layer_map,
    fold_window_attention,
    merge_children,
    merge_matrix,
    merged_grid,
    window_token_index,
)

TINY = dict(patch_size=2, embed_dim=16, depths=[2, 2], num_heads=[2, 2], window_size=4, num_channels=3)
FAMILIES = {
    "swin": (T.SwinConfig, T.SwinModel),
    "swinv2": (T.Swinv2Config, T.Swinv2Model),
}


def _model(family: str, image_size, tmp_path):
    """A random model of ``family``, saved and loaded back, with every parameter (biases too) random."""
    config_class, model_class = FAMILIES[family]
    torch.manual_seed(0)
    model = model_class(config_class(image_size=image_size, **TINY))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    model.save_pretrained(tmp_path)
    loaded = model_class.from_pretrained(tmp_path, attn_implementation="eager").eval()
    return loaded


def _blocks(model):
    encoder = model.encoder
    return [block for stage in encoder.layers for block in stage.blocks]


def _run(model, pixels):
    """Per block: input, grid, window, shift, attention, and the attention branch in token order."""
    records = []
    handles = []
    v2 = isinstance(model, T.Swinv2Model)
    for block in _blocks(model):
        record = {"block": block}
        records.append(record)

        def on_block(module, args, output, record=record):
            record.update(x=args[0], grid=tuple(int(v) for v in args[1]), window=int(module.window_size))
            record.update(shift=int(module.shift_size), attention=output[1])

        def on_branch(module, args, output, record=record):
            record["branch"] = args[0]  # v1: x + branch (LN after); v2: the branch itself

        handles.append(block.register_forward_hook(on_block))
        norm = block.layernorm_before if v2 else block.layernorm_after
        handles.append(norm.register_forward_hook(on_branch))
    try:
        with torch.no_grad():
            model(pixel_values=pixels, output_attentions=True)
    finally:
        for handle in handles:
            handle.remove()
    for record in records:
        if not v2:
            record["branch"] = record["branch"] - record["x"]
    return records


def _branch_from_folded(record, v2: bool) -> torch.Tensor:
    """The attention branch rebuilt from the folded map: ``o_proj(A·V + (1 - rowsum(A))·b_v)`` per head.

    Padded window slots hold zero vectors whose values are the value projection's bias ``b_v``, so
    the attention mass that the folded map drops (padding columns) multiplies ``b_v``.
    """
    block, x = record["block"], record["x"]
    attention = fold_window_attention(record["attention"], record["grid"], record["window"], record["shift"])
    if v2:
        value_proj, out_proj, tokens = block.attention.self.value, block.attention.output.dense, x
    else:
        value_proj, out_proj, tokens = block.attention.v_proj, block.attention.o_proj, block.layernorm_before(x)
    batch, n, channels = tokens.shape
    heads = attention.shape[1]
    values = value_proj(tokens).view(batch, n, heads, -1).transpose(1, 2)  # (B, h, N, d)
    bias = value_proj.bias.view(heads, 1, -1)
    mixed = attention @ values + (1 - attention.sum(-1, keepdim=True)) * bias
    return out_proj(mixed.transpose(1, 2).reshape(batch, n, channels))


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("size", [(32, 32), (28, 36)], ids=["square", "padded_non_square"])
def test_folded_map_rebuilds_every_blocks_attention_output(family, size, tmp_path):
    model = _model(family, size, tmp_path)
    pixels = torch.randn(2, 3, *size)
    records = _run(model, pixels)
    assert {r["shift"] for r in records} == {0, 2}, "both plain and shifted blocks must be checked"
    if size == (28, 36):
        assert any(r["grid"][0] % r["window"] or r["grid"][1] % r["window"] for r in records)
    with torch.no_grad():
        for record in records:
            rebuilt = _branch_from_folded(record, family == "swinv2")
            torch.testing.assert_close(rebuilt, record["branch"], rtol=1e-4, atol=1e-5)


def test_a_wrong_shift_does_not_rebuild_the_output(tmp_path):
    """The check above is sharp: undoing the shift by one token too few breaks it."""
    model = _model("swin", (32, 32), tmp_path)
    record = next(r for r in _run(model, torch.randn(1, 3, 32, 32)) if r["shift"])
    record = dict(record, shift=record["shift"] - 1)
    with torch.no_grad():
        assert not torch.allclose(_branch_from_folded(record, False), record["branch"], atol=1e-3)


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("size", [(28, 36)])
def test_layout_from_config_matches_what_the_model_ran(family, size, tmp_path):
    model = _model(family, (32, 32), tmp_path)
    records = _run(model, torch.randn(1, 3, *size))
    layout = WindowedLayout.from_config(model.config, size)
    assert [(b.grid, b.window, b.shift) for b in layout.blocks] == [(r["grid"], r["window"], r["shift"]) for r in records]
    assert layout.stage_grids[0] == (-(-size[0] // 2), -(-size[1] // 2))
    assert layout.stage_grids[1] == merged_grid(layout.stage_grids[0])
    assert layout.chain_steps() == [("block", 0), ("block", 1), ("merge", 0), ("block", 2), ("block", 3)]


@pytest.mark.parametrize("grid,window,shift", [((8, 8), 4, 0), ((8, 8), 4, 2), ((6, 10), 4, 2), ((5, 7), 3, 1)])
def test_window_index_is_the_models_partition_of_token_ids(grid, window, shift):
    height, width = grid
    pad_h, pad_w = -(-height // window) * window, -(-width // window) * window
    ids = torch.full((1, pad_h, pad_w, 1), -1.0)
    ids[0, :height, :width, 0] = torch.arange(height * width, dtype=torch.float32).view(height, width)
    rolled = torch.roll(ids, shifts=(-shift, -shift), dims=(1, 2))
    expected = window_partition(rolled, window).reshape(-1, window * window).long()
    assert torch.equal(window_token_index(grid, window, shift), expected)


def test_fold_is_block_diagonal_and_keeps_every_entry():
    attention = torch.rand(2 * 4, 3, 16, 16)
    folded = fold_window_attention(attention, (8, 8), 4, 0)
    assert folded.shape == (2, 3, 64, 64)
    assert torch.allclose(folded.sum((-1, -2)), attention.view(2, 4, 3, 16, 16).sum((1, -1, -2)))
    window_of = window_token_index((8, 8), 4).flatten().argsort() // 16  # token -> window
    same = window_of[:, None] == window_of[None, :]
    assert folded[:, :, ~same].abs().max() == 0
    with pytest.raises(ValueError, match="does not fit a 8×8 grid"):
        fold_window_attention(attention[:5], (8, 8), 4, 0)


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("grid", [(8, 8), (7, 9)])
def test_merge_children_follow_the_models_concatenation(family, grid, tmp_path):
    """Linear probe: with the merge's norm taken out, output ``t`` = ``Σ_k W_k · x[child_k(t)]``."""
    model = _model(family, (32, 32), tmp_path)
    merge = copy.deepcopy(model.encoder.layers[0].downsample)
    merge.norm = torch.nn.Identity()
    channels = merge.reduction.in_features // 4
    x = torch.randn(2, grid[0] * grid[1], channels)
    with torch.no_grad():
        out = merge(x, grid)
        padded = torch.cat([x, torch.zeros(2, 1, channels)], dim=1)  # index -1 → the zero token
        children = merge_children(grid)
        weights = merge.reduction.weight.view(-1, 4, channels)  # (2C, slot, C)
        expected = torch.einsum("btkc,okc->bto", padded[:, children], weights)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("grid", [(8, 8), (7, 9), (1, 3)])
def test_merge_matrix_averages_the_real_children(grid):
    matrix = merge_matrix(grid)
    assert matrix.shape == (merged_grid(grid)[0] * merged_grid(grid)[1], grid[0] * grid[1])
    torch.testing.assert_close(matrix.sum(1), torch.ones(matrix.shape[0]))
    assert torch.equal((matrix > 0).sum(0), torch.ones(grid[0] * grid[1], dtype=torch.long))  # one parent each
    x = torch.randn(grid[0], grid[1])
    pooled = torch.nn.functional.avg_pool2d(x[None, None], 2, ceil_mode=True)[0, 0]  # averages real cells
    torch.testing.assert_close(matrix @ x.reshape(-1), pooled.reshape(-1))


def _chain(records, layout, method, batch):
    spec_args = ("mean", 0.0, None)
    maps = {}
    for step, (kind, index) in enumerate(layout.chain_steps()):
        if kind == "merge":
            maps[step] = layout.merge_map(index, batch)
        else:
            block, record = layout.blocks[index], records[index]
            maps[step] = fold_layer_map(method, record["attention"], record.get("grad"), block, *spec_args)
    return maps


@pytest.mark.parametrize("direction", ["forward", "backward"])
@pytest.mark.parametrize("buffer_bytes", [0, float("inf")])
def test_chain_with_merging_maps_equals_the_explicit_product(direction, buffer_bytes):
    torch.manual_seed(0)
    shapes = [(16, 16), (16, 16), (4, 16), (4, 4), (1, 4), (1, 1)]
    maps = [torch.rand(2, *s) for s in shapes]
    weights = torch.rand(1)
    expected = torch.stack([weights @ m5 @ m4 @ m3 @ m2 @ m1 @ m0 for m0, m1, m2, m3, m4, m5 in zip(*maps)])
    fold = ChainFold(weights, direction, buffer_bytes=buffer_bytes)
    order = [3, 0, 5, 1, 4, 2]
    for layer in order[:3]:
        fold.add(layer, maps[layer])
    if direction == "backward":
        fold.start_backward(len(maps))
    for layer in order[3:]:
        fold.add(layer, maps[layer])
    assert expected.shape == (2, 16)
    torch.testing.assert_close(fold.relevance(len(maps)), expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("direction", ["forward", "backward"])
def test_chain_refuses_maps_that_do_not_link(direction):
    fold = ChainFold(torch.ones(4), direction)
    if direction == "backward":
        fold.start_backward(2)
        fold.add(1, torch.rand(1, 4, 16))
        with pytest.raises(ValueError, match="does not link to layer 1: it has 8 output tokens where layer 1 has 16"):
            fold.add(0, torch.rand(1, 8, 8))
    else:
        fold.add(0, torch.rand(1, 16, 16))
        with pytest.raises(ValueError, match="does not link to layer 0: it has 8 input tokens where layer 0 has 16"):
            fold.add(1, torch.rand(1, 4, 8))
    with pytest.raises(ValueError, match="5 output tokens but 4 output weights"):
        other = ChainFold(torch.ones(4), "backward")
        other.start_backward(1)
        other.add(0, torch.rand(1, 5, 5))


@pytest.mark.parametrize("family", list(FAMILIES))
def test_hierarchical_rollout_is_a_distribution_on_the_first_grid_and_batch_independent(family, tmp_path):
    size = (28, 36)
    model = _model(family, size, tmp_path)
    pixels = torch.randn(3, 3, *size)
    layout = WindowedLayout.from_config(model.config, size)

    def relevance(batch_pixels):
        records = _run(model, batch_pixels)
        maps = _chain(records, layout, lambda a, g, *args: rollout_layer(a, *args), batch_pixels.shape[0])
        fold = ChainFold(layout.output_weights(), "forward")
        for step, layer_map in maps.items():
            fold.add(step, layer_map)
        return layout.patch_relevance(fold.relevance(len(maps)))

    together = relevance(pixels)
    assert together.shape == (3, 14, 18)
    torch.testing.assert_close(together.sum((1, 2)), torch.ones(3))
    for i in range(3):
        torch.testing.assert_close(relevance(pixels[i : i + 1])[0], together[i], rtol=1e-4, atol=1e-6)


def test_gae_folds_attention_and_gradient_alike():
    """The folded gradient pairs with the folded attention entry by entry."""
    torch.manual_seed(0)
    layout = WindowedLayout.from_config(T.SwinConfig(image_size=16, **TINY), (16, 16))
    block = layout.blocks[1]
    attention = torch.rand(2 * block.num_windows, 2, 16, 16)
    grad = torch.randn_like(attention)
    folded = fold_layer_map(gae_layer, attention, grad, block, "mean", 0.0, None)
    direct = gae_layer(
        fold_window_attention(attention, block.grid, block.window, block.shift),
        fold_window_attention(grad, block.grid, block.window, block.shift),
    )
    torch.testing.assert_close(folded, direct)
    assert folded.shape == (2, 64, 64)
