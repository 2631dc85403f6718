"""DPT depth estimation: region targets over ``predicted_depth``, one map per image.

Rollout and GAE are checked against a hand computation from a reference copy loaded with
``attn_implementation="eager"``: its ``output_attentions``, their retained gradients for the mean
predicted depth over the region, and the chain's row averaged over the region's patch tokens.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers as T

from hf_vit_rollout import InputError, RolloutExplainer, TargetError, UnsupportedModelError

DPT = dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64, image_size=32, patch_size=8,
           backbone_out_indices=[0, 1, 2, 3], neck_hidden_sizes=[8, 8, 8, 8], fusion_hidden_size=8,
           reassemble_factors=[4, 2, 1, 0.5], head_in_index=-1)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("dpt")
    torch.manual_seed(0)
    model = T.DPTForDepthEstimation(T.DPTConfig(**DPT))
    with torch.no_grad():  # a depth head whose output (after its ReLU) is not all zero
        for p in model.head.parameters():
            p.normal_(0, 0.5)
        model.head.head[-2].bias.fill_(1.0)
    model.save_pretrained(path)
    T.DPTImageProcessorPil(size={"height": 32, "width": 32}, keep_aspect_ratio=False).save_pretrained(path)
    return str(path)


def _images():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, s, dtype=np.uint8) for s in [(40, 60, 3), (48, 48, 3)]]


# region (x0, y0, x1, y1) in the 60 × 40 image: resized to 32 × 32, it is input x < 16, y < 16, which is
# depth pixels [:32, :32] of the 64 × 64 map and patches (0..1, 0..1) of the 4 × 4 grid.
REGION = (0, 0, 30, 20)


def _hand(folder, pixels, method):
    ref = T.DPTForDepthEstimation.from_pretrained(folder, attn_implementation="eager").eval()
    out = ref(pixels, output_attentions=True)
    for a in out.attentions:
        a.retain_grad()
    assert out.predicted_depth.shape[-2:] == (64, 64)
    score = out.predicted_depth[:, :32, :32].mean((1, 2))
    assert (score > 0).all()
    score.sum().backward()
    n = out.attentions[0].shape[-1]
    w = torch.zeros(n)
    for r in (0, 1):
        for c in (0, 1):
            w[1 + r * 4 + c] = 0.25
    chain = torch.eye(n).expand(pixels.shape[0], n, n)
    for a in out.attentions:
        if method == "rollout":
            m = a.detach().mean(1) + torch.eye(n)
            chain = (m / m.sum(-1, keepdim=True)) @ chain
        else:
            chain = chain + (a.detach() * a.grad).clamp(min=0).mean(1) @ chain
    return w @ chain, score.detach()


@pytest.mark.parametrize("method", ["rollout", "gae"])
def test_region_map_equals_a_hand_computation(folder, method):
    explainer = RolloutExplainer.from_pretrained(folder)
    image = _images()[0]
    pixels = explainer.image_processor(images=image, return_tensors="pt")["pixel_values"]
    expected, score = _hand(folder, pixels, method)
    got = explainer(image, method=method, region=REGION, **({"discard_ratio": 0.0} if method == "rollout" else {}))
    np.testing.assert_allclose(got.token_relevance, expected[0].numpy(), rtol=1e-4, atol=1e-6)
    assert got.score == pytest.approx(float(score[0]), rel=1e-5) and got.label == "mean depth"
    assert got.box == REGION


def test_a_region_explanation_saves_and_loads_equal(folder, tmp_path):
    from hf_vit_rollout import Explanation

    got = RolloutExplainer.from_pretrained(folder)(_images()[0], method="gae", region=REGION)
    assert Explanation.load(got.save(tmp_path / "saved")) == got


def test_default_region_is_the_whole_image_and_batches_do_not_mix(folder):
    explainer = RolloutExplainer.from_pretrained(folder)
    images = _images()
    together = explainer(images, method="gae")
    for image, one in zip(images, together):
        alone = explainer(image, method="gae")
        np.testing.assert_allclose(alone.token_relevance, one.token_relevance, rtol=1e-5, atol=1e-7)
        assert one.box == (0.0, 0.0, float(image.shape[1]), float(image.shape[0]))
    pixels = explainer.image_processor(images=images[0], return_tensors="pt")["pixel_values"]
    ref = T.DPTForDepthEstimation.from_pretrained(folder).eval()
    with torch.no_grad():
        assert together[0].score == pytest.approx(float(ref(pixels).predicted_depth.mean()), rel=1e-5)


def test_bad_regions_and_targets_get_specific_errors(folder, tmp_path):
    explainer = RolloutExplainer.from_pretrained(folder)
    image = _images()[0]
    with pytest.raises(TargetError, match=r"lies outside images\[0\]: x must overlap \[0, 60\] and y \[0, 40\]"):
        explainer(image, method="gae", region=(100, 100, 120, 130))
    with pytest.raises(TargetError, match="covers no pixel the model saw"):
        explainer(image, method="gae", region=(5, 5, 5.01, 5.01))
    with pytest.raises(TargetError, match=r"needs x0 < x1 and y0 < y1"):
        explainer(image, region=(10, 10, 5, 20))
    with pytest.raises(TargetError, match=r"predicts a dense map \(depth\), not classes: explain a region"):
        explainer(image, target=1, method="gae")
    with pytest.raises(ValueError, match="a region target explains its own output row"):
        explainer(image, method="flow")
    hybrid = T.DPTConfig(**{**DPT, "is_hybrid": True})
    hybrid.save_pretrained(tmp_path)
    with pytest.raises(UnsupportedModelError, match="hybrid"):
        RolloutExplainer.from_pretrained(str(tmp_path))


def test_model_state_is_restored_and_the_pipeline_and_cli_agree(folder, tmp_path, capsys):
    from PIL import Image

    from hf_vit_rollout.cli import main
    from hf_vit_rollout.pipeline import pipeline

    explainer = RolloutExplainer.from_pretrained(folder)
    model = explainer.model
    before = [(m.config._attn_implementation if hasattr(m, "config") else None, m.training) for m in model.modules()]
    with torch.no_grad():  # transformers adds its own output-recording hooks at the first forward pass
        model(explainer.image_processor(images=_images()[0], return_tensors="pt")["pixel_values"])
    hooks = sum(len(m._forward_hooks) for m in model.modules())
    with pytest.raises(TargetError):
        explainer(_images()[0], method="gae", region=(100, 100, 120, 130))
    direct = explainer(_images()[0], method="gae", region=REGION)
    assert [(m.config._attn_implementation if hasattr(m, "config") else None, m.training) for m in model.modules()] == before
    assert sum(len(m._forward_hooks) for m in model.modules()) == hooks
    result = pipeline(model=folder, method="gae")(Image.fromarray(_images()[0]), region=REGION)
    np.testing.assert_allclose(result["explanation"].mask, direct.mask, rtol=1e-5)
    path = tmp_path / "room.png"
    Image.fromarray(_images()[0]).save(path)
    assert main([str(path), "--model", folder, "--method", "gae", "--region", "0", "0", "30", "20",
                 "--save-maps", "--out", str(tmp_path / "out")]) == 0
    (saved,) = (tmp_path / "out").glob("*.npy")
    np.testing.assert_allclose(np.load(saved), direct.heatmap, rtol=1e-5, atol=1e-6)
    assert main([str(path), "--model", folder, "--region", "100", "100", "120", "130", "--out", str(tmp_path / "o2")]) != 0
    assert "lies outside" in capsys.readouterr().err


def test_depth_anything_region_map_equals_a_hand_computation(tmp_path):
    torch.manual_seed(0)
    backbone = T.Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                              image_size=28, patch_size=7, out_indices=[1, 2], reshape_hidden_states=False)
    config = T.DepthAnythingConfig(backbone_config=backbone, neck_hidden_sizes=[8, 8], fusion_hidden_size=8,
                                   head_hidden_size=8, reassemble_hidden_size=32, reassemble_factors=[2, 1], patch_size=7)
    model = T.DepthAnythingForDepthEstimation(config)
    with torch.no_grad():
        model.head.conv3.bias.fill_(1.0)
    model.save_pretrained(tmp_path)
    T.DPTImageProcessorPil(size={"height": 28, "width": 42}, keep_aspect_ratio=False).save_pretrained(tmp_path)
    explainer = RolloutExplainer.from_pretrained(str(tmp_path))
    image = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    # input 28 × 42 (4 × 6 patches of 7 px); region x < 30, y < 20 of the 60 × 40 image = input x < 21, y < 14
    pixels = explainer.image_processor(images=image, return_tensors="pt")["pixel_values"]
    ref = T.DepthAnythingForDepthEstimation.from_pretrained(str(tmp_path), attn_implementation="eager").eval()
    out = ref(pixels, output_attentions=True)
    for a in out.attentions:
        a.retain_grad()
    depth = out.predicted_depth
    dh, dw = depth.shape[-2:]
    ys, xs = (torch.arange(dh) + 0.5) * 28 / dh, (torch.arange(dw) + 0.5) * 42 / dw
    inside = ((ys < 14)[:, None] & (xs < 21)[None, :]).float()
    score = (depth * inside).sum((1, 2)) / inside.sum()
    score.sum().backward()
    n = out.attentions[0].shape[-1]
    w = torch.zeros(n)
    for r in (0, 1):
        for c in (0, 1, 2):
            w[1 + r * 6 + c] = 1 / 6
    rollout, gae = torch.eye(n), torch.eye(n)
    for a in out.attentions:
        m = a[0].detach().mean(0) + torch.eye(n)
        rollout = (m / m.sum(-1, keepdim=True)) @ rollout
        gae = gae + (a[0].detach() * a.grad[0]).clamp(min=0).mean(0) @ gae
    got = explainer(image, method="rollout", discard_ratio=0.0, region=REGION)
    np.testing.assert_allclose(got.token_relevance, (w @ rollout).numpy(), rtol=1e-4, atol=1e-6)
    got = explainer(image, method="gae", region=REGION)
    np.testing.assert_allclose(got.token_relevance, (w @ gae).numpy(), rtol=1e-4, atol=1e-6)
    assert got.score == pytest.approx(float(score[0].detach()), rel=1e-5) and got.mask.shape == (4, 6)


def test_dpt_refuses_a_processor_that_makes_non_square_inputs(tmp_path):
    torch.manual_seed(0)
    T.DPTForDepthEstimation(T.DPTConfig(**DPT)).save_pretrained(tmp_path)
    T.DPTImageProcessorPil(size={"height": 32, "width": 48}, keep_aspect_ratio=False).save_pretrained(tmp_path)
    explainer = RolloutExplainer.from_pretrained(str(tmp_path))
    with pytest.raises(InputError, match=r"square inputs only, but the image processor made a 32×48 input"):
        explainer(_images()[0], method="rollout")


def test_evaluate_refuses_a_depth_model_with_the_reason(folder):
    from hf_vit_rollout import evaluate

    with pytest.raises(UnsupportedModelError, match=r"DPTForDepthEstimation is a dense model \(it predicts a map"):
        evaluate(RolloutExplainer.from_pretrained(folder), _images()[:1], methods=["rollout"])


# ------------------------------------------------------------------ region masks and reductions
def _l_mask():
    """An L-shaped mask of the 60 × 40 image: the top-left 30 × 20 block and the left 10 columns below it."""
    mask = np.zeros((40, 60), dtype=bool)
    mask[:20, :30] = True
    mask[20:, :10] = True
    return mask


def _hand_mask(folder, pixels, method, mask, reduce):
    """The map and score for ``mask`` (image pixels of the 60 × 40 image, resized to 32 × 32), from the
    definition: a depth pixel or patch is inside when the image pixel under its centre is."""
    ref = T.DPTForDepthEstimation.from_pretrained(folder, attn_implementation="eager").eval()
    out = ref(pixels, output_attentions=True)
    for a in out.attentions:
        a.retain_grad()

    def under(centres_y, centres_x):  # model-input centres -> the image pixel under each (rows 40/32, cols 60/32)
        rows = np.floor(centres_y * 40 / 32).astype(int)
        cols = np.floor(centres_x * 60 / 32).astype(int)
        return torch.from_numpy(mask[rows][:, cols])

    depth_centres = (np.arange(64) + 0.5) * 32 / 64
    inside = under(depth_centres, depth_centres)
    values = out.predicted_depth[0][inside]
    score = {"mean": values.mean(), "sum": values.sum(), "max": values.max(), "min": values.min()}[reduce]
    score.backward()
    cells = under((np.arange(4) + 0.5) * 8, (np.arange(4) + 0.5) * 8).reshape(-1)
    n = out.attentions[0].shape[-1]
    w = torch.zeros(n)
    w[1:][cells] = 1 / int(cells.sum())
    chain = torch.eye(n)
    for a in out.attentions:
        if method == "rollout":
            m = a[0].detach().mean(0) + torch.eye(n)
            chain = (m / m.sum(-1, keepdim=True)) @ chain
        else:
            chain = chain + (a[0].detach() * a.grad[0]).clamp(min=0).mean(0) @ chain
    return (w @ chain).numpy(), float(score.detach())


@pytest.mark.parametrize("method", ["rollout", "gae"])
def test_a_mask_region_equals_a_hand_computation(folder, method, tmp_path):
    from hf_vit_rollout import Explanation

    explainer = RolloutExplainer.from_pretrained(folder)
    image = _images()[0]
    pixels = explainer.image_processor(images=image, return_tensors="pt")["pixel_values"]
    expected, score = _hand_mask(folder, pixels, method, _l_mask(), "mean")
    settings = {"discard_ratio": 0.0} if method == "rollout" else {}
    got = explainer(image, method=method, region=_l_mask(), **settings)
    np.testing.assert_allclose(got.token_relevance, expected, rtol=1e-4, atol=1e-6)
    assert got.score == pytest.approx(score, rel=1e-5) and got.label == "mean depth"
    assert got.box == (0.0, 0.0, 30.0, 40.0)  # the mask's bounding box, drawn by overlay()
    assert got.params["region"] == got.box and got.params["region_mask_pixels"] == 20 * 30 + 20 * 10
    same = explainer(image, method=method, region=_l_mask().astype(np.uint8), **settings)  # 0/1 counts as a mask
    np.testing.assert_array_equal(same.token_relevance, got.token_relevance)
    assert Explanation.load(got.save(tmp_path / "saved")) == got


def test_a_mask_of_a_box_gives_the_box_region(folder):
    explainer = RolloutExplainer.from_pretrained(folder)
    image = _images()[0]
    mask = np.zeros((40, 60), dtype=bool)
    mask[:20, :30] = True  # the pixels of REGION
    by_box = explainer(image, method="gae", region=REGION)
    by_mask = explainer(image, method="gae", region=mask)
    np.testing.assert_allclose(by_mask.token_relevance, by_box.token_relevance, rtol=1e-6)
    assert by_mask.score == pytest.approx(by_box.score, rel=1e-6) and by_mask.box == REGION


@pytest.mark.parametrize("reduce", ["sum", "max", "min"])
def test_region_reduce_explains_that_reduction(folder, reduce):
    explainer = RolloutExplainer.from_pretrained(folder)
    image = _images()[0]
    pixels = explainer.image_processor(images=image, return_tensors="pt")["pixel_values"]
    expected, score = _hand_mask(folder, pixels, "gae", _l_mask(), reduce)
    got = explainer(image, method="gae", region=_l_mask(), region_reduce=reduce)
    np.testing.assert_allclose(got.token_relevance, expected, rtol=1e-4, atol=1e-6)
    assert got.score == pytest.approx(score, rel=1e-5)
    assert got.label == f"{reduce} depth" and got.params["region_reduce"] == reduce


def test_bad_masks_and_reductions_get_specific_errors(folder):
    explainer = RolloutExplainer.from_pretrained(folder)
    image = _images()[0]
    with pytest.raises(TargetError, match=r"the region mask is 40×40 but images\[0\] is 40×60 \(H×W\)"):
        explainer(image, method="gae", region=np.ones((40, 40), dtype=bool))
    with pytest.raises(TargetError, match=r"the region mask \(40×60\) is empty"):
        explainer(image, method="gae", region=np.zeros((40, 60), dtype=bool))
    with pytest.raises(TargetError, match="True/False or 0/1 values.*mask > 0.5"):
        explainer(image, method="gae", region=np.full((40, 60), 0.7))
    with pytest.raises(TargetError, match=r"a box \(x0, y0, x1, y1\) of four numbers in image pixels, or a 2-D mask"):
        explainer(image, method="gae", region=np.ones((40, 60, 3), dtype=bool))
    with pytest.raises(TargetError, match=r"region_reduce must be one of 'mean', 'sum', 'max', 'min', got 'median'"):
        explainer(image, method="gae", region_reduce="median")
    with pytest.raises(TargetError, match=r"region_reduce= names a region of a dense prediction"):
        RolloutExplainer.from_pretrained("demo")(image, method="gae", region_reduce="max")


def test_masks_through_the_pipeline_and_the_cli(folder, tmp_path, capsys):
    from PIL import Image

    from hf_vit_rollout.cli import main
    from hf_vit_rollout.pipeline import pipeline

    explainer = RolloutExplainer.from_pretrained(folder)
    direct = explainer(_images()[0], method="gae", region=_l_mask(), region_reduce="max")
    result = pipeline(model=folder, method="gae")(Image.fromarray(_images()[0]), region=_l_mask(), region_reduce="max")
    np.testing.assert_allclose(result["explanation"].mask, direct.mask, rtol=1e-5)
    path, mask_path = tmp_path / "room.png", tmp_path / "mask.png"
    Image.fromarray(_images()[0]).save(path)
    Image.fromarray(_l_mask().astype(np.uint8) * 255).save(mask_path)
    assert main([str(path), "--model", folder, "--method", "gae", "--region-mask", str(mask_path), "--region-reduce", "max",
                 "--save-maps", "--out", str(tmp_path / "out")]) == 0
    (saved,) = (tmp_path / "out").glob("*.npy")
    np.testing.assert_allclose(np.load(saved), direct.heatmap, rtol=1e-5, atol=1e-6)
    capsys.readouterr()
    assert main([str(path), "--model", folder, "--region", "0", "0", "5", "5", "--region-mask", str(mask_path),
                 "--out", str(tmp_path / "o2")]) == 2
    assert "give either --region X0 Y0 X1 Y1 or --region-mask MASK.png, not both" in capsys.readouterr().err
    assert main([str(path), "--model", folder, "--region-mask", str(tmp_path / "missing.png"), "--out", str(tmp_path / "o3")]) == 2
    assert "cannot read the region mask" in capsys.readouterr().err


# ------------------------------------------------------------------ semantic segmentation
SEG_LABELS = {0: "floor", 1: "wall", 2: "sky"}


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory):
    path = tmp_path_factory.mktemp("dpt_seg")
    torch.manual_seed(1)
    config = T.DPTConfig(**DPT, num_labels=3, id2label=SEG_LABELS, label2id={v: k for k, v in SEG_LABELS.items()})
    T.DPTForSemanticSegmentation(config).save_pretrained(path)
    T.DPTImageProcessorPil(size={"height": 32, "width": 32}, keep_aspect_ratio=False).save_pretrained(path)
    return str(path)


def _hand_segment(folder, pixels, target):
    """GAE for the mean logit of ``target`` over REGION (input x < 16, y < 16), from the model's own
    attentions and their gradients; also the class most of the region's pixels are predicted as."""
    ref = T.DPTForSemanticSegmentation.from_pretrained(folder, attn_implementation="eager").eval()
    out = ref(pixels, output_attentions=True)
    for a in out.attentions:
        a.retain_grad()
    logits = out.logits[0]
    side = logits.shape[-1]
    region = logits[:, : side // 2, : side // 2]  # input y < 16, x < 16 of the 32 × 32 input
    majority = int(torch.bincount(region.argmax(0).flatten(), minlength=3).argmax())
    target = majority if target is None else target
    score = region[target].mean()
    score.backward()
    n = out.attentions[0].shape[-1]
    w = torch.zeros(n)
    for r in (0, 1):
        for c in (0, 1):
            w[1 + r * 4 + c] = 0.25
    chain = torch.eye(n)
    for a in out.attentions:
        chain = chain + (a[0].detach() * a.grad[0]).clamp(min=0).mean(0) @ chain
    return (w @ chain).numpy(), float(score.detach()), target, majority


@pytest.mark.parametrize("target", [None, 2, "wall"])
def test_a_segmenters_region_class_equals_a_hand_computation(segmenter, target):
    explainer = RolloutExplainer.from_pretrained(segmenter)
    assert type(explainer.model).__name__ == "DPTForSemanticSegmentation"
    image = _images()[0]
    pixels = explainer.image_processor(images=image, return_tensors="pt")["pixel_values"]
    index = {"wall": 1}.get(target, target)
    expected, score, explained, majority = _hand_segment(segmenter, pixels, index)
    got = explainer(image, method="gae", region=REGION, target=target)
    np.testing.assert_allclose(got.token_relevance, expected, rtol=1e-4, atol=1e-6)
    assert got.score == pytest.approx(score, rel=1e-5)
    assert (got.target, got.label, got.predicted, got.box) == (explained, SEG_LABELS[explained], majority, REGION)


def test_a_segmenters_targets_per_image_and_errors(segmenter):
    explainer = RolloutExplainer.from_pretrained(segmenter)
    images = _images()
    together = explainer(images, method="gae", target=[0, "sky"])
    for image, target, one in zip(images, [0, "sky"], together):
        alone = explainer(image, method="gae", target=target)
        np.testing.assert_allclose(one.token_relevance, alone.token_relevance, rtol=1e-5, atol=1e-7)
    assert [t.target for t in together] == [0, 2]
    with pytest.raises(TargetError, match="out of range|0 to 2"):
        explainer(images[0], method="gae", target=5)
    with pytest.raises(TargetError, match="predicts a class per pixel: explain a region of it .* not top_k="):
        explainer(images[0], method="gae", top_k=2)
    with pytest.raises(TargetError, match="not a callable"):
        explainer(images[0], method="gae", target=lambda out: out.logits.mean((1, 2, 3)))


def test_a_segmenter_through_the_pipeline_and_the_cli(segmenter, tmp_path):
    from PIL import Image

    from hf_vit_rollout.cli import main
    from hf_vit_rollout.pipeline import pipeline

    direct = RolloutExplainer.from_pretrained(segmenter)(_images()[0], method="gae", region=REGION, target="sky")
    result = pipeline(model=segmenter, method="gae")(Image.fromarray(_images()[0]), region=REGION, target="sky")
    np.testing.assert_allclose(result["explanation"].mask, direct.mask, rtol=1e-5)
    path = tmp_path / "street.png"
    Image.fromarray(_images()[0]).save(path)
    assert main([str(path), "--model", segmenter, "--method", "gae", "--target", "sky", "--region", "0", "0", "30", "20",
                 "--save-maps", "--out", str(tmp_path / "out")]) == 0
    (saved,) = (tmp_path / "out").glob("*.npy")
    np.testing.assert_allclose(np.load(saved), direct.heatmap, rtol=1e-5, atol=1e-6)


def test_segmentation_checkpoints_of_other_families_still_load_as_backbones(tmp_path):
    """Only DPT's segmentation head is explained; a BEiT segmentation checkpoint loads as its backbone."""
    torch.manual_seed(0)
    config = T.BeitConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64, image_size=32,
                          patch_size=8, out_indices=[0, 1, 2, 3], num_labels=3)
    T.BeitForSemanticSegmentation(config).save_pretrained(tmp_path)
    T.BeitImageProcessorPil(size={"height": 32, "width": 32}, do_center_crop=False).save_pretrained(tmp_path)
    explainer = RolloutExplainer.from_pretrained(str(tmp_path))
    assert type(explainer.model).__name__ == "BeitModel"
    assert explainer(_images()[0]).mask.shape == (4, 4)


def test_the_app_names_a_segmenters_class_in_its_caption(segmenter):
    gr = pytest.importorskip("gradio")
    from PIL import Image

    from hf_vit_rollout.app import ModelChoice, explain

    want = RolloutExplainer.from_pretrained(segmenter)(_images()[0], method="gae", region=REGION)
    settings = {"method": "gae", "head_fusion": "mean", "discard_ratio": 0.0, "target": "predicted class", "region": REGION}
    _, caption = explain(ModelChoice(("demo", segmenter)), Image.fromarray(_images()[0]), segmenter, settings)
    assert caption == f"gae · {want.label!r}, mean logit {want.score:.4g}, over the region (0, 0, 30, 20)"
    with pytest.raises(gr.Error, match="lies outside"):
        explain(ModelChoice(("demo", segmenter)), Image.fromarray(_images()[0]), segmenter, {**settings, "region": (100, 100, 120, 130)})


def test_evaluate_and_data_sets_refuse_a_segmenter_with_the_reason(segmenter):
    from hf_vit_rollout import evaluate
    import datasets
    from PIL import Image

    from hf_vit_rollout.datasets import explain_dataset

    explainer = RolloutExplainer.from_pretrained(segmenter)
    for door, call in (("evaluate", lambda: evaluate(explainer, _images()[:1], methods=["rollout"])),
                       ("explain_dataset", lambda: explain_dataset(datasets.Dataset.from_dict({"image": [Image.fromarray(_images()[0])]}), explainer))):
        with pytest.raises(UnsupportedModelError, match=rf"{door} works with image classifiers .* is a dense model"):
            call()
