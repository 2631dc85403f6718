"""LibraGrad (Mehri et al., CVPR 2025) through the explainer, against a reference written here from the
paper's gradient corrections: a ViT forward pass over the Hugging Face model's weights in which

* the LayerNorm's variance is detached (its normaliser is a constant for the backward pass),
* GELU's gate is detached (``x · Φ(x)`` with ``Φ(x)`` constant),
* the attention weights are computed from detached queries and keys (they are constants),

and nothing else changes; the explained score is the target's softmax probability and the map is
Input × Gradient at the tokens entering the first layer, summed over the embedding. Nothing of the
package's LRP or LibraGrad code is called by the reference.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import transformers as T

from hf_vit_rollout import RolloutExplainer
from hf_vit_rollout.lrp import LIBRAGRAD, libragrad_relevance, relevance_budget


def _layer_norm(module, x):
    mean = x.mean(-1, keepdim=True)
    var = (x - mean).pow(2).mean(-1, keepdim=True).detach()
    return (x - mean) / torch.sqrt(var + module.eps) * module.weight + module.bias


def reference(model, pixels, chosen, probability=True):
    """``(B, N)`` LibraGrad Input × Gradient of ``softmax(logits)[b, chosen[b]]`` for a ViT classifier."""
    vit = model.vit
    with torch.no_grad():
        tokens = vit.embeddings(pixels)
    x0 = tokens.clone().requires_grad_(True)
    x = x0
    b, n, d = x.shape
    for layer in vit.layers:
        att = layer.attention
        heads = model.config.num_attention_heads
        h = _layer_norm(layer.layernorm_before, x)

        def split(t):
            return t.view(b, n, heads, d // heads).transpose(1, 2)

        q, k, v = (split(F.linear(h, p.weight, p.bias)) for p in (att.q_proj, att.k_proj, att.v_proj))
        weights = torch.softmax(q.detach() @ k.detach().transpose(-1, -2) / math.sqrt(d // heads), dim=-1)
        mixed = (weights @ v).transpose(1, 2).reshape(b, n, d)
        x = x + F.linear(mixed, att.o_proj.weight, att.o_proj.bias)
        h = F.linear(_layer_norm(layer.layernorm_after, x), layer.mlp.fc1.weight, layer.mlp.fc1.bias)
        h = h * (0.5 * (1 + torch.erf(h / math.sqrt(2)))).detach()
        x = x + F.linear(h, layer.mlp.fc2.weight, layer.mlp.fc2.bias)
    logits = F.linear(_layer_norm(vit.layernorm, x)[:, 0], model.classifier.weight, model.classifier.bias)
    scores = (logits.softmax(-1) if probability else logits).gather(1, chosen[:, None]).sum()
    (grad,) = torch.autograd.grad(scores, x0)
    return (x0 * grad).sum(-1).detach(), logits.detach()


@pytest.fixture(scope="module")
def demo(demo_batch):
    return demo_batch


def test_libragrad_equals_the_reference_on_the_demo_model(demo):
    explainer, pixels, images = demo
    results = explainer(images, method="libragrad", target=[0, 1, 5, 9])
    expected, logits = reference(explainer.model, pixels, torch.tensor([0, 1, 5, 9]))
    with torch.no_grad():
        torch.testing.assert_close(logits, explainer.model(pixel_values=pixels).logits, rtol=1e-5, atol=1e-5)
    ours = torch.from_numpy(np.stack([r.token_relevance for r in results]))
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-6 * float(expected.abs().max()))
    direct = libragrad_relevance(explainer.model, pixels, target=[0, 1, 5, 9]).token_relevance
    torch.testing.assert_close(direct, expected, rtol=1e-5, atol=1e-6 * float(expected.abs().max()))


def test_libragrad_equals_the_reference_with_biased_random_weights(tmp_path):
    torch.manual_seed(0)
    config = T.ViTConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
                         image_size=32, patch_size=8, num_labels=5)
    model = T.ViTForImageClassification(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(tmp_path)
    T.ViTImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(tmp_path)
    explainer = RolloutExplainer.from_pretrained(str(tmp_path))
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    chosen = torch.tensor([4, 0, 2])
    expected, _ = reference(explainer.model, pixels, chosen)
    ours = explainer.relevance_maps(pixels, method="libragrad", target=chosen.tolist()).flatten(1)
    torch.testing.assert_close(ours, expected[:, 1:], rtol=1e-5, atol=1e-6 * float(expected.abs().max()))


def test_libragrad_is_complete_with_its_biases(demo):
    """FullGrad-completeness, the property LibraGrad restores: token Input × Gradient plus what the
    biases hold (bias × gradient of every linear layer and LayerNorm) is the explained logit, exactly
    (nothing is absorbed anywhere else); for the probability, the softmax over the logits adds its term."""
    explainer, pixels, _ = demo
    logit = relevance_budget(explainer.model, pixels, rules=LIBRAGRAD)
    assert set(logit.absorbed) == {"linear", "layer_norm", "activation"}
    assert torch.all(logit.fractions()["unaccounted"].abs() < 1e-5)
    assert torch.all(logit.absorbed["activation"].abs() < 1e-6 * logit.score.abs())
    with torch.no_grad():
        predicted = explainer.model(pixel_values=pixels).logits.argmax(-1)
    expected, _ = reference(explainer.model, pixels, predicted, probability=False)
    torch.testing.assert_close(logit.tokens.float(), expected.sum(-1), rtol=1e-5, atol=1e-5)
    probability = relevance_budget(explainer.model, pixels, rules=LIBRAGRAD, probability=True)
    assert torch.all(probability.fractions()["unaccounted"].abs() < 1e-5)
    tokens = libragrad_relevance(explainer.model, pixels).token_relevance.sum(-1)
    torch.testing.assert_close(probability.tokens.float(), tokens, rtol=1e-4, atol=1e-7)


def test_libragrad_options(demo):
    explainer, pixels, images = demo
    with pytest.raises(ValueError, match="start_layer= applies to the methods that multiply or add up layers"):
        explainer(images[0], method="libragrad", start_layer=1)
    exp = explainer(images[0], method="libragrad", target=lambda out: out.logits[:, 2])  # a callable: as given
    expected, _ = reference(explainer.model, pixels[:1], torch.tensor([2]), probability=False)
    np.testing.assert_allclose(exp.token_relevance, expected[0].numpy(), rtol=1e-5, atol=1e-6 * float(expected.abs().max()))
    assert dataclasses.replace(LIBRAGRAD).softmax == "constant"
