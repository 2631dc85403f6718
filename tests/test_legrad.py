"""LeGrad (Bousselham et al., ICCV 2025) through the explainer, against a reference written here from
the paper's equations: for every layer ``l`` the model's own final norm and head read out the layer's
output tokens (``output_hidden_states``), ``s^l`` is the explained class's score of that readout, and

    Ê^l = mean_queries mean_heads max(∂s^l/∂A^l, 0)        E = Σ_l Ê^l, min-max normalised,

each gradient taken with ``torch.autograd.grad`` from the layer's own score to the same layer's
attention (``output_attentions``, eager attention). Nothing of the package's LeGrad code is called.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers as T

from hf_vit_rollout import RolloutExplainer
from hf_vit_rollout.methods import legrad

from .conftest import save_family_checkpoint


def _reference(head, attentions, hidden_states, chosen, start=0, fusion=lambda g: g.mean(1)):
    """``(B, N)`` Σ_l mean_i fuse_h(max(∂s^l/∂A^l, 0)) with ``s^l = head(hidden_states[l + 1])[b, chosen[b]]``."""
    total = 0
    layers = len(attentions)
    for layer in range(start % layers, layers):
        score = head(hidden_states[layer + 1]).gather(1, chosen[:, None]).sum()
        (grad,) = torch.autograd.grad(score, attentions[layer], retain_graph=True)
        total = total + fusion(grad.clamp(min=0)).mean(1)
    return total


def _min_max(rows, prefix):
    patches = rows[:, prefix:]
    return (patches - patches.amin(1, keepdim=True)) / (patches.amax(1, keepdim=True) - patches.amin(1, keepdim=True))


@pytest.fixture(scope="module")
def demo(demo_batch):
    return demo_batch


def _vit_readout(model):
    return lambda hidden: model.classifier(model.vit.layernorm(hidden)[:, 0])


def _eager_outputs(model, pixels):
    model.set_attn_implementation("eager")
    try:
        return model(pixel_values=pixels, output_attentions=True, output_hidden_states=True)
    finally:
        model.set_attn_implementation("sdpa")


@pytest.mark.parametrize("start_layer", [0, -2])
def test_legrad_equals_the_reference_on_the_demo_model(demo, start_layer):
    explainer, pixels, images = demo
    model = explainer.model
    out = _eager_outputs(model, pixels)
    chosen = out.logits.argmax(-1)
    expected = _reference(_vit_readout(model), out.attentions, out.hidden_states, chosen, start_layer)
    ours = explainer.relevance_maps(pixels, method="legrad", start_layer=start_layer).flatten(1)
    torch.testing.assert_close(ours, expected[:, 1:] - expected[:, 1:].amin(1, keepdim=True), rtol=1e-5, atol=1e-7)
    # the explainer's max-scaled mask is the authors' min-max normalised map
    masks = [e.mask for e in explainer(images, method="legrad", start_layer=start_layer)]
    np.testing.assert_allclose(np.stack(masks).reshape(4, -1), _min_max(expected, 1).detach().numpy(), rtol=1e-5, atol=1e-6)


def test_legrad_pure_function_and_options(demo):
    explainer, pixels, images = demo
    model = explainer.model
    out = _eager_outputs(model, pixels)
    chosen = torch.tensor([3, 1, 4, 1])
    grads = []
    for layer in range(4):
        score = _vit_readout(model)(out.hidden_states[layer + 1]).gather(1, chosen[:, None]).sum()
        grads.append(torch.autograd.grad(score, out.attentions[layer], retain_graph=True)[0])
    expected = _reference(_vit_readout(model), out.attentions, out.hidden_states, chosen, fusion=lambda g: g.amax(1))
    torch.testing.assert_close(
        legrad(grads, head_fusion="max", num_prefix_tokens=1)[:, 1:], expected[:, 1:] - expected[:, 1:].amin(1, keepdim=True)
    )
    ours = explainer.relevance_maps(pixels, target=chosen.tolist(), method="legrad", head_fusion="max").flatten(1)
    torch.testing.assert_close(ours, expected[:, 1:] - expected[:, 1:].amin(1, keepdim=True), rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="start_layer 4 is out of range"):
        legrad(grads, start_layer=4)
    # the minimum is the patch tokens' own: a class token below every patch does not set it
    synthetic = torch.rand(1, 2, 5, 5, generator=torch.Generator().manual_seed(0)) + 1.0
    synthetic[..., 0] = 0.0
    shifted = legrad([synthetic], num_prefix_tokens=1)
    assert shifted[0, 1:].amin() == 0 and shifted[0, 0] < 0


def test_legrad_with_top_k_and_batches(demo):
    explainer, pixels, images = demo
    ranked = explainer(images[1], method="legrad", top_k=2)
    second = explainer(images[1], method="legrad", target=ranked[1].target)
    np.testing.assert_allclose(ranked[1].token_relevance, second.token_relevance, rtol=1e-5, atol=1e-7)
    assert ranked[0].target == explainer(images[1], method="legrad").target
    alone = explainer(images[2], method="legrad", target=1)
    batch = explainer(images, method="legrad", target=[0, 2, 1, 3])
    np.testing.assert_allclose(batch[2].token_relevance, alone.token_relevance, rtol=1e-5, atol=1e-7)
    assert batch[2].score == pytest.approx(alone.score)  # probabilities come from the model's own rows


IMAGE = np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)

# name: (config class, model class, extra config)
FAMILIES = {
    "vit_random": (T.ViTConfig, T.ViTForImageClassification, {}),
    "deit_teacher": (T.DeiTConfig, T.DeiTForImageClassificationWithTeacher, {}),
    "dinov2": (T.Dinov2Config, T.Dinov2ForImageClassification, {}),
    "siglip_vision": (T.SiglipVisionConfig, T.SiglipVisionModel, {}),
    "ijepa": (T.IJepaConfig, T.IJepaForImageClassification, {}),
}


@pytest.mark.parametrize("name", list(FAMILIES))
def test_legrad_reads_out_every_family(tmp_path, name):
    """The readout of the last layer is the model's own output; every layer's map is finite."""
    config_class, model_class, extra = FAMILIES[name]
    explainer = RolloutExplainer.from_pretrained(save_family_checkpoint(tmp_path, config_class, model_class, extra))
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in explainer.model.modules())
    if explainer.num_labels:
        maps = explainer.relevance_maps(pixels, method="legrad", target=[1, 2])
        exp = explainer(IMAGE, method="legrad", target=1)
        with torch.no_grad():
            pixel = explainer.image_processor(images=[IMAGE], return_tensors="pt")["pixel_values"]
            probabilities = explainer.model(pixel_values=pixel).logits.softmax(-1)
        assert exp.score == pytest.approx(float(probabilities[0, 1]), rel=1e-5)
    else:
        target = lambda out: out.pooler_output[:, :4].sum(-1)  # noqa: E731  (read out at every layer)
        maps = explainer.relevance_maps(pixels, method="legrad", target=target)
    assert maps.shape == (2, 4, 4) and torch.isfinite(maps).all() and maps.amax() > 0
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in explainer.model.modules()) == hooks


def test_legrad_on_a_random_vit_equals_the_reference(tmp_path):
    explainer = RolloutExplainer.from_pretrained(save_family_checkpoint(tmp_path, T.ViTConfig, T.ViTForImageClassification, {}))
    pixels = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    out = _eager_outputs(explainer.model, pixels)
    chosen = torch.tensor([2, 0, 1])
    expected = _reference(_vit_readout(explainer.model), out.attentions, out.hidden_states, chosen)
    ours = explainer.relevance_maps(pixels, method="legrad", target=chosen.tolist()).flatten(1)
    torch.testing.assert_close(ours, expected[:, 1:] - expected[:, 1:].amin(1, keepdim=True), rtol=1e-5, atol=1e-8)


def test_legrad_with_a_text_target_equals_the_reference(checkpoint):
    """CLIP with text=: each layer's CLS token through post_layernorm, the projection and the
    image-text similarity, as the model computes its own."""
    explainer = RolloutExplainer.from_pretrained(checkpoint("clip"))
    model = explainer.model
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    inputs = explainer.text_inputs("a cat")
    ours = explainer.relevance_maps(pixels, method="legrad", text="a cat").flatten(1)
    model.set_attn_implementation("eager")
    try:
        vision = model.vision_model(pixel_values=pixels, output_attentions=True, output_hidden_states=True)
    finally:
        model.set_attn_implementation("sdpa")
    with torch.no_grad():
        text = model.get_text_features(**inputs)
        text = text if isinstance(text, torch.Tensor) else text.pooler_output
    text = text / text.norm(dim=-1, keepdim=True)

    def similarity(hidden):
        image = model.visual_projection(model.vision_model.post_layernorm(hidden[:, 0]))
        return model.logit_scale.exp() * (image / image.norm(dim=-1, keepdim=True)) @ text.T

    expected = _reference(similarity, vision.attentions, vision.hidden_states, torch.zeros(2, dtype=torch.long))
    torch.testing.assert_close(ours, expected[:, 1:] - expected[:, 1:].amin(1, keepdim=True), rtol=1e-4, atol=1e-8)


def test_legrad_settings_and_state(demo):
    explainer, pixels, images = demo
    with pytest.raises(ValueError, match="start_layer 4 is out of range: the model has 4 attention layers"):
        explainer(images[0], method="legrad", start_layer=4)
    with pytest.raises(ValueError, match="layer= and head= choose one attention map"):
        explainer(images[0], method="legrad", layer=1)
    before = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in explainer.model.modules())

    def failing(outputs):
        raise RuntimeError("score failed")

    with pytest.raises(RuntimeError, match="score failed"):
        explainer(images[0], method="legrad", target=failing)
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in explainer.model.modules()) == before
    with torch.no_grad():  # the explainer turns gradients on for its own pass
        assert explainer(images[0], method="legrad").mask.max() == 1.0
