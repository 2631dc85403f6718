"""Raw attention, start_layer for the product methods, and the layer/head range checks (pure functions)."""

from __future__ import annotations

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image

from hf_vit_rollout.methods import (
    attention_rollout,
    chain_layers,
    check_head,
    check_layer,
    check_start_layer,
    gae,
    gae_layer,
    gradient_rollout,
    gradient_rollout_layer,
    head_maps,
    raw_attention,
    rollout_layer,
    transformer_attribution,
)
from hf_vit_rollout.methods.chain import ChainFold
from hf_vit_rollout.testing import clustered_attention
from hf_vit_rollout.viz import plot_heads

matplotlib.use("Agg")

LAYERS = clustered_attention(batch=2, heads=3, tokens=10, layers=4, groups=3, seed=1)
GRADS = [torch.randn(a.shape, generator=torch.Generator().manual_seed(i)) for i, a in enumerate(LAYERS)]
CLS = torch.zeros(10)
CLS[0] = 1.0


def test_raw_attention_reads_the_output_row_of_one_layer_and_head():
    last = LAYERS[-1]
    torch.testing.assert_close(raw_attention(LAYERS, CLS), last.mean(dim=1)[:, 0])
    torch.testing.assert_close(raw_attention(LAYERS, CLS, layer=1, head=2), LAYERS[1][:, 2, 0])
    torch.testing.assert_close(raw_attention(LAYERS, CLS, layer=0, head_fusion="max"), LAYERS[0].amax(dim=1)[:, 0])
    mean_pool = torch.zeros(10)
    mean_pool[1:] = 1 / 9
    torch.testing.assert_close(raw_attention(LAYERS, mean_pool, head=-1), LAYERS[-1][:, -1, 1:].mean(dim=1))
    torch.testing.assert_close(head_maps(last, CLS), last[:, :, 0])


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: check_layer(4, 4), "layer 4 is out of range: the model has 4 attention layers"),
        (lambda: check_layer(-5, 4), "the model has 4 attention layers"),
        (lambda: check_layer(1.5, 4), "layer must be an integer"),
        (lambda: check_layer(True, 4), "layer must be an integer"),
        (lambda: check_head(3, 3), "head 3 is out of range: the model's attention layers have 3 heads"),
        (lambda: check_start_layer(12, 12), "start_layer 12 is out of range: the model has 12 attention layers"),
        (lambda: raw_attention(LAYERS, CLS, layer=7), "the model has 4 attention layers"),
        (lambda: raw_attention(LAYERS, CLS, head=5), "have 3 heads"),
        (lambda: attention_rollout(LAYERS, start_layer=4), "start_layer 4 is out of range: the model has 4"),
        (lambda: gae(LAYERS, GRADS, start_layer=-5), "the model has 4 attention layers"),
    ],
)
def test_range_errors_name_the_model_counts(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_negative_indices_count_from_the_end():
    assert check_layer(-1, 12) == 11 and check_head(-1, 3) == 2 and check_start_layer(-2, 12) == 10
    assert check_head(None, 3) is None


def test_start_layer_leaves_out_the_earlier_layers():
    maps = [rollout_layer(a) for a in LAYERS]
    torch.testing.assert_close(attention_rollout(LAYERS, start_layer=2), torch.bmm(maps[3], maps[2]))
    torch.testing.assert_close(attention_rollout(LAYERS, start_layer=-1), maps[3])
    torch.testing.assert_close(attention_rollout(LAYERS, start_layer=0), chain_layers(maps))
    g = [gae_layer(a, d) for a, d in zip(LAYERS, GRADS)]
    torch.testing.assert_close(gae(LAYERS, GRADS, start_layer=1), g[3] @ g[2] @ g[1])
    r = [gradient_rollout_layer(a, d) for a, d in zip(LAYERS, GRADS)]
    torch.testing.assert_close(gradient_rollout(LAYERS, GRADS, start_layer=3), r[3])
    # Transformer Attribution is GAE's factor on the attention relevance instead of the attention.
    relevance = [a * d for a, d in zip(LAYERS, GRADS)]
    expected = gae_layer(relevance[3], GRADS[3]) @ gae_layer(relevance[2], GRADS[2])
    torch.testing.assert_close(transformer_attribution(relevance, GRADS, start_layer=2), expected)


@pytest.mark.parametrize("direction", ["forward", "backward"])
@pytest.mark.parametrize("buffer_bytes", [0, float("inf")])
def test_chain_fold_start_layer_matches_the_product(direction, buffer_bytes):
    maps = [rollout_layer(a) for a in LAYERS]
    fold = ChainFold(CLS, direction, buffer_bytes=buffer_bytes, start_layer=1)
    order = range(4) if direction == "forward" else reversed(range(4))
    if direction == "backward":
        fold.start_backward(4)
    for layer in order:
        fold.add(layer, maps[layer])
    expected = torch.einsum("i,bij->bj", CLS, chain_layers(maps, start_layer=1))
    torch.testing.assert_close(fold.relevance(4), expected)


def test_chain_fold_start_layer_out_of_range():
    fold = ChainFold(CLS, "backward", start_layer=4)
    with pytest.raises(ValueError, match="start_layer 4 is out of range: the model has 4 attention layers"):
        fold.start_backward(4)
    for bad in (-1, True, 1.0):  # a bool or a float would index the layers as if it were an int
        with pytest.raises(ValueError, match="start_layer must be an integer >= 0"):
            ChainFold(CLS, "forward", start_layer=bad)


def test_plot_heads_shows_every_head():
    maps = head_maps(LAYERS[-1], CLS)[0, :, 1:].reshape(3, 3, 3).numpy()
    fig = plot_heads(maps, image=Image.new("RGB", (30, 20)), ncols=2, title="layer 3")
    shown = [ax for ax in fig.axes if ax.images]
    assert [ax.get_title() for ax in shown] == ["head 0", "head 1", "head 2"]
    assert shown[0].images[0].get_array().shape[:2] == (20, 30)
    fig = plot_heads(maps)
    assert np.allclose(fig.axes[1].images[0].get_array(), maps[1])
    with pytest.raises(ValueError, match="heads, grid_h, grid_w"):
        plot_heads(maps[0])


def test_explanation_plot_heads():
    from hf_vit_rollout import Explanation

    image = Image.new("RGB", (30, 20))
    heads = np.random.default_rng(0).random((3, 20, 30)).astype(np.float32)
    exp = Explanation(image, np.zeros((2, 3), np.float32), np.zeros((20, 30), np.float32), "attention",
                      params={"layer": 2}, head_heatmaps=heads)
    fig = exp.plot_heads()
    assert fig._suptitle.get_text() == "attention, layer 2"
    assert sum(1 for ax in fig.axes if ax.images) == 3
    with pytest.raises(ValueError, match="method='attention'"):
        Explanation(image, exp.mask, exp.heatmap, "rollout").plot_heads()
