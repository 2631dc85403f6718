"""SigLIP 2: variable-resolution patch sequences, each image explained on its own patch grid.

Rollout and GAE are checked against a hand computation from a reference copy loaded with
``attn_implementation="eager"`` (its ``output_attentions`` and their retained gradients).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers as T

from hf_vit_rollout import RolloutExplainer

from .conftest import TEXT, _tiny_tokenizer

VISION = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, patch_size=8, num_patches=16)


def _processor():
    return T.Siglip2ImageProcessorPil(patch_size=8, max_num_patches=16)


@pytest.fixture(scope="module")
def vision_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("siglip2_vision")
    torch.manual_seed(0)
    T.Siglip2VisionModel(T.Siglip2VisionConfig(**VISION)).save_pretrained(folder)
    _processor().save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def images():
    shapes = [(40, 64, 3), (20, 80, 3), (64, 64, 3)]  # three different patch grids
    return [np.random.default_rng(i).integers(0, 256, s, dtype=np.uint8) for i, s in enumerate(shapes)]


def _pooled(out):
    return out.pooler_output.sum(-1)


def _hand(folder, images, method):
    """Per image: the hand-computed (h·w,) relevance of its real patches."""
    ref = T.Siglip2VisionModel.from_pretrained(folder, attn_implementation="eager").eval()
    inputs = _processor()(images=images, return_tensors="pt")
    out = ref(**inputs, output_attentions=True)
    for a in out.attentions:
        a.retain_grad()
    _pooled(out).sum().backward()
    n = out.attentions[0].shape[-1]
    results = []
    for b, (h, w) in enumerate(inputs["spatial_shapes"].tolist()):
        weights = torch.zeros(n)
        weights[: h * w] = 1.0 / (h * w)
        chain = torch.eye(n)
        for a in out.attentions:
            a_b = a[b].detach()
            if method == "rollout":
                m = a_b.mean(0) + torch.eye(n)
                chain = (m / m.sum(-1, keepdim=True)) @ chain
            else:
                chain = chain + (a_b * a.grad[b]).clamp(min=0).mean(0) @ chain
        results.append(((weights @ chain)[: h * w], (h, w)))
    return results


@pytest.mark.parametrize("method", ["rollout", "gae"])
def test_each_image_on_its_own_grid_equals_a_hand_computation(vision_folder, images, method):
    explainer = RolloutExplainer.from_pretrained(vision_folder)
    target = None if method == "rollout" else _pooled
    got = explainer(images, target=target, method=method, discard_ratio=0.0 if method == "rollout" else None)
    expected = _hand(vision_folder, images, method)
    assert len({e[1] for e in expected}) == 3  # the three images really have different grids
    for exp, (relevance, grid) in zip(got, expected):
        assert exp.mask.shape == grid
        assert exp.heatmap.shape == exp.image.size[::-1]
        torch.testing.assert_close(torch.from_numpy(exp.token_relevance[: grid[0] * grid[1]]), relevance, rtol=1e-4, atol=1e-6)
        assert np.all(exp.token_relevance[grid[0] * grid[1] :] == 0)  # padding gets nothing
        peak = relevance.clamp(min=0).max()
        np.testing.assert_allclose(exp.mask.ravel(), (relevance.clamp(min=0) / peak).numpy(), rtol=1e-4, atol=1e-6)


def test_results_do_not_depend_on_the_rest_of_the_batch(vision_folder, images):
    explainer = RolloutExplainer.from_pretrained(vision_folder)
    for method, target in (("rollout", None), ("gae", _pooled)):
        together = explainer(images, target=target, method=method)
        alone = explainer(images[1], target=target, method=method)
        np.testing.assert_allclose(together[1].token_relevance, alone.token_relevance, rtol=1e-5, atol=1e-7)


def test_model_state_is_restored_and_batch_only_methods_are_refused(vision_folder, images):
    explainer = RolloutExplainer.from_pretrained(vision_folder)
    model = explainer.model
    before = [(m.config._attn_implementation if hasattr(m, "config") else None, m.training) for m in model.modules()]

    def broken(out):
        raise RuntimeError("a failing target")

    with pytest.raises(RuntimeError, match="a failing target"):
        explainer(images, target=broken, method="gae")
    for method in ("flow", "attention", "legrad"):
        with pytest.raises(ValueError, match="SigLIP 2.s images each have their own grid|padded sequence"):
            explainer(images[0], method=method, **({"target": _pooled} if method == "legrad" else {}))
    explainer(images, method="rollout")
    after = [(m.config._attn_implementation if hasattr(m, "config") else None, m.training) for m in model.modules()]
    assert after == before
    assert sum(len(m._forward_hooks) for m in model.modules()) == 0


def test_siglip2_image_text_model_explains_a_text(tmp_path, images):
    vocab = _tiny_tokenizer(tmp_path)
    torch.manual_seed(0)
    config = T.Siglip2Config(text_config={**TEXT, "vocab_size": vocab}, vision_config=VISION)
    T.Siglip2Model(config).save_pretrained(tmp_path)
    _processor().save_pretrained(tmp_path)
    explainer = RolloutExplainer.from_pretrained(str(tmp_path))
    assert explainer.is_image_text_model and explainer.num_layers == 2
    got = explainer(images, text="a cat", method="gae")
    assert [e.mask.shape for e in got] == [(3, 5), (2, 8), (4, 4)]
    assert all(e.label == "a cat" and e.mask.max() == pytest.approx(1.0) for e in got)


def test_pipeline_and_cli_give_the_explainer_result(vision_folder, images, tmp_path):
    from PIL import Image

    from hf_vit_rollout.cli import main
    from hf_vit_rollout.pipeline import pipeline

    direct = RolloutExplainer.from_pretrained(vision_folder)(images[1], method="rollout")
    result = pipeline(model=vision_folder)(Image.fromarray(images[1]))
    np.testing.assert_allclose(result["explanation"].mask, direct.mask, rtol=1e-5)
    assert result["explanation"].mask.shape == (2, 8)
    path = tmp_path / "wide.png"
    Image.fromarray(images[1]).save(path)
    assert main([str(path), "--model", vision_folder, "--save-maps", "--out", str(tmp_path / "out")]) == 0
    (saved,) = (tmp_path / "out").glob("*.npy")
    np.testing.assert_allclose(np.load(saved), direct.heatmap, rtol=1e-5, atol=1e-6)
