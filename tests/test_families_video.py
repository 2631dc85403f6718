"""VideoMAE and ViViT: maps over (time, height, width) tubelets, from clips given as arrays or frame lists.

Rollout and GAE are checked against a hand computation from a reference copy loaded with
``attn_implementation="eager"`` (its ``output_attentions`` and their retained gradients).
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import transformers as T
from PIL import Image

from hf_vit_rollout import RolloutExplainer
from hf_vit_rollout.errors import InputError

SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32, num_frames=4, num_labels=3)

# name: (config, model class, processor, prefix tokens, explained row: "mean" | "first" | "cls")
CASES = {
    "videomae_mean": (lambda: T.VideoMAEConfig(**SMALL, patch_size=8, tubelet_size=2, use_mean_pooling=True),
                      T.VideoMAEForVideoClassification, 0, "mean"),
    "videomae_first": (lambda: T.VideoMAEConfig(**SMALL, patch_size=8, tubelet_size=2, use_mean_pooling=False),
                       T.VideoMAEForVideoClassification, 0, "first"),
    "vivit": (lambda: T.VivitConfig(**SMALL, tubelet_size=[2, 8, 8]), T.VivitForVideoClassification, 1, "cls"),
}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    cache = {}

    def get(name):
        if name not in cache:
            config, model_class, _, _ = CASES[name]
            folder = tmp_path_factory.mktemp(name)
            torch.manual_seed(0)
            model_class(config()).save_pretrained(folder)
            if name == "vivit":
                T.VivitImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
            else:
                T.VideoMAEImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
            cache[name] = str(folder)
        return cache[name]

    return get


def _clips(count=3):
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (4, 40, 50, 3), dtype=np.uint8) for _ in range(count)]


def _hand(name, folder, pixels, method, target):
    ref = CASES[name][1].from_pretrained(folder, attn_implementation="eager").eval()
    out = ref(pixels, output_attentions=True)
    for a in out.attentions:
        a.retain_grad()
    out.logits[:, target].sum().backward()
    n = out.attentions[0].shape[-1]
    prefix, row = CASES[name][2], CASES[name][3]
    w = torch.zeros(n)
    if row == "mean":
        w[prefix:] = 1.0 / (n - prefix)
    else:
        w[0] = 1.0
    chain = torch.eye(n).expand(pixels.shape[0], n, n)
    for a in out.attentions:
        if method == "rollout":
            m = a.detach().mean(1) + torch.eye(n)
            chain = (m / m.sum(-1, keepdim=True)) @ chain
        else:
            chain = chain + (a.detach() * a.grad).clamp(min=0).mean(1) @ chain
    return (w @ chain)[:, prefix:].reshape(-1, 2, 4, 4)  # (B, T', h, w): T' = 4 frames / 2, 32 px / 8


@pytest.mark.parametrize("name", list(CASES))
def test_rollout_and_gae_equal_a_hand_computation(saved, name):
    explainer = RolloutExplainer.from_pretrained(saved(name))
    assert type(explainer.model) is CASES[name][1]
    pixels = torch.cat([explainer.image_processor([list(c)], return_tensors="pt")["pixel_values"] for c in _clips()])
    got = explainer.relevance_maps(pixels, method="rollout", discard_ratio=0.0)
    torch.testing.assert_close(got, _hand(name, saved(name), pixels, "rollout", 1), rtol=1e-4, atol=1e-6)
    got = explainer.relevance_maps(pixels, target=1, method="gae")
    torch.testing.assert_close(got, _hand(name, saved(name), pixels, "gae", 1), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", list(CASES))
def test_a_clip_is_an_array_or_a_list_of_frames_and_results_do_not_depend_on_the_batch(saved, name):
    explainer = RolloutExplainer.from_pretrained(saved(name))
    clips = _clips()
    together = explainer(clips, target=2, method="gae")
    assert len(together) == 3
    as_frames = explainer([Image.fromarray(f) for f in clips[1]], target=2, method="gae")
    alone = explainer(clips[1], target=2, method="gae")
    for one in (as_frames, alone):
        np.testing.assert_allclose(one.token_relevance, together[1].token_relevance, rtol=1e-5, atol=1e-7)
    exp = together[0]
    assert exp.mask.shape == (2, 4, 4) and exp.mask.max() == pytest.approx(1.0)
    assert exp.heatmaps.shape == (4, 40, 50)
    for i in range(4):  # frame i shows tubelet i // 2
        np.testing.assert_allclose(exp.heatmaps[i], exp.placement.heatmap(exp.mask[i // 2], (50, 40)))
    assert exp.label == f"LABEL_{exp.target}" and exp.score is not None


def test_overlays_gif_and_frame_strip(saved):
    explainer = RolloutExplainer.from_pretrained(saved("videomae_mean"))
    exp = explainer(_clips()[0])
    overlays = exp.overlays()
    assert len(overlays) == 4 and overlays[0].size == (50, 40)
    buffer = io.BytesIO()
    exp.save_gif(buffer)
    with Image.open(io.BytesIO(buffer.getvalue())) as gif:
        assert gif.format == "GIF" and gif.n_frames == 4 and gif.size == (50, 40)
    fig = exp.plot()
    assert len(fig.axes) == 4  # 2 tubelets: a frame and its overlay each
    assert [ax.get_title() for ax in fig.axes[2:]] == ["tubelet 0", "tubelet 1"]


def test_a_clip_with_the_wrong_number_of_frames_gets_a_specific_error(saved):
    explainer = RolloutExplainer.from_pretrained(saved("videomae_mean"))
    with pytest.raises(InputError, match=r"videos\[0\] has 3 frames; this VideoMAEForVideoClassification takes exactly 4"):
        explainer(_clips()[0][:3])
    with pytest.raises(InputError, match=r"a video is a \(T, H, W, 3\) array"):
        explainer(np.zeros((4, 3), np.uint8))


@pytest.mark.parametrize("name", ["videomae_mean", "vivit"])
def test_model_state_is_restored_after_success_and_failure(saved, name):
    explainer = RolloutExplainer.from_pretrained(saved(name))
    model = explainer.model
    model.train()

    def state():
        return ([m.config._attn_implementation for m in model.modules() if hasattr(m, "config")],
                sum(len(m._forward_hooks) for m in model.modules()), [m.training for m in model.modules()])

    before = state()
    explainer(_clips()[0], target=0, method="gae")

    def broken(out):
        raise RuntimeError("a failing target")

    with pytest.raises(RuntimeError, match="a failing target"):
        explainer(_clips()[0], target=broken, method="gae")
    assert state() == before


def test_pipeline_explains_a_clip(saved):
    from hf_vit_rollout.pipeline import pipeline

    explain = pipeline(model=saved("videomae_mean"), method="gae")
    result = explain(_clips()[0], target=1)
    direct = RolloutExplainer.from_pretrained(saved("videomae_mean"))(_clips()[0], target=1, method="gae")
    assert len(result["overlays"]) == 4 and result["label"] == direct.label
    np.testing.assert_allclose(result["explanation"].mask, direct.mask, rtol=1e-5)


def test_frames_past_the_last_whole_tubelet_show_the_last_tubelet(tmp_path):
    """5 frames in tubelets of 2: the model sees 2 tubelets (frames 0-3); frame 4 shows the last one."""
    torch.manual_seed(0)
    T.VideoMAEForVideoClassification(T.VideoMAEConfig(**{**SMALL, "num_frames": 5}, patch_size=8, tubelet_size=2)).save_pretrained(tmp_path)
    T.VideoMAEImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(tmp_path)
    clip = np.random.default_rng(0).integers(0, 256, (5, 40, 50, 3), dtype=np.uint8)
    result = RolloutExplainer.from_pretrained(str(tmp_path))(clip, method="rollout")
    assert result.mask.shape[0] == 2 and result.heatmaps.shape[0] == 5
    np.testing.assert_array_equal(result.heatmaps[4], result.heatmaps[3])


def test_evaluate_refuses_a_video_model_with_the_reason(saved):
    from hf_vit_rollout import UnsupportedModelError, evaluate

    with pytest.raises(UnsupportedModelError, match=r"VideoMAEForVideoClassification is a video model"):
        evaluate(RolloutExplainer.from_pretrained(saved("videomae_mean")), [np.zeros((32, 32, 3), np.uint8)], methods=["rollout"])
