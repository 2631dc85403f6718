"""Data2Vec-Vision, ViT-MAE encoders and ViTDet on small random checkpoints, loaded like a user would.

Rollout and GAE are checked against a hand computation from a reference copy of the checkpoint
loaded with ``attn_implementation="eager"``: its own ``output_attentions`` (ViTDet: its softmax
outputs, since its ``output_attentions`` is a reshaped copy) and their retained gradients, folded
and multiplied here without the package's helpers.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
import transformers as T
from torch.overrides import TorchFunctionMode

from hf_vit_rollout import RolloutExplainer, UnsupportedModelError

from .conftest import SMALL


def _vitdet_config(**extra):
    base = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, mlp_ratio=2, image_size=48,
                pretrain_image_size=48, patch_size=8, window_size=4, window_block_indices=[0, 2])
    return T.VitDetConfig(**{**base, **extra})


# name: (config, model class, image size, prefix tokens, output: "cls" | "patches" | "all")
CASES = {
    "data2vec_cls": (lambda: T.Data2VecVisionConfig(**SMALL, use_relative_position_bias=True, use_mean_pooling=False),
                     T.Data2VecVisionForImageClassification, 32, 1, "cls"),
    "data2vec_mean": (lambda: T.Data2VecVisionConfig(**SMALL, use_shared_relative_position_bias=True, use_mean_pooling=True),
                      T.Data2VecVisionForImageClassification, 32, 1, "patches"),
    "vit_mae": (lambda: T.ViTMAEConfig(**SMALL, mask_ratio=0.0), T.ViTMAEModel, 32, 1, "cls"),
    "vitdet": (_vitdet_config, T.VitDetModel, 48, 0, "all"),  # 6 × 6 grid, 4 × 4 windows: padded to 8 × 8
}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    cache = {}

    def get(name):
        if name not in cache:
            config, model_class, size, _, _ = CASES[name]
            folder = tmp_path_factory.mktemp(name)
            torch.manual_seed(0)
            cfg = config()
            if "Classification" in model_class.__name__:
                cfg.num_labels = 3
            model = model_class(cfg)
            with torch.no_grad():  # random, non-zero relative position tables and layer scales
                for pname, p in model.named_parameters():
                    if "relative_position" in pname or "rel_pos" in pname or "lambda" in pname:
                        p.normal_(0, 0.5)
            model.save_pretrained(folder)
            T.ViTImageProcessorPil(size={"height": size, "width": size}).save_pretrained(folder)
            cache[name] = str(folder)
        return cache[name]

    return get


def _pixels(size, count=3, seed=0):
    return torch.randn(count, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _score(name):
    """The explained score per image: class 1's logit, or the mean of the backbone's last hidden state."""
    if CASES[name][1].__name__.endswith("Classification"):
        return lambda out: out.logits[:, 1]
    return lambda out: out.last_hidden_state.flatten(1).mean(1)


class _KeepSoftmax(TorchFunctionMode):
    """Test-only: every softmax output of the forward pass, with its gradient retained."""

    def __init__(self):
        super().__init__()
        self.kept = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in (torch.Tensor.softmax, torch.softmax, torch.nn.functional.softmax):
            out.retain_grad()
            self.kept.append(out)
        return out


def _fold_by_hand(window_attention, grid, window, batch):
    """(B·nW, H, w², w²) windows → (B, H, N, N), bottom/right padding dropped, by explicit loops."""
    gh, gw = grid
    ph, pw = -(-gh // window) * window, -(-gw // window) * window
    heads = window_attention.shape[1]
    n = gh * gw
    out = torch.zeros(batch, heads, n, n)
    per = (ph // window) * (pw // window)
    for b in range(batch):
        for k in range(per):
            wr, wc = divmod(k, pw // window)
            slots = []
            for s in range(window * window):
                r, c = wr * window + s // window, wc * window + s % window
                slots.append(r * gw + c if r < gh and c < gw else None)
            for i, ti in enumerate(slots):
                for j, tj in enumerate(slots):
                    if ti is not None and tj is not None:
                        out[b, :, ti, tj] = window_attention[b * per + k, :, i, j]
    return out


def _reference(name, folder, pixels):
    """(attentions (B, H, N, N) list, their gradients) of the eager reference model for ``_score``."""
    _, model_class, size, _, _ = CASES[name]
    ref = model_class.from_pretrained(folder, attn_implementation="eager").eval()
    kwargs = {}
    if name == "vit_mae":
        grid = (size // 8) ** 2
        kwargs["noise"] = torch.arange(grid, dtype=torch.float32).repeat(pixels.shape[0], 1)
    if name == "vitdet":
        keep = _KeepSoftmax()
        with keep:
            out = ref(pixels)
        heads = ref.config.num_attention_heads
        _score(name)(out).sum().backward()
        grid = (size // 8, size // 8)
        attentions, grads = [], []
        for layer, probs in enumerate(keep.kept):
            a, g = probs.detach().unflatten(0, (-1, heads)), probs.grad.unflatten(0, (-1, heads))
            if layer in ref.config.window_block_indices:
                a = _fold_by_hand(a, grid, ref.config.window_size, pixels.shape[0])
                g = _fold_by_hand(g, grid, ref.config.window_size, pixels.shape[0])
            attentions.append(a)
            grads.append(g)
        return attentions, grads
    out = ref(pixels, output_attentions=True, **kwargs)
    for a in out.attentions:
        a.retain_grad()
    _score(name)(out).sum().backward()
    return [a.detach() for a in out.attentions], [a.grad for a in out.attentions]


def _weights(name, n):
    prefix, output = CASES[name][3], CASES[name][4]
    w = torch.zeros(n)
    if output == "cls":
        w[0] = 1.0
    else:
        w[prefix:] = 1.0 / (n - prefix)
    return w


def _hand_rollout(attentions, w):
    n = w.shape[0]
    chain = torch.eye(n).expand(attentions[0].shape[0], n, n)
    for a in attentions:
        m = a.mean(1) + torch.eye(n)
        m = m / m.sum(-1, keepdim=True)
        chain = m @ chain
    return w @ chain


def _hand_gae(attentions, grads, w):
    n = w.shape[0]
    relevance = torch.eye(n).expand(attentions[0].shape[0], n, n)
    for a, g in zip(attentions, grads):
        cam = (a * g).clamp(min=0).mean(1)
        relevance = relevance + cam @ relevance
    return w @ relevance


@pytest.mark.parametrize("name", list(CASES))
def test_rollout_and_gae_equal_a_hand_computation(saved, name):
    folder = saved(name)
    explainer = RolloutExplainer.from_pretrained(folder)
    assert type(explainer.model) is CASES[name][1]
    size, prefix = CASES[name][2], CASES[name][3]
    pixels = _pixels(size)
    attentions, grads = _reference(name, folder, pixels)
    w = _weights(name, attentions[0].shape[-1])
    grid = (size // 8, size // 8)
    rollout = explainer.relevance_maps(pixels, method="rollout", discard_ratio=0.0)
    expected = _hand_rollout(attentions, w)[:, prefix:].reshape(-1, *grid)
    torch.testing.assert_close(rollout, expected, rtol=1e-4, atol=1e-6)
    gae = explainer.relevance_maps(pixels, target=_score(name), method="gae")
    expected = _hand_gae(attentions, grads, w)[:, prefix:].reshape(-1, *grid)
    torch.testing.assert_close(gae, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", list(CASES))
def test_results_do_not_depend_on_the_rest_of_the_batch(saved, name):
    explainer = RolloutExplainer.from_pretrained(saved(name))
    pixels = _pixels(CASES[name][2])
    for method, target in (("rollout", None), ("gae", _score(name))):
        together = explainer.relevance_maps(pixels, target=target, method=method)
        alone = explainer.relevance_maps(pixels[1:2], target=target, method=method)
        torch.testing.assert_close(together[1:2], alone, rtol=1e-5, atol=1e-7)


def _state(model):
    configs = [m.config._attn_implementation for m in model.modules() if hasattr(m, "config")]
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
    return configs, hooks, [m.training for m in model.modules()], [type(m) for m in model.modules()]


@pytest.mark.parametrize("name", list(CASES))
def test_model_state_is_restored_after_success_and_failure(saved, name):
    explainer = RolloutExplainer.from_pretrained(saved(name))
    model = explainer.model
    model.train()  # a user's model left in training mode stays so
    before = _state(model)
    image = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    exp = explainer(image, target=_score(name), method="gae")
    assert exp.mask.max() == pytest.approx(1.0)
    assert _state(model) == before

    def broken(out):
        raise RuntimeError("a failing target")

    with pytest.raises(RuntimeError, match="a failing target"):
        explainer(image, target=broken, method="gae")
    assert _state(model) == before
    model.eval()
    pixels = _pixels(CASES[name][2], count=2)
    with torch.no_grad():  # the model's own outputs are unchanged by the calls
        first = explainer.run_model(explainer.on_model(pixels))
        explainer.relevance_maps(pixels, method="rollout")
        second = explainer.run_model(explainer.on_model(pixels))
    key = "logits" if hasattr(first, "logits") and first.logits is not None else "last_hidden_state"
    torch.testing.assert_close(getattr(first, key), getattr(second, key))


def test_data2vec_keeps_its_sdpa_kernel_and_other_threads_see_no_capture(saved):
    explainer = RolloutExplainer.from_pretrained(saved("data2vec_cls"))
    kinds = {type(m).__name__ for m in explainer.model.modules() if type(m).__name__.endswith("SelfAttention")}
    assert kinds == {"Data2VecVisionSdpaSelfAttention"}
    pixels = _pixels(32, count=1)
    with torch.no_grad():
        expected = explainer.model(pixels).logits
    seen = []
    started, release = threading.Event(), threading.Event()

    def target(out):  # runs inside the capture: another thread's forward pass meanwhile
        started.set()
        release.wait(10)
        return out.logits[:, 0]

    def other():
        started.wait(10)
        with torch.no_grad():
            seen.append(explainer.model(pixels).logits)
        release.set()

    thread = threading.Thread(target=other)
    thread.start()
    explainer.relevance_maps(pixels, target=target, method="gae")
    thread.join()
    torch.testing.assert_close(seen[0], expected)
    assert {type(m).__name__ for m in explainer.model.modules() if type(m).__name__.endswith("SelfAttention")} == kinds


def test_vit_mae_with_masking_is_refused_and_loads_with_mask_ratio_zero(tmp_path):
    T.ViTMAEModel(T.ViTMAEConfig(**SMALL, mask_ratio=0.75)).save_pretrained(tmp_path)
    T.ViTImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(tmp_path)
    with pytest.raises(UnsupportedModelError, match=r"mask_ratio=0.75.*drops 75% of the patches.*mask_ratio=0.0"):
        RolloutExplainer.from_pretrained(str(tmp_path))
    explainer = RolloutExplainer.from_pretrained(str(tmp_path), mask_ratio=0.0)
    assert explainer.model.config.mask_ratio == 0.0
    assert explainer(np.zeros((32, 32, 3), np.uint8)).mask.shape == (4, 4)


def test_vit_mae_pretraining_model_is_refused_with_what_to_pass(tmp_path):
    model = T.ViTMAEForPreTraining(T.ViTMAEConfig(**SMALL, mask_ratio=0.0))
    processor = T.ViTImageProcessorPil(size={"height": 32, "width": 32})
    with pytest.raises(UnsupportedModelError, match=r"pre-training forward.*model\.vit"):
        RolloutExplainer(model, processor)
    assert RolloutExplainer(model.vit, processor).num_layers == 2


def test_vitdet_with_residual_blocks_is_refused(tmp_path):
    T.VitDetModel(_vitdet_config(residual_block_indices=[1])).save_pretrained(tmp_path)
    T.ViTImageProcessorPil(size={"height": 48, "width": 48}).save_pretrained(tmp_path)
    with pytest.raises(UnsupportedModelError, match=r"residual_block_indices=\[1\].*convolutional bottleneck"):
        RolloutExplainer.from_pretrained(str(tmp_path))


def test_vitdet_attention_method_reads_the_folded_window_map(saved):
    explainer = RolloutExplainer.from_pretrained(saved("vitdet"))
    pixels = _pixels(48, count=1)
    attentions, _ = _reference("vitdet", saved("vitdet"), pixels)
    got = explainer.relevance_maps(pixels, method="attention", layer=0)
    n = attentions[0].shape[-1]
    expected = (torch.full((n,), 1.0 / n) @ attentions[0].mean(1)).reshape(1, 6, 6)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)


def test_hiera_and_timm_checkpoints_are_refused_with_the_reason(tmp_path):
    hiera = tmp_path / "hiera"
    T.HieraModel(T.HieraConfig(embed_dim=8, depths=[1, 1], num_heads=[1, 1], image_size=[32, 32],
                               patch_size=[7, 7], patch_stride=[4, 4], masked_unit_size=[2, 2], num_query_pool=1,
                               query_stride=[2, 2])).save_pretrained(hiera)
    T.ViTImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(hiera)
    with pytest.raises(UnsupportedModelError, match="pools the queries inside its attention"):
        RolloutExplainer.from_pretrained(str(hiera))
    timm = tmp_path / "timm"
    T.TimmWrapperConfig(architecture="vit_tiny_patch16_224").save_pretrained(timm)
    with pytest.raises(UnsupportedModelError, match="timm's own modules.*torchvision"):
        RolloutExplainer.from_pretrained(str(timm))


@pytest.mark.parametrize("name", ["data2vec_cls", "vitdet"])
def test_pipeline_and_cli_give_the_explainer_result(saved, name, tmp_path):
    from PIL import Image

    from hf_vit_rollout.cli import main
    from hf_vit_rollout.pipeline import pipeline

    image = np.random.default_rng(1).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    direct = RolloutExplainer.from_pretrained(saved(name))(image, discard_ratio=0.0)
    assert direct.mask.max() == pytest.approx(1.0)
    result = pipeline(model=saved(name), discard_ratio=0.0)(Image.fromarray(image))
    np.testing.assert_allclose(result["explanation"].mask, direct.mask, rtol=1e-5)
    path = tmp_path / "picture.png"
    Image.fromarray(image).save(path)
    assert main([str(path), "--model", saved(name), "--discard-ratio", "0", "--save-maps", "--out", str(tmp_path / "out")]) == 0
    (saved_map,) = (tmp_path / "out").glob("*.npy")
    np.testing.assert_allclose(np.load(saved_map), direct.heatmap, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "config,match",
    [
        (lambda: T.TimesformerConfig(**{**SMALL, "num_frames": 2, "attention_type": "joint_space_time"}), "only 'divided_space_time'"),
        (lambda: T.DetrConfig(use_timm_backbone=True, use_pretrained_backbone=False), "runs a timm backbone"),
    ],
)
def test_families_not_supported_yet_are_refused_with_the_reason(tmp_path, config, match):
    config().save_pretrained(tmp_path)
    with pytest.raises(UnsupportedModelError, match=match):
        RolloutExplainer.from_pretrained(str(tmp_path))


@pytest.mark.parametrize("name", ["data2vec_cls", "vitdet"])
def test_a_callable_target_that_runs_the_model_again_is_refused(saved, name):
    """Families whose attention the capture recomputes (Data2Vec-Vision, ViTDet) refuse a target that
    runs the model again, like the dispatched families, and the next call works."""
    from hf_vit_rollout import TargetError

    size = CASES[name][2]
    explainer = RolloutExplainer.from_pretrained(saved(name))
    pixels = _pixels(size, count=1)
    rows = (lambda o: o.logits[:, 1]) if name.startswith("data2vec") else (lambda o: o.last_hidden_state.mean((1, 2, 3)))

    def again(outputs):
        explainer.model(pixel_values=pixels)
        return rows(outputs)

    with pytest.raises(TargetError, match="runs the model again|the model again"):
        explainer.relevance_maps(pixels, target=again, method="grad_rollout")
    assert explainer.relevance_maps(pixels, target=rows, method="grad_rollout").shape[0] == 1
