"""TimeSformer: divided space-time attention folded into token space, two chain steps per layer.

Rollout and GAE are checked against a hand computation: the model's own spatial attentions
(``output_attentions=True``) and temporal attentions (the output of each temporal attention's
``attn_drop``, the tensor its context is computed from, which ``output_attentions`` does not return),
their retained gradients, folded entry by entry from the definitions in
:mod:`hf_vit_rollout.families.timesformer` (not with the package's folding code).
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import transformers as T
from PIL import Image

from hf_vit_rollout import RolloutExplainer, UnsupportedModelError
from hf_vit_rollout.errors import InputError

FRAMES, SIDE, PATCH = 4, 32, 8
GRID = SIDE // PATCH  # 4 × 4 patches per frame
HW = GRID * GRID
N = 1 + HW * FRAMES
SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=SIDE,
             patch_size=PATCH, num_frames=FRAMES, num_labels=3)


def _save(folder, **extra):
    torch.manual_seed(0)
    T.TimesformerForVideoClassification(T.TimesformerConfig(**{**SMALL, **extra})).save_pretrained(folder)
    T.VideoMAEImageProcessorPil(size={"shortest_edge": SIDE}, crop_size={"height": SIDE, "width": SIDE}).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    return _save(tmp_path_factory.mktemp("timesformer"))


def _clips(count=3):
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (FRAMES, 40, 50, 3), dtype=np.uint8) for _ in range(count)]


def _pixels(explainer, clips):
    return torch.cat([explainer.image_processor([list(c)], return_tensors="pt")["pixel_values"] for c in clips])


# ------------------------------------------------------------------ the hand computation
def _token(i, t):
    """Token of patch position i (row-major in its frame) of frame t: space-major, 1 + i·T + t."""
    return 1 + i * FRAMES + t


def _fold_temporal(a):
    """(B·hw, H, T, T) → (B, H, N, N): M[(t, i), (u, i)] = A_i[t, u]; the class token's row and column zero."""
    clips = a.shape[0] // HW
    out = torch.zeros(clips, a.shape[1], N, N, dtype=a.dtype)
    for b in range(clips):
        for i in range(HW):
            for t in range(FRAMES):
                for u in range(FRAMES):
                    out[b, :, _token(i, t), _token(i, u)] = a[b * HW + i, :, t, u]
    return out


def _fold_spatial(a, gradient):
    """(B·T, H, 1+hw, 1+hw) → (B, H, N, N): patch rows copied within their frame; the class row the
    frames' mean (probabilities) or T × the mean, i.e. their sum (gradients)."""
    clips = a.shape[0] // FRAMES
    scale = FRAMES if gradient else 1.0 / FRAMES
    out = torch.zeros(clips, a.shape[1], N, N, dtype=a.dtype)
    for b in range(clips):
        for t in range(FRAMES):
            frame = a[b * FRAMES + t]
            out[b, :, 0, 0] += frame[:, 0, 0] * (1.0 if gradient else 1.0 / FRAMES)
            for i in range(HW):
                out[b, :, _token(i, t), 0] = frame[:, 1 + i, 0]
                out[b, :, 0, _token(i, t)] = frame[:, 0, 1 + i] * scale
                for j in range(HW):
                    out[b, :, _token(i, t), _token(j, t)] = frame[:, 1 + i, 1 + j]
    return out


def _raw_attentions(folder, pixels, target):
    """Each layer's (temporal, spatial) probabilities as the model computes them, gradients retained."""
    ref = T.TimesformerForVideoClassification.from_pretrained(folder).eval()
    temporal = []
    handles = [layer.temporal_attention.attention.attn_drop.register_forward_hook(lambda m, i, o: temporal.append(o))
               for layer in ref.timesformer.encoder.layer]
    out = ref(pixels, output_attentions=True)
    for h in handles:
        h.remove()
    spatial = list(out.attentions)
    assert len(temporal) == len(spatial) == 2 and spatial[0].shape == (pixels.shape[0] * FRAMES, 2, 1 + HW, 1 + HW)
    for a in temporal + spatial:
        a.retain_grad()
    out.logits[:, target].sum().backward()
    return list(zip(temporal, spatial))


def _model_attentions(folder, pixels, target):
    """Every step's folded (attention, gradient), forward order: layer l's temporal, then its spatial."""
    steps = []
    for t, s in _raw_attentions(folder, pixels, target):
        steps.append((_fold_temporal(t.detach()), _fold_temporal(t.grad)))
        steps.append((_fold_spatial(s.detach(), False), _fold_spatial(s.grad, True)))
    return steps


def _to_frames(row):
    """(B, N) token relevance → (B, T, h, w), token by token."""
    out = torch.zeros(row.shape[0], FRAMES, GRID, GRID)
    for t in range(FRAMES):
        for r in range(GRID):
            for c in range(GRID):
                out[:, t, r, c] = row[:, _token(r * GRID + c, t)]
    return out


def _hand(folder, pixels, method, target=1, start=0):
    eye = torch.eye(N)
    chain = eye.expand(pixels.shape[0], N, N)
    for a, g in _model_attentions(folder, pixels, target)[start:]:
        if method == "rollout":
            m = a.mean(1) + eye
            chain = (m / m.sum(-1, keepdim=True)) @ chain
        else:
            chain = chain + (a * g).clamp(min=0).mean(1) @ chain
    return _to_frames(chain[:, 0, :])  # the class token's row: the classifier reads it


def test_rollout_and_gae_equal_a_hand_computation(saved):
    explainer = RolloutExplainer.from_pretrained(saved)
    assert type(explainer.model) is T.TimesformerForVideoClassification and explainer.num_layers == 4
    pixels = _pixels(explainer, _clips())
    got = explainer.relevance_maps(pixels, method="rollout")  # rollout's default discard ratio is 0 here
    torch.testing.assert_close(got, _hand(saved, pixels, "rollout"), rtol=1e-4, atol=1e-6)
    got = explainer.relevance_maps(pixels, target=1, method="gae")
    torch.testing.assert_close(got, _hand(saved, pixels, "gae"), rtol=1e-4, atol=1e-6)
    # start_layer counts steps: 1 is layer 0's spatial step, 2 layer 1's temporal one
    got = explainer.relevance_maps(pixels, method="rollout", start_layer=1)
    torch.testing.assert_close(got, _hand(saved, pixels, "rollout", start=1), rtol=1e-4, atol=1e-7)
    got = explainer.relevance_maps(pixels, target=1, method="gae", start_layer=2)
    torch.testing.assert_close(got, _hand(saved, pixels, "gae", start=2), rtol=1e-4, atol=1e-6)


def test_the_folds_follow_the_definitions_and_the_class_token_gradients_agree_across_frames(saved):
    from hf_vit_rollout.families.timesformer import fold_spatial, fold_temporal

    explainer = RolloutExplainer.from_pretrained(saved)
    pixels = _pixels(explainer, _clips(2))
    for t, s in _raw_attentions(saved, pixels, 2):
        torch.testing.assert_close(fold_temporal(t.detach(), HW, FRAMES), _fold_temporal(t.detach()))
        torch.testing.assert_close(fold_temporal(t.grad, HW, FRAMES), _fold_temporal(t.grad))
        torch.testing.assert_close(fold_spatial(s.detach(), HW, FRAMES), _fold_spatial(s.detach(), False))
        torch.testing.assert_close(fold_spatial(s.grad, HW, FRAMES, gradient=True), _fold_spatial(s.grad, True))
        # every frame's copy of the class token has the same value and its outputs are averaged, so its
        # gradient on itself is the same in every frame (why summing them is exact, see the module docstring)
        per_frame = s.grad[:, :, 0, 0].reshape(2, FRAMES, -1)
        torch.testing.assert_close(per_frame, per_frame[:, :1].expand_as(per_frame), rtol=1e-4, atol=1e-9)
        assert per_frame.abs().max() > 0


def test_a_backbone_explains_a_callable_target_from_its_class_token(tmp_path):
    torch.manual_seed(0)
    T.TimesformerModel(T.TimesformerConfig(**SMALL)).save_pretrained(tmp_path)
    T.VideoMAEImageProcessorPil(size={"shortest_edge": SIDE}, crop_size={"height": SIDE, "width": SIDE}).save_pretrained(tmp_path)
    explainer = RolloutExplainer.from_pretrained(str(tmp_path))
    assert type(explainer.model) is T.TimesformerModel and explainer.num_labels == 0
    exp = explainer(_clips()[0], target=lambda out: out.last_hidden_state[:, 0].sum(-1), method="gae")
    assert exp.mask.shape == (FRAMES, GRID, GRID) and exp.mask.max() == pytest.approx(1.0) and exp.label is None


def test_raw_attention_is_the_class_rows_of_a_spatial_step_and_a_temporal_step_is_refused(saved):
    explainer = RolloutExplainer.from_pretrained(saved)
    pixels = _pixels(explainer, _clips(1))
    a, _ = _model_attentions(saved, pixels, 0)[3]  # layer 1's spatial attention
    got = explainer.relevance_maps(pixels, method="attention", layer=3, head=1)
    torch.testing.assert_close(got, _to_frames(a[:, 1, 0, :]), rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match=r"step 2 is the temporal attention of layer 1, in which the class token"):
        explainer.relevance_maps(pixels, method="attention", layer=2)


def test_a_clip_is_an_array_or_a_list_of_frames_and_results_do_not_depend_on_the_batch(saved):
    explainer = RolloutExplainer.from_pretrained(saved)
    clips = _clips()
    together = explainer(clips, target=2, method="gae")
    as_frames = explainer([Image.fromarray(f) for f in clips[1]], target=2, method="gae")
    alone = explainer(clips[1], target=2, method="gae")
    for one in (as_frames, alone):
        np.testing.assert_allclose(one.token_relevance, together[1].token_relevance, rtol=1e-5, atol=1e-7)
    exp = together[0]
    assert exp.mask.shape == (FRAMES, GRID, GRID) and exp.mask.max() == pytest.approx(1.0)
    assert exp.heatmaps.shape == (FRAMES, 40, 50) and exp.tubelet_size == 1
    for i in range(FRAMES):  # frame i shows its own map
        np.testing.assert_allclose(exp.heatmaps[i], exp.placement.heatmap(exp.mask[i], (50, 40)))
    assert exp.label == f"LABEL_{exp.target}" and exp.score is not None
    rollout = explainer(clips[0])
    assert rollout.method == "rollout" and rollout.params["discard_ratio"] == 0.0
    assert explainer(clips[0], discard_ratio=0.5).params["discard_ratio"] == 0.5


def test_overlays_gif_and_frame_strip(saved):
    exp = RolloutExplainer.from_pretrained(saved)(_clips()[0], method="grad_rollout")
    overlays = exp.overlays()
    assert len(overlays) == FRAMES and overlays[0].size == (50, 40)
    buffer = io.BytesIO()
    exp.save_gif(buffer)
    with Image.open(io.BytesIO(buffer.getvalue())) as gif:
        assert gif.format == "GIF" and gif.n_frames == FRAMES and gif.size == (50, 40)
    fig = exp.plot()
    assert len(fig.axes) == 2 * FRAMES
    assert [ax.get_title() for ax in fig.axes[FRAMES:]] == [f"tubelet {i}" for i in range(FRAMES)]


def test_wrong_frame_count_or_frame_size_gets_a_specific_error(saved):
    explainer = RolloutExplainer.from_pretrained(saved)
    with pytest.raises(InputError, match=r"videos\[0\] has 3 frames; this TimesformerForVideoClassification takes exactly 4"):
        explainer(_clips()[0][:3])
    with pytest.raises(InputError, match=r"frames of exactly 32×32 pixels .* got 40×40"):
        explainer.relevance_maps(torch.zeros(1, FRAMES, 3, 40, 40))


@pytest.mark.parametrize("method", ["transformer_attribution", "attnlrp", "cp_lrp", "libragrad", "legrad"])
def test_methods_that_do_not_apply_are_refused_with_the_reason(saved, method):
    reason = "LeGrad is not supported for TimeSformer yet" if method == "legrad" else "TimeSformer's attention modules compute q·kᵀ, the softmax and A·v inline"
    with pytest.raises(ValueError, match=reason):
        RolloutExplainer.from_pretrained(saved)(_clips()[0], method=method)


def test_flow_runs_on_the_folded_steps(saved):
    exp = RolloutExplainer.from_pretrained(saved)(_clips()[0], method="flow")
    assert exp.mask.shape == (FRAMES, GRID, GRID) and exp.mask.max() == pytest.approx(1.0)


def test_model_state_is_restored_after_success_and_failure(saved):
    explainer = RolloutExplainer.from_pretrained(saved)
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
    pixels = _pixels(explainer, _clips(1))
    model.eval()
    with torch.no_grad():  # the model's own output is unchanged after the explanations
        torch.testing.assert_close(model(pixels).logits, T.TimesformerForVideoClassification.from_pretrained(saved)(pixels).logits)


def test_another_thread_running_the_model_during_an_explanation_gets_its_usual_output(saved):
    import threading

    explainer = RolloutExplainer.from_pretrained(saved)
    model = explainer.model
    pixels = _pixels(explainer, _clips(1))
    with torch.no_grad():
        usual = model(pixels).logits
    seen = {}

    def other_thread():
        with torch.no_grad():
            seen["logits"] = model(pixels).logits

    def target(out):  # runs inside the capture: the other thread's pass must not be recorded or changed
        worker = threading.Thread(target=other_thread)
        worker.start()
        worker.join()
        return out.logits[:, 1]

    exp = explainer(_clips(1)[0], target=target, method="gae")
    torch.testing.assert_close(seen["logits"], usual)
    direct = explainer(_clips(1)[0], target=1, method="gae")  # and the explanation is the one without it
    np.testing.assert_allclose(exp.token_relevance, direct.token_relevance, rtol=1e-5, atol=1e-8)


def test_pipeline_explains_a_clip(saved):
    from hf_vit_rollout.pipeline import pipeline

    result = pipeline(model=saved, method="gae")(_clips()[0], target=1)
    direct = RolloutExplainer.from_pretrained(saved)(_clips()[0], target=1, method="gae")
    assert len(result["overlays"]) == FRAMES and result["label"] == direct.label
    np.testing.assert_allclose(result["explanation"].mask, direct.mask, rtol=1e-5)


def test_the_command_line_explains_an_animated_gif_as_a_clip(saved, tmp_path, capsys):
    from hf_vit_rollout.cli import main

    gif = tmp_path / "clip.gif"
    frames = [Image.fromarray(f) for f in _clips(1)[0]]
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=100)
    out = tmp_path / "out"
    assert main([str(gif), "--model", saved, "--method", "gae", "--target", "1", "--save-maps", "--out", str(out), "--quiet"]) == 0
    with Image.open(gif) as clip:  # the frames as the GIF holds them (its palette changes the pixels)
        decoded = []
        for i in range(FRAMES):
            clip.seek(i)
            decoded.append(clip.convert("RGB"))
    direct = RolloutExplainer.from_pretrained(saved)(decoded, target=1, method="gae")
    np.testing.assert_allclose(np.load(out / "clip_gae_mean_0_1.npy"), direct.heatmaps, rtol=1e-5, atol=1e-6)
    with Image.open(out / "clip_gae_mean_0_1.gif") as written:
        assert written.n_frames == FRAMES and written.size == (50, 40)
    frames[0].save(tmp_path / "still.png")
    assert main([str(tmp_path / "still.png"), "--model", saved, "--out", str(out), "--quiet"]) == 2
    assert "has 1 frame; this model takes 4: give a video of at least 4 frames" in capsys.readouterr().err


def test_the_app_explains_an_animated_gif_as_a_clip(saved, tmp_path):
    pytest.importorskip("gradio")
    from hf_vit_rollout.app import ModelChoice, _enlarged, explain_all

    gif = tmp_path / "clip.gif"
    frames = [Image.fromarray(f) for f in _clips(1)[0]]
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=100)
    with Image.open(gif) as clip:
        decoded = []
        for i in range(FRAMES):
            clip.seek(i)
            decoded.append(clip.convert("RGB"))
    want = RolloutExplainer.from_pretrained(saved)(decoded, method="gae")
    settings = {"method": "gae", "head_fusion": "mean", "discard_ratio": 0.0, "target": "predicted class", "clip": str(gif)}
    _, caption, gallery = explain_all(ModelChoice((saved,)), None, saved, settings)
    assert caption == want.title and len(gallery) == FRAMES
    for (shown, line), overlay, i in zip(gallery, want.overlays(), range(FRAMES)):
        with Image.open(shown) as image:
            assert np.array_equal(np.asarray(image.convert("RGB")), np.asarray(_enlarged(overlay))) and line == f"frame {i} (tubelet {i})"


@pytest.mark.parametrize("kind", ["space_only", "joint_space_time"])
def test_other_attention_types_are_refused_when_they_load(tmp_path, kind):
    with pytest.raises(UnsupportedModelError, match=f"attention_type={kind!r}"):
        RolloutExplainer.from_pretrained(_save(tmp_path, attention_type=kind))


def test_evaluate_and_data_sets_refuse_timesformer_with_the_reason(saved):
    from hf_vit_rollout import UnsupportedModelError, evaluate
    import datasets
    from PIL import Image

    from hf_vit_rollout.datasets import explain_dataset

    explainer = RolloutExplainer.from_pretrained(saved)
    frame = _clips(1)[0][0]
    for door, call in (("evaluate", lambda: evaluate(explainer, [frame], methods=["rollout"])),
                       ("explain_dataset", lambda: explain_dataset(datasets.Dataset.from_dict({"image": [Image.fromarray(frame)]}), explainer))):
        with pytest.raises(UnsupportedModelError, match=rf"{door} works with image classifiers .* is a video model"):
            call()
