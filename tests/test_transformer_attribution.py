"""Transformer Attribution (Chefer et al., CVPR 2021) on a Hugging Face ViT equals a straightforward
reference written from the paper and its published code, on a small model defined here.

The reference is a tiny pre-LN ViT with explicit, layer-by-layer relevance propagation: LRP-αβ
(α=1, β=0, bias ignored) for linear layers, identity for LayerNorm, GELU and softmax, the matmul rule
``R_x = x ⊙ ∂Z/∂x · R/Z`` halved for each operand, and the normalised addition rule for the
residual connections; then ``mean_h(max(∇A ⊙ R_A, 0))`` rolled out with the identity from
``start_layer``. Sums in the addition rule are per sample (the published code sums over the batch).
"""

from __future__ import annotations

import pytest
import torch
import transformers as T
from torch import nn

from hf_vit_rollout.lrp import chefer_relevance
from hf_vit_rollout.methods import transformer_attribution


def safe_divide(a, b):
    den = b.clamp(min=1e-9) + b.clamp(max=1e-9)
    den = den + den.eq(0).to(den.dtype) * 1e-9
    return a / den * b.ne(0).to(b.dtype)


def relprop_linear(x, weight, relevance):
    """LRP-α1β0 through ``x Wᵀ``: relevance of positive contributions only."""
    pw, nw = weight.clamp(min=0), weight.clamp(max=0)
    px, nx = x.clamp(min=0), x.clamp(max=0)
    s = safe_divide(relevance, px @ pw.T + nx @ nw.T)
    return px * (s @ pw) + nx * (s @ nw)


def relprop_add(a, b, relevance):
    """Normalised addition rule, sums per sample."""
    s = safe_divide(relevance, a + b)
    ra, rb = a * s, b * s
    dims = tuple(range(1, a.dim()))
    sum_a, sum_b = ra.sum(dims, keepdim=True), rb.sum(dims, keepdim=True)
    total = relevance.sum(dims, keepdim=True)
    fact_a = safe_divide(sum_a.abs(), sum_a.abs() + sum_b.abs()) * total
    fact_b = safe_divide(sum_b.abs(), sum_a.abs() + sum_b.abs()) * total
    return ra * safe_divide(fact_a, sum_a), rb * safe_divide(fact_b, sum_b)


class TinyViT(nn.Module):
    """Pre-LN ViT (timm layout: one qkv projection per block) with a relprop pass."""

    def __init__(self, dim, heads, depth, hidden, classes, eps):
        super().__init__()
        self.heads, self.eps = heads, eps
        self.blocks = nn.ModuleList()
        for _ in range(depth):
            block = nn.ModuleDict(
                dict(
                    norm1=nn.LayerNorm(dim, eps=eps),
                    qkv=nn.Linear(dim, 3 * dim),
                    proj=nn.Linear(dim, dim),
                    norm2=nn.LayerNorm(dim, eps=eps),
                    fc1=nn.Linear(dim, hidden),
                    fc2=nn.Linear(hidden, dim),
                )
            )
            self.blocks.append(block)
        self.norm = nn.LayerNorm(dim, eps=eps)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        """``x``: ``(B, N, D)`` embedded tokens (the input of the first block)."""
        self.saved = []
        b, n, d = x.shape
        for block in self.blocks:
            s = {"x": x}
            s["n1"] = block["norm1"](x)
            qkv = block["qkv"](s["n1"]).reshape(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
            s["q"], s["k"], s["v"] = qkv[0], qkv[1], qkv[2]
            scale = (d // self.heads) ** -0.5
            s["attn"] = (s["q"] @ s["k"].transpose(-1, -2) * scale).softmax(-1)
            s["attn"].retain_grad()
            s["mixed"] = (s["attn"] @ s["v"]).transpose(1, 2).reshape(b, n, d)
            s["attn_out"] = block["proj"](s["mixed"])
            s["h"] = x + s["attn_out"]
            s["n2"] = block["norm2"](s["h"])
            s["act"] = nn.functional.gelu(block["fc1"](s["n2"]))
            s["mlp_out"] = block["fc2"](s["act"])
            x = s["h"] + s["mlp_out"]
            self.saved.append(s)
        self.pooled = self.norm(x)[:, 0]
        return self.head(self.pooled)

    def relprop(self, one_hot):
        relevance = relprop_linear(self.pooled, self.head.weight, one_hot)
        tokens = torch.zeros_like(self.saved[-1]["x"])
        tokens[:, 0] = relevance  # pool (index select), then the final norm: identity
        relevance = tokens
        cams = []
        for block, s in zip(reversed(self.blocks), reversed(self.saved)):
            r_res, r_mlp = relprop_add(s["h"], s["mlp_out"], relevance)
            r_mlp = relprop_linear(s["act"], block["fc2"].weight, r_mlp)  # GELU: identity
            r_mlp = relprop_linear(s["n2"], block["fc1"].weight, r_mlp)  # norm2: identity
            relevance = r_res + r_mlp  # clone
            r_res, r_attn = relprop_add(s["x"], s["attn_out"], relevance)
            b, n, d = r_attn.shape
            r_mixed = relprop_linear(s["mixed"], block["proj"].weight, r_attn)
            r_mixed = r_mixed.reshape(b, n, self.heads, -1).transpose(1, 2)
            z = s["attn"] @ s["v"]
            ratio = safe_divide(r_mixed, z)
            r_a = s["attn"] * (ratio @ s["v"].transpose(-1, -2)) / 2
            r_v = s["v"] * (s["attn"].transpose(-1, -2) @ ratio) / 2
            cams.append(r_a)
            z = s["q"] @ s["k"].transpose(-1, -2)  # softmax: identity; the scale sits outside the product
            ratio = safe_divide(r_a, z)
            r_q = s["q"] * (ratio @ s["k"]) / 2
            r_k = s["k"] * (ratio.transpose(-1, -2) @ s["q"]) / 2
            r_qkv = torch.stack([r_q, r_k, r_v]).permute(1, 3, 0, 2, 4).reshape(b, n, 3 * d)
            r_attn = relprop_linear(s["n1"], block["qkv"].weight, r_qkv)  # norm1: identity
            relevance = r_res + r_attn  # clone
        return list(reversed(cams))


def reference_attribution(tiny, tokens, target, start_layer):
    logits = tiny(tokens)
    logits[:, target].sum().backward()
    one_hot = torch.zeros_like(logits)
    one_hot[:, target] = 1.0
    cams = tiny.relprop(one_hot)
    eye = torch.eye(tokens.shape[1]).expand(tokens.shape[0], -1, -1)
    maps = [(s["attn"].grad * cam).clamp(min=0).mean(dim=1) + eye for s, cam in zip(tiny.saved, cams)]
    joint = maps[start_layer]
    for m in maps[start_layer + 1 :]:
        joint = m @ joint
    return joint[:, 0], cams


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    config = T.ViTConfig(
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=64,
        image_size=32,
        patch_size=8,
        num_labels=5,
        layer_norm_eps=1e-6,
        hidden_act="gelu",
    )
    hf = T.ViTForImageClassification(config).eval()
    with torch.no_grad():  # non-trivial biases and LayerNorm affine parameters
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    tiny = TinyViT(32, 4, 3, 64, 5, 1e-6)
    with torch.no_grad():
        for block, layer in zip(tiny.blocks, hf.vit.layers):
            a = layer.attention
            block["qkv"].weight.copy_(torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]))
            block["qkv"].bias.copy_(torch.cat([a.q_proj.bias, a.k_proj.bias, a.v_proj.bias]))
            block["proj"].load_state_dict(a.o_proj.state_dict())
            block["norm1"].load_state_dict(layer.layernorm_before.state_dict())
            block["norm2"].load_state_dict(layer.layernorm_after.state_dict())
            block["fc1"].load_state_dict(layer.mlp.fc1.state_dict())
            block["fc2"].load_state_dict(layer.mlp.fc2.state_dict())
        tiny.norm.load_state_dict(hf.vit.layernorm.state_dict())
        tiny.head.load_state_dict(hf.classifier.state_dict())
    return hf, tiny


@pytest.mark.parametrize("start_layer", [0, 1])
def test_transformer_attribution_equals_reference(pair, start_layer):
    hf, tiny = pair
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    target = 3
    ours = chefer_relevance(hf, pixels, target=target)
    with torch.no_grad():
        tokens = hf.vit.embeddings(pixels)
        logits = hf(pixel_values=pixels).logits
    torch.testing.assert_close(tiny(tokens).detach(), logits, rtol=1e-5, atol=1e-5)
    rows, cams = [], []
    for i in range(2):  # one image at a time: the reference's sums would mix a batch
        row, cam = reference_attribution(tiny, tokens[i : i + 1].clone(), target, start_layer)
        rows.append(row.detach())
        cams.append(cam)
    for layer in range(3):
        expected = torch.cat([c[layer].detach() for c in cams])
        torch.testing.assert_close(ours.attention_relevance[layer], expected, rtol=1e-3, atol=1e-7)
    matrix = transformer_attribution(ours.attention_relevance, ours.attention_grads, start_layer=start_layer)
    torch.testing.assert_close(matrix[:, 0], torch.cat(rows), rtol=1e-3, atol=1e-7)
    assert ours.targets == [target, target]
