"""The LRP context and methods directly on Hugging Face models (no explainer involved)."""

from __future__ import annotations

import dataclasses
import threading

import pytest
import torch
import transformers as T

import hf_vit_rollout
from hf_vit_rollout import AttentionCapture
from hf_vit_rollout.capture import ATTENTION_NAME
from hf_vit_rollout.lrp import (
    ATTNLRP,
    CHEFER2021,
    CP_LRP,
    LIBRAGRAD,
    RelevanceContext,
    attnlrp_relevance,
    chefer_relevance,
    explained_scores,
    relevance_budget,
)
from hf_vit_rollout.methods import transformer_attribution

SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32, patch_size=8)

# name: (config class, model class, extra config, tokens at 32 × 32 px)
FAMILIES = {
    "vit": (T.ViTConfig, T.ViTForImageClassification, {}, 17),
    "deit": (T.DeiTConfig, T.DeiTForImageClassificationWithTeacher, {}, 18),
    "beit_relative_bias": (T.BeitConfig, T.BeitForImageClassification, {"use_relative_position_bias": True}, 17),
    "dinov2": (T.Dinov2Config, T.Dinov2ForImageClassification, {}, 17),
    "dinov2_registers": (T.Dinov2WithRegistersConfig, T.Dinov2WithRegistersModel, {"num_register_tokens": 2}, 19),
    "dinov3": (T.DINOv3ViTConfig, T.DINOv3ViTModel, {"num_register_tokens": 2}, 19),
    "clip_vision": (T.CLIPVisionConfig, T.CLIPVisionModel, {}, 17),
    "siglip_vision": (T.SiglipVisionConfig, T.SiglipVisionModel, {}, 16),
    "ijepa": (T.IJepaConfig, T.IJepaForImageClassification, {}, 16),
}


def _model(name):
    config_class, model_class, extra, _ = FAMILIES[name]
    torch.manual_seed(0)
    config = config_class(**SMALL, **extra)
    if "Classification" in model_class.__name__:
        config.num_labels = 3
    return model_class(config).eval()


def _target(model):
    if getattr(model.config, "num_labels", 0) and "Classification" in type(model).__name__:
        return 1
    return lambda out: out.last_hidden_state[:, :, :4].mean(dim=(1, 2))  # LayerNorm outputs average to ~0 over all channels


def _reference_output(model, pixels):
    with torch.no_grad():
        out = model(pixel_values=pixels)
    return out.logits if hasattr(out, "logits") else out.last_hidden_state


@pytest.fixture(scope="module")
def demo():
    from PIL import Image

    path = hf_vit_rollout.demo_model_path()
    model = T.ViTForImageClassification.from_pretrained(path).eval()
    processor = T.AutoImageProcessor.from_pretrained(path, backend="pil")
    images = [Image.open(p).convert("RGB") for p in sorted((path.parent / "images").glob("*.png"))]
    return model, processor(images=images, return_tensors="pt")["pixel_values"]


def _softmax_accounting(model, pixels, rules):
    """Explained scores, token relevance sums, and relevance absorbed by the softmax rule (per image)."""
    with RelevanceContext(model, rules) as context:
        with torch.enable_grad():
            outputs = model(pixel_values=pixels)
        scores, _ = explained_scores(outputs, None)
        n = len(context.attentions)
        grads = context.relevance_grad(scores, [context.inputs, *context.attentions, *context.attention_scores])
        tokens = (context.inputs * grads[0]).sum(dim=(1, 2))
        absorbed = sum(
            (a * ga).sum(dim=(1, 2, 3)) - (s * gs).sum(dim=(1, 2, 3))
            for a, ga, s, gs in zip(context.attentions, grads[1 : 1 + n], context.attention_scores, grads[1 + n :])
        )
    return scores.detach(), tokens.detach(), absorbed.detach()


# ----------------------------------------------------------------------------- conservation


def _bias_free_vit():
    torch.manual_seed(0)
    config = T.ViTConfig(**SMALL, num_labels=3, qkv_bias=False)
    model = T.ViTForImageClassification(config).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(getattr(module, "bias", None), torch.nn.Parameter):
                module.bias.zero_()
            if isinstance(module, torch.nn.Linear):
                module.weight.normal_(0, 0.3)
    return model, torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def test_conservation_is_exact_without_biases():
    """With every bias zero, the rules conserve exactly, except AttnLRP's softmax rule (a Taylor
    expansion at the input whose zero-order term is absorbed), which the accounting adds back."""
    model, pixels = _bias_free_vit()
    scores, tokens, absorbed = _softmax_accounting(model, pixels, ATTNLRP)
    torch.testing.assert_close(tokens + absorbed, scores, rtol=1e-4, atol=1e-5)
    scores, tokens, absorbed = _softmax_accounting(model, pixels, CP_LRP)
    torch.testing.assert_close(tokens, scores, rtol=1e-4, atol=1e-5)
    assert torch.all(absorbed == 0)


def test_relevance_budget_without_biases_is_tokens_plus_softmax():
    """The budget's softmax entry is what the softmax rules absorb (computed above independently, from
    the relevance at the attention weights and at the scores); biases absorb nothing, ε next to nothing."""
    model, pixels = _bias_free_vit()
    scores, tokens, absorbed = _softmax_accounting(model, pixels, ATTNLRP)
    budget = relevance_budget(model, pixels)
    torch.testing.assert_close(budget.absorbed["softmax"].float(), absorbed, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(budget.tokens.float(), tokens, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(budget.tokens + budget.absorbed["softmax"], budget.score, rtol=1e-4, atol=0)
    assert budget.absorbed["linear"].abs().max() < 1e-5 * budget.score.abs().min()  # ε only
    assert budget.absorbed["layer_norm"].abs().max() < 1e-6 * budget.score.abs().min()
    assert budget.unaccounted.abs().max() < 1e-6 * budget.score.abs().min()
    exact = relevance_budget(model, pixels, rules=dataclasses.replace(ATTNLRP, epsilon=0.0))
    torch.testing.assert_close(exact.tokens + exact.absorbed["softmax"], exact.score, rtol=1e-6, atol=0)
    cp = relevance_budget(model, pixels, rules=dataclasses.replace(CP_LRP, epsilon=0.0))
    torch.testing.assert_close(cp.tokens, cp.score, rtol=1e-6, atol=0)  # nothing absorbed at all
    libra = relevance_budget(model, pixels, rules=LIBRAGRAD)  # the logit: complete (FullGrad-completeness)
    torch.testing.assert_close(libra.tokens, libra.score, rtol=1e-6, atol=0)


def test_conservation_on_the_demo_model(demo):
    """On the demo model AttnLRP's tokens carry 47-52% of the logit: the softmax rule absorbs about
    half. Tokens plus the softmax's share come within 4.3% of the logit (measured: 0.990-1.043); the
    budget, with what biases and ε absorb, closes exactly. CP-LRP's tokens alone come within 1.9%
    (measured: 0.998-1.019)."""
    model, pixels = demo
    scores, tokens, absorbed = _softmax_accounting(model, pixels, ATTNLRP)
    assert torch.all(((tokens + absorbed) / scores - 1).abs() < 0.043)
    result = attnlrp_relevance(model, pixels)
    torch.testing.assert_close(result.token_relevance.sum(dim=-1), tokens, rtol=1e-5, atol=1e-5)
    budget = relevance_budget(model, pixels)
    shares = budget.fractions()
    assert torch.all((shares["tokens"] - 0.5).abs() < 0.03) and torch.all((shares["softmax"] - 0.5).abs() < 0.07)
    assert torch.all(shares["unaccounted"].abs() < 1e-5)
    torch.testing.assert_close(budget.tokens.float(), tokens, rtol=1e-5, atol=1e-5)
    cp = attnlrp_relevance(model, pixels, rules=CP_LRP)
    assert torch.all((cp.token_relevance.sum(dim=-1) / cp.scores - 1).abs() < 0.019)
    assert torch.all(relevance_budget(model, pixels, rules=CP_LRP).fractions()["unaccounted"].abs() < 1e-5)


def test_relevance_budget_books_attention_biases():
    """BEiT adds a relative position bias to the attention scores: AttnLRP's softmax rule passes some of
    the scores' relevance to it, which the budget books; the budget then closes."""
    model = _model("beit_relative_bias")
    with torch.no_grad():  # the tables start at zero
        for name, parameter in model.named_parameters():
            if "relative_position_bias_table" in name:
                parameter.normal_(0, 1)
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    budget = relevance_budget(model, pixels, target=1)
    assert budget.absorbed["attention_bias"].abs().min() > 1e-4 * budget.score.abs().max()
    assert torch.all(budget.fractions()["unaccounted"].abs() < 1e-5)


# ----------------------------------------------------------------------------- the context


def test_forward_values_and_gradients_are_unchanged(demo):
    model, pixels = demo
    expected = _reference_output(model, pixels)
    plain = []
    with AttentionCapture(model, lambda layer, a: plain.append(a)), torch.enable_grad():
        logits = model(pixel_values=pixels).logits
        plain_grads = torch.autograd.grad(logits[:, 2].sum(), plain)
    with RelevanceContext(model, CHEFER2021) as context, torch.enable_grad():
        logits = model(pixel_values=pixels).logits
        grads = torch.autograd.grad(logits[:, 2].sum(), context.attentions)
    torch.testing.assert_close(logits.detach(), expected, rtol=1e-5, atol=1e-5)
    for ours, theirs in zip(grads, plain_grads):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-7)


def _hook_counts(model):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_model_is_restored_also_on_error(demo):
    model, pixels = demo
    impl, hooks = model.config._attn_implementation, _hook_counts(model)
    model.train()
    with pytest.raises(RuntimeError, match="boom"):
        with RelevanceContext(model, CHEFER2021):
            assert model.config._attn_implementation == ATTENTION_NAME  # the capture's dispatcher
            assert not model.training
            model(pixel_values=pixels[:1])
            raise RuntimeError("boom")
    assert model.training and all(m.training for m in model.modules())
    model.eval()
    assert model.config._attn_implementation == impl and _hook_counts(model) == hooks
    assert torch.overrides._get_current_function_mode_stack() == []
    attnlrp_relevance(model, pixels[:1])
    assert model.config._attn_implementation == impl and _hook_counts(model) == hooks


def test_other_threads_are_not_affected(demo):
    """Another thread running the model while a context is active gets ordinary outputs and gradients."""
    model, pixels = demo

    def input_gradient():
        x = pixels[:2].clone().requires_grad_(True)
        with torch.enable_grad():
            out = model(pixel_values=x).logits[:, 0].sum()
            return out.detach(), torch.autograd.grad(out, x)[0]

    expected_out, expected_grad = input_gradient()
    seen = {}
    with RelevanceContext(model, CHEFER2021) as context, torch.enable_grad():
        scores = model(pixel_values=pixels).logits[:, 0]
        assert len(torch.overrides._get_current_function_mode_stack()) == 1  # the residual-add mode

        def other():
            seen["modes"] = list(torch.overrides._get_current_function_mode_stack())
            seen["result"] = input_gradient()

        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
        context.relevance_grad(scores, context.attentions)
        assert len(context.attentions) == 4  # the other thread's layers were not recorded
    out, grad = seen["result"]
    assert seen["modes"] == []  # torch function modes are thread-local
    torch.testing.assert_close(out, expected_out, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-4, atol=1e-7)


def test_gated_feed_forward_is_refused():
    model = T.Dinov2Model(T.Dinov2Config(**SMALL, use_swiglu_ffn=True))
    with pytest.raises(ValueError, match="use_swiglu_ffn=True"):
        RelevanceContext(model, ATTNLRP)


def test_results_do_not_depend_on_the_batch(demo):
    model, pixels = demo
    alone = attnlrp_relevance(model, pixels[1:2], target=[4])
    batch = attnlrp_relevance(model, pixels, target=[0, 4, 2, 1])
    torch.testing.assert_close(batch.token_relevance[1:2], alone.token_relevance, rtol=1e-4, atol=1e-6)
    alone = chefer_relevance(model, pixels[1:2], target=[4])
    batch = chefer_relevance(model, pixels, target=[0, 4, 2, 1])
    single = transformer_attribution(alone.attention_relevance, alone.attention_grads)
    joint = transformer_attribution(batch.attention_relevance, batch.attention_grads)
    torch.testing.assert_close(joint[1:2], single, rtol=1e-4, atol=1e-6)


def test_epsilon_is_a_rule_setting(demo):
    model, pixels = demo
    small = attnlrp_relevance(model, pixels[:1]).token_relevance
    large = attnlrp_relevance(model, pixels[:1], rules=dataclasses.replace(ATTNLRP, epsilon=1.0)).token_relevance
    assert small.shape == large.shape and not torch.allclose(small, large)


# ----------------------------------------------------------------------------- every family


@pytest.mark.parametrize("name", list(FAMILIES))
def test_every_family(name):
    model = _model(name)
    tokens = FAMILIES[name][3]
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    before = model.config._attn_implementation
    expected = _reference_output(model, pixels)
    target = _target(model)
    result = attnlrp_relevance(model, pixels, target=target)
    assert result.token_relevance.shape == (2, tokens)
    assert torch.isfinite(result.token_relevance).all() and result.token_relevance.abs().sum() > 0
    assert len(result.attentions) == SMALL["num_hidden_layers"]
    outputs = result.logits if result.logits is not None else None
    if outputs is not None:
        torch.testing.assert_close(outputs, expected, rtol=1e-5, atol=1e-5)
    chefer = chefer_relevance(model, pixels, target=target)
    matrix = transformer_attribution(chefer.attention_relevance, chefer.attention_grads)
    assert matrix.shape == (2, tokens, tokens) and torch.isfinite(matrix).all()
    assert model.config._attn_implementation == before


def test_clip_with_text_explains_the_vision_tower_only():
    torch.manual_seed(0)
    config = T.CLIPConfig(
        vision_config=dict(SMALL),
        text_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64),
        projection_dim=16,
    )
    model = T.CLIPModel(config).eval()
    ids = torch.tensor([[0, 5, 7, 2]])
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    result = attnlrp_relevance(
        model,
        pixels,
        target=lambda out: out.logits_per_image[:, 0],
        root=model.vision_model,
        forward=lambda px: model(pixel_values=px, input_ids=ids),
    )
    assert result.token_relevance.shape == (2, 17) and len(result.attentions) == 2


def test_the_linear_rules_follow_their_definitions():
    """Each linear rule against its textbook formula, written with loops over a mixed-sign input:
    α1β0 gives relevance for positive contributions ``(x_j w_ij)⁺`` only (a negative input times a
    negative weight counts, a negative input times a positive weight does not); LRP-ε divides by
    ``z + ε·sign z`` with the bias in ``z``."""
    from hf_vit_rollout.lrp.rules import alpha1_beta0_linear, epsilon_linear

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, generator=g, dtype=torch.float64)
    weight = torch.randn(3, 5, generator=g, dtype=torch.float64)
    bias = torch.randn(3, generator=g, dtype=torch.float64)
    relevance = torch.randn(2, 3, generator=g, dtype=torch.float64)
    z = x @ weight.T + bias
    grad = relevance / z  # the rules take the density R_z / z
    positive = torch.zeros_like(x)
    epsilon = torch.zeros_like(x)
    for b in range(2):
        for i in range(3):
            parts = [max(float(x[b, j] * weight[i, j]), 0.0) for j in range(5)]
            for j in range(5):
                positive[b, j] += parts[j] / sum(parts) * relevance[b, i]
                epsilon[b, j] += x[b, j] * weight[i, j] / (z[b, i] + 0.1 * torch.sign(z[b, i])) * relevance[b, i]
    (density,) = alpha1_beta0_linear(weight)(grad, z, x)
    torch.testing.assert_close(x * density, positive)
    (density,) = epsilon_linear(weight, 0.1)(grad, z, x)
    torch.testing.assert_close(x * density, epsilon)
    # ε = 0 is LRP-0: the gradient, and nothing through an output that is exactly 0
    z0 = x @ weight.T
    z0[0, 1] = 0.0
    (density,) = epsilon_linear(weight, 0.0)(relevance, z0, x)
    expected = relevance.clone()
    expected[0, 1] = 0.0
    torch.testing.assert_close(density, expected @ weight)


def test_a_score_of_exactly_zero_has_zero_relevance(demo):
    """AttnLRP explains a score by its value: a score that is exactly 0 (with a gradient) gives
    every token zero relevance, the other images of the batch theirs."""
    model, pixels = demo

    def shifted(outputs):  # image 0's score is its logit minus itself: 0, with the logit's gradient
        logits = outputs.logits[:, 0]
        return torch.cat([logits[:1] - logits[:1].detach(), logits[1:]])

    result = attnlrp_relevance(model, pixels[:2], target=shifted)
    assert float(result.scores[0]) == 0.0
    assert torch.count_nonzero(result.token_relevance[0]) == 0
    assert result.token_relevance[1].abs().sum() > 0


def test_the_identity_rule_passes_relevance_unchanged_and_nothing_through_a_zero_input():
    """``R_x = R_y`` element by element; an input that is exactly 0 gets density 0 (not NaN)."""
    from hf_vit_rollout.lrp.rules import identity

    x = torch.tensor([[-1.5, 0.0, 0.7, 1.0]], dtype=torch.float64)
    y = torch.nn.functional.gelu(x)
    grad = torch.tensor([[0.3, 2.0, -0.4, 1.1]], dtype=torch.float64)
    (density,) = identity(grad, y, x)
    assert torch.isfinite(density).all() and density[0, 1] == 0
    torch.testing.assert_close(x * density, torch.where(x == 0, 0.0, y * grad))


@pytest.mark.parametrize("affine", [True, False])
def test_the_layer_norm_rule_is_the_gradient_with_the_std_held_constant(affine):
    # AttnLRP's LayerNorm rule, with and without an affine weight (LayerNorm(elementwise_affine=False)),
    # against autograd through (x − mean x) / std · w with std detached
    from hf_vit_rollout.lrp.rules import layer_norm_std_constant

    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 5, 8, generator=g, dtype=torch.float64)
    grad = torch.randn(2, 5, 8, generator=g, dtype=torch.float64)
    weight = torch.randn(8, generator=g, dtype=torch.float64) if affine else None
    (density,) = layer_norm_std_constant(weight, 1e-5)(grad, None, x)
    leaf = x.clone().requires_grad_(True)
    std = torch.sqrt(x.var(dim=-1, keepdim=True, unbiased=False) + 1e-5)
    y = (leaf - leaf.mean(dim=-1, keepdim=True)) / std
    (y * weight if affine else y).backward(grad)
    torch.testing.assert_close(density, leaf.grad, rtol=1e-12, atol=1e-12)
