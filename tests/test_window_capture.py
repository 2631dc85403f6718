"""Swin-family models through the explainer: the registry's methods on folded window attention."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
import transformers as T

from hf_vit_rollout import RolloutExplainer, UnsupportedModelError
from hf_vit_rollout.capture import AttentionCapture
from hf_vit_rollout.families.loading import check_family, demo_swin_path
from hf_vit_rollout.methods import METHODS
from hf_vit_rollout.methods.chain import ChainFold
from hf_vit_rollout.families import FAMILIES
from hf_vit_rollout.families.window_capture import block_windows
from hf_vit_rollout.families.window_layout import WindowedLayout
from hf_vit_rollout.families.windows import fold_layer_map

from .test_windows import TINY

MODELS = {
    "swin": (T.SwinConfig, T.SwinForImageClassification),
    "swinv2": (T.Swinv2Config, T.Swinv2ForImageClassification),
    "donut-swin": (T.DonutSwinConfig, T.DonutSwinForImageClassification),
    "swin_backbone": (T.SwinConfig, T.SwinModel),
    "maskformer-swin": (T.MaskFormerSwinConfig, T.MaskFormerSwinModel),
}
SIZE = (28, 36)  # a 14 × 18 first grid: padded to the 4 × 4 windows, odd after merging


@pytest.fixture(scope="module")
def swin_explainer(tmp_path_factory):
    """An explainer per family, from a random checkpoint saved and loaded back, with a non-square processor."""
    made = {}

    def build(name):
        if name not in made:
            config_class, model_class = MODELS[name]
            folder = tmp_path_factory.mktemp(name)
            torch.manual_seed(0)
            model = model_class(config_class(image_size=32, num_labels=3, **TINY))
            with torch.no_grad():
                for p in model.parameters():
                    p.normal_(0.0, 0.3)
            model.save_pretrained(folder)
            T.ViTImageProcessorPil(size={"height": SIZE[0], "width": SIZE[1]}).save_pretrained(folder)
            made[name] = RolloutExplainer.from_pretrained(str(folder))
        return made[name]

    return build


def _fold_windows(attention, grid, window, shift):
    """``(B, H, N, N)`` token-space map of a block's ``(B·nW, H, w², w²)`` window attention, written
    from Swin's definition: the ``(h, w)`` grid is padded (bottom, right) to whole windows, rolled by
    ``-shift`` on both axes and cut into windows row by row, each window's tokens row by row. Padding
    tokens are dropped."""
    h, w = grid
    rows, cols = -(-h // window), -(-w // window)
    heads = attention.shape[1]
    batch = attention.shape[0] // (rows * cols)
    full = torch.zeros(batch, heads, h * w, h * w, dtype=attention.dtype)
    per_image = attention.reshape(batch, rows * cols, heads, window * window, window * window)
    for r in range(rows):
        for c in range(cols):
            slots, tokens = [], []
            for i in range(window):
                for j in range(window):
                    y, x = (r * window + i + shift) % (rows * window), (c * window + j + shift) % (cols * window)
                    if y < h and x < w:
                        slots.append(i * window + j)
                        tokens.append(y * w + x)
            slots, tokens = torch.tensor(slots), torch.tensor(tokens)
            block = per_image[:, r * cols + c][:, :, slots][:, :, :, slots]
            full[:, :, tokens[:, None], tokens[None, :]] = block
    return full


def _merge(grid):
    """``(N', N)`` patch merging: merged token ``(y, x)`` is the mean of its real children ``(2y+a, 2x+b)``."""
    h, w = grid
    hm, wm = -(-h // 2), -(-w // 2)
    matrix = torch.zeros(hm * wm, h * w)
    for y in range(hm):
        for x in range(wm):
            children = [(2 * y + a) * w + 2 * x + b for a in (0, 1) for b in (0, 1) if 2 * y + a < h and 2 * x + b < w]
            matrix[y * wm + x, children] = 1.0 / len(children)
    return matrix


def _reference(model, pixels, method, target):
    """The method's relevance from the model's own window attentions (``output_attentions``, the
    blocks' window size and shift as they ran) and their gradients, folded into token space by
    :func:`_fold_windows` (no package code), chained block by block with the patch mergings, and
    read out uniformly over the last stage's tokens (Swin's average pooling)."""
    blocks = [m for m in model.modules() if hasattr(m, "shift_size") and hasattr(m, "window_size") and hasattr(m, "attention")]
    kept = []

    def keep(module, args, output):
        output[1].retain_grad()
        kept.append((output[1], tuple(int(v) for v in args[1]), int(module.window_size), int(module.shift_size)))

    hooks = [block.register_forward_hook(keep) for block in blocks]
    saved = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        outputs = model(pixel_values=pixels, output_attentions=True)
        if method != "rollout":
            outputs.logits[:, target].sum().backward()
    finally:
        for hook in hooks:
            hook.remove()
        model.set_attn_implementation(saved)
        model.zero_grad(set_to_none=True)
    result, grid = None, kept[0][1]
    for attention, block_grid, window, shift in kept:
        if block_grid != grid:  # a patch merging ran before this block
            result = _merge(grid) @ result
            grid = block_grid
        A = _fold_windows(attention.detach(), grid, window, shift)
        eye = torch.eye(A.shape[-1])
        if method == "rollout":
            step = 0.5 * A.mean(1) + 0.5 * eye
            step = step / step.sum(-1, keepdim=True)
        else:
            G = _fold_windows(attention.grad, grid, window, shift)
            if method == "gae":
                step = (G * A).clamp(min=0).mean(1) + eye
            else:  # grad_rollout: norm(0.5·max(mean_h(A ⊙ ∇A), 0) + 0.5·I)
                step = 0.5 * (G * A).mean(1).clamp(min=0) + 0.5 * eye
                step = step / step.sum(-1, keepdim=True)
        result = step if result is None else step @ result
    weights = torch.full((result.shape[-2],), 1.0 / result.shape[-2])
    first = kept[0][1]
    return (weights @ result).reshape(-1, *first)


@pytest.mark.parametrize(
    "family,method",
    [("swin", "rollout"), ("swin", "grad_rollout"), ("swin", "gae"), ("swinv2", "gae"), ("donut-swin", "rollout")],
)
@pytest.mark.parametrize("size", [SIZE, (26, 34)])  # first grids 14 × 18 and 13 × 17 (odd: merged with padding)
def test_explainer_equals_a_reference_folded_from_the_models_window_attention(swin_explainer, family, method, size):
    explainer = swin_explainer(family)
    pixels = torch.randn(2, 3, *size)
    target = 1 if METHODS[method].needs_gradient else None
    relevance = explainer.relevance_maps(pixels, target, method=method, discard_ratio=0.0)
    assert relevance.shape == (2, size[0] // 2, size[1] // 2)
    torch.testing.assert_close(relevance, _reference(explainer.model, pixels, method, 1), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("method", ["rollout", "gae"])
def test_an_images_relevance_does_not_depend_on_the_batch(swin_explainer, method):
    explainer = swin_explainer("swin")
    pixels = torch.randn(3, 3, *SIZE)
    target = [2, 0, 1] if METHODS[method].needs_gradient else None
    together = explainer.relevance_maps(pixels, target, method=method)
    for i in range(3):
        alone = explainer.relevance_maps(pixels[i : i + 1], None if target is None else target[i], method=method)
        torch.testing.assert_close(alone[0], together[i], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("family", ["swin", "swinv2", "swin_backbone", "maskformer-swin"])
def test_images_of_any_shape_are_explained_on_the_first_grid(swin_explainer, family):
    explainer = swin_explainer(family)
    image = np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    target = (lambda out: out.pooler_output.sum(-1)) if not explainer.num_labels else 2
    for method in ("rollout", "gae"):
        exp = explainer(image, target=None if method == "rollout" else target, method=method)
        assert exp.mask.shape == (14, 18) and exp.mask.max() == pytest.approx(1.0)
        assert exp.heatmap.shape == (50, 70) and exp.token_relevance.shape == (14 * 18,)


def _state(explainer):
    model = explainer.model
    blocks = explainer.window_blocks
    return (
        model.config._attn_implementation,
        [m.training for m in model.modules()],
        [(b.window_size, b.shift_size) for b in blocks],
        [len(b._forward_hooks) + len(b.attention._forward_hooks) for b in blocks],
    )


def test_model_state_is_restored_after_a_clamping_input_and_after_an_error(swin_explainer):
    explainer = swin_explainer("swin")
    explainer.model.train()
    before = _state(explainer)
    assert before[0] != "eager" and explainer.window_blocks[3].shift_size == 2
    # a 16 px input gives a 4 × 4 second stage, one window: Swin sets that block's shift to 0 in its forward
    assert explainer.layout((16, 16)).blocks[3].shift == 0
    explainer.relevance_maps(torch.randn(1, 3, 16, 16), 0, method="gae")
    assert _state(explainer) == before
    with pytest.raises(ZeroDivisionError):
        explainer.relevance_maps(torch.randn(1, 3, 16, 16), lambda out: 1 / 0, method="grad_rollout")
    assert _state(explainer) == before
    explainer.model.eval()


def test_a_model_clamped_outside_the_explainer_is_explained_as_it_runs(swin_explainer):
    explainer = swin_explainer("swin")
    with torch.no_grad():
        explainer.model(pixel_values=torch.randn(1, 3, 16, 16))  # transformers keeps block 3's shift at 0
    try:
        assert explainer.window_blocks[3].shift_size == 0
        assert explainer.layout(SIZE).blocks[3].shift == 0  # what the model now runs with
        assert WindowedLayout.from_config(explainer.model.config, SIZE).blocks[3].shift == 2  # the config's
        pixels = torch.randn(1, 3, *SIZE)
        torch.testing.assert_close(
            explainer.relevance_maps(pixels, method="rollout", discard_ratio=0.0),
            _reference(explainer.model, pixels, "rollout", None),
            rtol=1e-4,
            atol=1e-6,
        )
    finally:
        explainer.window_blocks[3].shift_size = 2


@pytest.mark.parametrize("family", ["swin", "swinv2"])
def test_only_the_capturing_threads_passes_are_recorded(swin_explainer, family):
    model = swin_explainer(family).model
    _, kwargs, modules = FAMILIES[model.config.model_type].attention_setup(model)
    seen = []
    with AttentionCapture(model, lambda i, a: seen.append(i), model, modules):
        other = threading.Thread(target=lambda: model(pixel_values=torch.randn(1, 3, 32, 32), **kwargs))
        other.start()
        other.join()
        assert seen == []
        with torch.no_grad():
            model(pixel_values=torch.randn(1, 3, 32, 32), **kwargs)
    assert seen == [0, 1, 2, 3]


def test_attention_flow_is_refused_with_the_reason(swin_explainer):
    with pytest.raises(ValueError, match="changes its tokens between stages"):
        swin_explainer("swin")(np.zeros((32, 32, 3), np.uint8), method="flow")


@pytest.mark.parametrize("family", ["swin", "swinv2", "donut-swin", "maskformer-swin"])
@pytest.mark.parametrize("size", [(28, 44), (16, 24)])
def test_the_layout_from_the_config_is_what_every_family_ran(family, size):
    config_class = {"swin": T.SwinConfig, "swinv2": T.Swinv2Config, "donut-swin": T.DonutSwinConfig}.get(
        family, T.MaskFormerSwinConfig
    )
    torch.manual_seed(0)
    config = config_class(image_size=32, **TINY)
    model = T.AutoModel.from_config(config)
    ran = []

    def record(module, args, output):
        ran.append((tuple(int(v) for v in args[1]), int(module.window_size), int(module.shift_size)))

    blocks, kwargs, _ = FAMILIES[family].attention_setup(model)
    hooks = [block.register_forward_hook(record) for block in blocks]
    with torch.no_grad():
        model(pixel_values=torch.randn(1, 3, *size), **kwargs)
    for hook in hooks:
        hook.remove()
    assert [(b.grid, b.window, b.shift) for b in WindowedLayout.from_config(config, size).blocks] == ran


def test_the_demo_swin_is_shipped_and_loads_by_name():
    folder = demo_swin_path()
    for name in ("config.json", "model.safetensors", "preprocessor_config.json", "TRAINING.md"):
        assert (folder / name).is_file(), name
    assert (folder / "model.safetensors").stat().st_size < 2 * 2**20
    explainer = RolloutExplainer.from_pretrained("demo-swin")
    assert type(explainer.model) is T.SwinForImageClassification
    from hf_vit_rollout.demo.data import make_sample

    sample = make_sample(7)
    exp = explainer(sample.image, target=sample.labels[0], method="gae")
    assert exp.mask.shape == (16, 16) and exp.heatmap.shape == (64, 64)


@pytest.mark.parametrize(
    "config,reason",
    [
        (T.PvtConfig(), "spatial-reduction attention"),
        (T.LevitConfig(), "LeViT"),
        (T.MobileViTConfig(), "unfolded local patches"),
        (T.ResNetConfig(), "convolutional network"),
        (T.Swin2SRConfig(), "restores images"),
    ],
)
def test_families_that_still_cannot_be_explained_keep_their_reason(config, reason):
    with pytest.raises(UnsupportedModelError, match=reason):
        check_family(config)


def test_overlapping_calls_leave_the_windows_as_the_first_found_them(swin_explainer):
    from hf_vit_rollout.families.window_capture import kept_window_geometry

    blocks = swin_explainer("swin").window_blocks
    before = [(b.window_size, b.shift_size) for b in blocks]
    with kept_window_geometry(blocks):
        blocks[3].shift_size = 0  # a clamp inside the first call
        with kept_window_geometry(blocks):  # a second call enters with the clamped value...
            pass
        assert blocks[3].shift_size == 0  # ...and leaving first does not restore under the first call
    assert [(b.window_size, b.shift_size) for b in blocks] == before
