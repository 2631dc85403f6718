"""DETR and Conditional DETR: one map per detection (Chefer et al. 2021b's encoder-decoder rules).

The references are written here from the paper's equations, image by image: a copy of the model
loaded with ``attn_implementation="eager"`` gives its ``output_attentions`` (encoder, decoder and
cross-attention) and, with ``retain_grad``, their gradients for the detection's class logit; the
rules (R_ii, R_qq, R_qi updates, the residual normalisation) are applied by hand, not through the
package's functions.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers as T

from hf_vit_rollout import RolloutExplainer, TargetError, UnsupportedModelError

LABELS = {0: "cat", 1: "dog", 2: "bird"}
QUERIES = 5
STRIDE = 8  # the tiny ResNet's second stage: stem 4, then one stride-2 stage
KINDS = {
    "detr": (T.DetrConfig, T.DetrForObjectDetection, T.DetrImageProcessorPil),
    "conditional_detr": (T.ConditionalDetrConfig, T.ConditionalDetrForObjectDetection, T.ConditionalDetrImageProcessorPil),
}


def _config(kind, **extra):
    backbone = T.ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic",
                              out_features=["stage2"])
    return KINDS[kind][0](use_timm_backbone=False, use_pretrained_backbone=False, backbone_config=backbone, d_model=32,
                          encoder_layers=2, decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2,
                          encoder_ffn_dim=64, decoder_ffn_dim=64, num_queries=QUERIES, num_labels=3, id2label=LABELS,
                          label2id={v: k for k, v in LABELS.items()}, **extra)


def _save(path, kind, **processor):
    torch.manual_seed(0)
    model = KINDS[kind][1](_config(kind))
    with torch.no_grad():  # queries that differ (sharp decoder attention, spread query positions), varied scores and boxes
        model.model.query_position_embeddings.weight.normal_(0, 3.0)
        for layer in model.model.decoder.layers:
            for p in [*layer.self_attn.parameters(), *layer.encoder_attn.parameters()]:
                p.normal_(0, 0.5)  # biases too: with zero value biases the first self-attention mixes nothing
        for p in model.class_labels_classifier.parameters():
            p.normal_(0, 1.0 if kind == "detr" else 0.3)
        if kind == "detr":
            model.class_labels_classifier.bias[-1] = -2.0  # "no object" less likely than the classes
        for p in model.bbox_predictor.parameters():
            p.normal_(0, 0.3 if kind == "detr" else 0.1)
    model.save_pretrained(path)
    KINDS[kind][2](size={"shortest_edge": 32, "longest_edge": 64}, **processor).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module", params=sorted(KINDS))
def kind(request):
    return request.param


@pytest.fixture(scope="module")
def folder(tmp_path_factory, kind):
    return _save(tmp_path_factory.mktemp(kind), kind)


def _images():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, s, dtype=np.uint8) for s in [(40, 60, 3), (40, 60, 3), (50, 50, 3)]]


def _reference(folder, kind):
    return KINDS[kind][1].from_pretrained(folder, attn_implementation="eager").eval()


def _processed(folder, kind, image):
    return KINDS[kind][2].from_pretrained(folder)(images=image, return_tensors="pt")


def _best(kind, logits):
    """Per query, ``(score, class)``: DETR softmax without no-object, Conditional DETR sigmoid."""
    probs = logits.sigmoid() if kind == "conditional_detr" else logits.softmax(-1)[..., :-1]
    return probs.max(-1)


def _bar(r):
    """Eqs. 8-9 written out row by row: (R - I) row-normalised, plus I; a row of R - I that is all
    zeros (no relevance reached that token) stays zero, as the package documents."""
    out = torch.eye(r.shape[0])
    for i in range(r.shape[0]):
        row = r[i] - torch.eye(r.shape[0])[i]
        if row.sum() != 0:
            out[i] += row / row.sum()
    return out


def _hand(reference, inputs, method, query, kind):
    """The ``(h, w)`` relevance of ``query`` for one processed image, from the paper's rules."""
    out = reference(**inputs, output_attentions=True)
    maps = [*out.encoder_attentions, *out.decoder_attentions, *out.cross_attentions]
    for a in maps:
        a.retain_grad()
    label = int(_best(kind, out.logits.detach())[1][0, query])
    if method == "gae":
        out.logits[0, query, label].backward()
        cam = [(a.detach()[0] * a.grad[0]).clamp(min=0).mean(0) for a in maps]
    else:
        cam = [a.detach()[0].mean(0) for a in maps]
    layers = len(out.encoder_attentions)
    encoder, selfs, crosses = cam[:layers], cam[layers : layers + len(out.decoder_attentions)], cam[layers + len(out.decoder_attentions) :]
    n, q = encoder[0].shape[0], selfs[0].shape[0]
    r_ii, r_qq, r_qi = torch.eye(n), torch.eye(q), torch.zeros(q, n)
    for a in encoder:  # R_ii += A R_ii
        r_ii = r_ii + a @ r_ii
    for a_qq, a_qi in zip(selfs, crosses):
        r_qi = r_qi + a_qq @ r_qi  # R_qi += A R_qi (with the R_qq before this layer's update)
        r_qq = r_qq + a_qq @ r_qq
        r_qi = r_qi + _bar(r_qq).T @ a_qi @ _bar(r_ii)
    pixels = inputs["pixel_values"]
    mask = inputs.get("pixel_mask", torch.ones(pixels.shape[0], *pixels.shape[-2:], dtype=torch.long))
    with torch.no_grad():
        feature, _ = reference.model.backbone(pixels, mask)[-1]  # the encoder's grid is the last feature map
    return r_qi[query].reshape(feature.shape[-2:]), label, out


def _post_box(kind, processor, out, explained, size):
    """The explained query's box as transformers' own ``post_process_object_detection`` puts it on an
    image of ``size = (height, width)``, clipped to the image."""
    height, width = size
    if kind == "detr":  # every query in order, with threshold -1
        post = processor.post_process_object_detection(out, threshold=-1.0, target_sizes=[size])[0]
        box = post["boxes"][explained.detection].tolist()
    else:  # the top (query, class) pairs, most confident first: this query's pair is the one with its score
        post = processor.post_process_object_detection(out, threshold=0.0, target_sizes=[size], top_k=QUERIES * 3)[0]
        match = [i for i, (s, l) in enumerate(zip(post["scores"], post["labels"]))
                 if int(l) == explained.target and float(s) == pytest.approx(explained.score, rel=1e-6)]
        box = post["boxes"][match[0]].tolist()
    return [min(max(v, 0), lim) for v, lim in zip(box, (width, height, width, height))]


@pytest.mark.parametrize("method", ["gae", "rollout"])
def test_each_query_map_equals_the_papers_rules_by_hand(folder, kind, method):
    explainer = RolloutExplainer.from_pretrained(folder)
    assert explainer.is_detector and explainer.id2label == LABELS
    reference = _reference(folder, kind)
    image = _images()[0]
    inputs = dict(_processed(folder, kind, image))
    for query in range(QUERIES):
        hand, label, _ = _hand(reference, inputs, method, query, kind)
        got = explainer.relevance_maps(inputs["pixel_values"], method=method, detection=query)[0]
        torch.testing.assert_close(got, hand, rtol=1e-4, atol=1e-7)
        explained = explainer(image, method=method, detection=query)
        assert explained.detection == query and explained.target == label and explained.label == LABELS[label]
        np.testing.assert_allclose(explained.mask, (hand.clamp(min=0) / hand.max()).numpy(), rtol=1e-4, atol=1e-6)
        assert explained.params["discard_ratio"] == 0.0


def test_min_score_explains_every_query_above_it_with_its_box(folder, kind):
    explainer = RolloutExplainer.from_pretrained(folder)
    reference = _reference(folder, kind)
    processor = KINDS[kind][2].from_pretrained(folder)
    found = explainer(_images(), method="gae", min_score=0.75)
    assert sum(len(f) for f in found) >= 3  # the test really explains several detections
    for image, exps in zip(_images(), found):
        inputs = dict(_processed(folder, kind, image))
        with torch.no_grad():
            out = reference(**inputs)
        best, labels = _best(kind, out.logits)
        expected = [int(d) for d in torch.argsort(best[0], descending=True) if best[0, d] >= 0.75]
        assert [e.detection for e in exps] == expected
        for e in exps:
            assert e.target == int(labels[0, e.detection]) and e.label == LABELS[e.target]
            assert e.score == pytest.approx(float(best[0, e.detection]), rel=1e-5)
            hand, _, _ = _hand(reference, inputs, "gae", e.detection, kind)
            np.testing.assert_allclose(e.mask, (hand.clamp(min=0) / hand.max()).numpy(), rtol=1e-4, atol=1e-6)
            box = _post_box(kind, processor, out, e, image.shape[:2])
            np.testing.assert_allclose(e.box, box, rtol=1e-4, atol=1e-3)


def test_the_heatmap_lies_on_the_model_s_feature_grid(tmp_path, kind):
    """An input whose sides are not multiples of the stride: the grid rounds up (the convolutions pad),
    the mask is the encoder's grid, and the heat-map is the model's cells laid from the input's corner."""
    from hf_vit_rollout.placement import Placement

    folder = _save(tmp_path, kind)
    KINDS[kind][2](size={"height": 37, "width": 50}, do_pad=False).save_pretrained(folder)
    explainer = RolloutExplainer.from_pretrained(folder)
    reference = _reference(folder, kind)
    image = _images()[2]
    inputs = dict(_processed(folder, kind, image))
    assert tuple(inputs["pixel_values"].shape[-2:]) == (37, 50)
    with torch.no_grad():
        out = reference(**inputs, output_attentions=True)
    explained = explainer(image, method="rollout", detection=1)
    assert explained.mask.shape == (5, 7) and out.encoder_attentions[0].shape[-1] == 5 * 7
    expected = Placement((50, 50), (37, 50), (0, 0), (STRIDE, STRIDE), (5, 7)).heatmap(explained.mask, (50, 50))
    np.testing.assert_allclose(explained.heatmap, expected, rtol=1e-6, atol=1e-7)
    assert (explained.heatmap[-1] > 0).any()  # the last, partial cell row is drawn: the model saw those pixels


def test_padding_is_masked_as_the_model_expects(tmp_path, kind):
    """A processor that pads to a fixed size: the explainer passes its ``pixel_mask`` to the model."""
    folder = _save(tmp_path, kind, pad_size={"height": 64, "width": 64})
    explainer = RolloutExplainer.from_pretrained(folder)
    reference = _reference(folder, kind)
    image = _images()[0]
    inputs = dict(_processed(folder, kind, image))
    assert tuple(inputs["pixel_values"].shape[-2:]) == (64, 64) and inputs["pixel_mask"].float().mean() < 1
    hand, _, _ = _hand(reference, inputs, "gae", 2, kind)
    unmasked, _, _ = _hand(reference, {"pixel_values": inputs["pixel_values"]}, "gae", 2, kind)
    assert not torch.allclose(hand, unmasked, rtol=1e-3)  # the mask matters for this input
    explained = explainer(image, method="gae", detection=2)
    np.testing.assert_allclose(explained.mask, (hand.clamp(min=0) / hand.max()).numpy(), rtol=1e-4, atol=1e-6)
    assert explained.heatmap.shape == (40, 60) and explained.mask.shape == (8, 8)
    with torch.no_grad():  # the box is relative to the image before padding, as the post-processing takes it
        out = reference(**inputs)
    processor = KINDS[kind][2].from_pretrained(folder)
    np.testing.assert_allclose(explained.box, _post_box(kind, processor, out, explained, (40, 60)), rtol=1e-4, atol=1e-3)


def test_results_do_not_depend_on_the_rest_of_the_batch(folder):
    explainer = RolloutExplainer.from_pretrained(folder)
    images = _images()[:2]
    images[1] = images[1][::-1].copy()  # another picture of the same size: one batch
    for method in ("rollout", "gae"):
        together = explainer(images, method=method, min_score=0.0)
        for i, image in enumerate(images):
            alone = explainer(image, method=method, min_score=0.0)
            assert [e.detection for e in alone] == [e.detection for e in together[i]]
            for a, b in zip(alone, together[i]):
                np.testing.assert_allclose(a.token_relevance, b.token_relevance, rtol=1e-4, atol=1e-6)
    one = explainer(images, method="gae", detection=[3, 0])
    assert [e.detection for e in one] == [3, 0]
    np.testing.assert_allclose(one[1].token_relevance, explainer(images[1], method="gae", detection=0).token_relevance, rtol=1e-4, atol=1e-6)


def test_overlay_draws_the_box(folder):
    from hf_vit_rollout import viz

    explainer = RolloutExplainer.from_pretrained(folder)
    exps = explainer(np.zeros((60, 90, 3), np.uint8), method="rollout", min_score=0.0)
    exp = max(exps, key=lambda e: min(e.box[2] - e.box[0], e.box[3] - e.box[1]))  # the most box-like
    x0, y0, x1, y1 = (int(v) for v in exp.box)
    assert x1 - x0 >= 10 and y1 - y0 >= 10
    drawn = np.asarray(exp.overlay())
    plain = np.asarray(viz.overlay(exp.image, exp.heatmap, "jet", 0.5, False))
    assert (drawn != plain).any()
    for x in range(x0 + 2, x1 - 2):  # the box's bottom edge is drawn in white
        assert (255, 255, 255) in (tuple(drawn[min(y1, 59), x]), tuple(drawn[min(y1, 59) - 1, x]))


def test_bad_requests_get_specific_errors(folder):
    from hf_vit_rollout.families.encoder_decoder import REFUSED_METHODS
    from hf_vit_rollout.methods import METHODS

    explainer = RolloutExplainer.from_pretrained(folder)
    name = type(explainer.model).__name__
    image = _images()[0]
    with pytest.raises(TargetError, match=rf"detection 5 is out of range: this {name} has 5 object queries \(0 to 4\)"):
        explainer(image, detection=5)
    with pytest.raises(TargetError, match=r"detection -1 is out of range.*\(0 to 4\)"):
        explainer(image, detection=-1)
    with pytest.raises(TargetError, match=r"is a detector: name the detection to explain with detection=index \(0 to 4\)"):
        explainer(image, target=1, method="gae")
    assert set(REFUSED_METHODS) == set(METHODS) - {"gae", "rollout"}  # every other method has its reason
    for method, reason in REFUSED_METHODS.items():
        with pytest.raises(ValueError, match=rf"method {method!r} is not available for {name}: " + reason[:30]):
            explainer(image, method=method, detection=0)
    with pytest.raises(ValueError, match="start_layer= is not supported"):
        explainer(image, method="gae", start_layer=1)
    with pytest.raises(ValueError, match="discard_ratio= is not supported"):
        explainer(image, method="rollout", discard_ratio=0.5)


def test_timm_and_other_backbones_are_refused_with_the_reason(tmp_path):
    timm = T.DetrConfig(use_timm_backbone=True, use_pretrained_backbone=False, num_queries=QUERIES, num_labels=3)
    timm.save_pretrained(tmp_path / "timm")
    with pytest.raises(UnsupportedModelError, match=r"runs a timm backbone .*revision='no_timm'"):
        RolloutExplainer.from_pretrained(str(tmp_path / "timm"))
    other = T.ConditionalDetrConfig(use_timm_backbone=False, use_pretrained_backbone=False,
                                    backbone_config=T.ConvNextConfig(out_features=["stage4"]), num_queries=QUERIES)
    other.save_pretrained(tmp_path / "convnext")
    with pytest.raises(UnsupportedModelError, match=r"has a 'convnext' backbone; only ResNet backbones are explained"):
        RolloutExplainer.from_pretrained(str(tmp_path / "convnext"))


def test_model_state_is_restored_after_success_and_failure(folder):
    explainer = RolloutExplainer.from_pretrained(folder)
    model = explainer.model

    def state():
        return ([m.config._attn_implementation for m in model.modules() if hasattr(m, "config")],
                sum(len(m._forward_hooks) for m in model.modules()), [m.training for m in model.modules()],
                [p.grad for p in model.parameters()])

    before = state()
    explainer(_images()[0], method="gae", min_score=0.0)
    explainer(_images()[0], method="rollout", detection=1)
    with pytest.raises(TargetError):
        explainer(_images()[0], detection=99)
    layer = model.model.decoder.layers[1].encoder_attn

    def broken(*args, **kwargs):
        raise RuntimeError("broken layer")

    layer.forward = broken
    try:
        with pytest.raises(RuntimeError, match="broken layer"):
            explainer(_images()[0], method="gae", detection=0)
    finally:
        del layer.forward
    assert state() == before
    assert all(p.grad is None for p in model.parameters())


def test_pipeline_and_cli_explain_detections(folder, tmp_path, capsys):
    from PIL import Image

    from hf_vit_rollout.cli import main
    from hf_vit_rollout.pipeline import pipeline

    explain = pipeline(model=folder, method="gae")
    results = explain(Image.fromarray(_images()[0]), min_score=0.2)
    direct = RolloutExplainer.from_pretrained(folder)(_images()[0], method="gae", min_score=0.2)
    assert direct and [r["detection"] for r in results] == [e.detection for e in direct]
    assert results[0]["box"] == dict(zip(("xmin", "ymin", "xmax", "ymax"), direct[0].box))
    np.testing.assert_allclose(results[0]["explanation"].mask, direct[0].mask, rtol=1e-5)
    image = tmp_path / "street.png"
    Image.fromarray(_images()[0]).save(image)
    assert main([str(image), "--model", folder, "--method", "gae", "--min-score", "0.2", "--out", str(tmp_path / "out")]) == 0
    written = sorted(p.name for p in (tmp_path / "out").glob("*.png"))
    assert written == sorted(f"street_gae_mean_0_det{e.detection}_{e.target}.png" for e in direct)
    assert main([str(image), "--model", folder, "--detection", "9", "--out", str(tmp_path / "out2")]) != 0
    assert "detection 9 is out of range" in capsys.readouterr().err
    assert main([str(image), "--model", folder, "--method", "flow", "--out", str(tmp_path / "out3")]) != 0
    assert "is not available for" in capsys.readouterr().err


def test_detr_is_a_supported_model_type():
    from hf_vit_rollout.families import supported_model_types

    assert {"detr", "conditional_detr"} <= set(supported_model_types())


def test_the_app_shows_every_detection_above_the_min_score(folder):
    pytest.importorskip("gradio")
    from PIL import Image

    from hf_vit_rollout.app import ALL_DETECTIONS, ModelChoice, display_overlay, explain_all, model_settings, model_updates

    choice = ModelChoice((folder,))
    assert model_settings(choice.explainer(folder)) == ("min_score", "detection")
    assert model_updates(choice.explainer(folder))[1]["choices"] == [ALL_DETECTIONS, *map(str, range(QUERIES))]
    image = Image.fromarray(_images()[0])
    want = RolloutExplainer.from_pretrained(folder)(image, method="gae", min_score=0.5)
    assert len(want) >= 2
    settings = {"method": "gae", "head_fusion": "mean", "discard_ratio": 0.0, "target": "predicted class",
                "min_score": 0.5, "detection": ALL_DETECTIONS}
    _, caption, gallery = explain_all(choice, image, folder, settings)
    assert len(gallery) == len(want)
    for (shown, line), exp in zip(gallery, want):
        assert np.array_equal(np.asarray(Image.open(shown).convert("RGB")), np.asarray(display_overlay(exp).convert("RGB")))
        assert line.startswith(f"detection {exp.detection}: {exp.label} {exp.score:.2f}, box (") and line in caption


@pytest.mark.parametrize("backbone", [
    dict(layer_type="basic", depths=[1, 1], hidden_sizes=[8, 16], out_features=["stage2"]),
    dict(layer_type="basic", depths=[1, 1, 1], hidden_sizes=[8, 8, 16], out_features=["stage3"], downsample_in_first_stage=True),
    dict(layer_type="bottleneck", depths=[1, 1, 1, 1], hidden_sizes=[8, 8, 16, 16], out_features=["stage4"]),
])
def test_the_grid_is_the_backbone_s_last_feature_map(backbone):
    """The layout's grid and cell size, derived from the ResNet config, against the backbone's own output."""
    from hf_vit_rollout.families import family_for

    config = T.DetrConfig(use_timm_backbone=False, use_pretrained_backbone=False, encoder_layers=1, decoder_layers=1, d_model=16,
                          backbone_config=T.ResNetConfig(embedding_size=8, **backbone), num_queries=2)
    model = T.DetrForObjectDetection(config).eval()
    family = family_for(config)
    stride = 2 ** (2 + len(backbone["depths"]) - 1 + int(backbone.get("downsample_in_first_stage", False)))
    assert family.patch_size(config) == (stride, stride)
    for size in [(37, 50), (64, 96), (65, 97)]:
        with torch.no_grad():
            feature, _ = model.model.backbone(torch.zeros(1, 3, *size), torch.ones(1, *size, dtype=torch.long))[-1]
        assert family.layout(config, size).grid_size == tuple(feature.shape[-2:])


def test_the_rules_on_small_matrices_written_out():
    """The pure functions on a 2-token, 2-query case computed entry by entry, per image of a batch."""
    from hf_vit_rollout.methods.encoder_decoder import encoder_decoder_relevance, normalize_residual

    enc = torch.tensor([[[0.5, 0.5], [0.0, 1.0]]])
    dec_self = torch.tensor([[[0.2, 0.8], [0.0, 0.0]]])  # query 1 gets no relevance from its self-attention
    cross = torch.tensor([[[1.0, 0.0], [0.3, 0.7]]])
    r_ii = torch.eye(2) + enc[0]  # [[1.5, .5], [0, 2]]
    bar_ii = torch.tensor([[1 + 0.5 / 1.0, 0.5 / 1.0], [0.0, 1 + 1.0]])  # rows of R - I: [.5, .5] and [0, 1]
    r_qq = torch.eye(2) + dec_self[0]
    bar_qq = torch.tensor([[1 + 0.2, 0.8], [0.0, 1.0]])  # row 1 of R - I is zero: it stays the identity's
    torch.testing.assert_close(normalize_residual(r_ii[None])[0], bar_ii)
    torch.testing.assert_close(normalize_residual(r_qq[None])[0], bar_qq)
    expected = bar_qq.T @ cross[0] @ bar_ii  # R_qi starts at 0, so the self rule adds nothing before it
    batch = encoder_decoder_relevance([torch.cat([enc, enc.flip(-1)])], [(torch.cat([dec_self, dec_self]), torch.cat([cross, cross]))])
    torch.testing.assert_close(batch[0], expected)
    alone = encoder_decoder_relevance([enc.flip(-1)], [(dec_self, cross)])
    torch.testing.assert_close(batch[1], alone[0])  # each image on its own
    with pytest.raises(ValueError, match="at least one decoder layer"):
        encoder_decoder_relevance([enc], [])
    with pytest.raises(ValueError, match=r"encoder layer 0's map is \(1, 2, 2\), expected \(1, 3, 3\)"):
        encoder_decoder_relevance([enc], [(dec_self, torch.ones(1, 2, 3))])
    with pytest.raises(ValueError, match=r"decoder layer 0's maps are \(1, 3, 3\) and \(1, 2, 2\)"):
        encoder_decoder_relevance([enc], [(torch.ones(1, 3, 3), cross)])


def test_gae_under_no_grad_and_with_frozen_weights(folder):
    """``torch.no_grad()`` around the call changes nothing; with every weight frozen the first decoder
    self-attention depends on nothing with a gradient (fixed query embeddings), which gae is told."""
    explainer = RolloutExplainer.from_pretrained(folder)
    image = _images()[0]
    expected = explainer(image, method="gae", detection=2).token_relevance
    with torch.no_grad():
        np.testing.assert_allclose(explainer(image, method="gae", detection=2).token_relevance, expected, rtol=1e-5, atol=1e-8)
    for p in explainer.model.model.backbone.parameters():  # a frozen backbone (as in fine-tuning) changes nothing
        p.requires_grad_(False)
    np.testing.assert_allclose(explainer(image, method="gae", detection=2).token_relevance, expected, rtol=1e-5, atol=1e-8)
    for p in explainer.model.parameters():
        p.requires_grad_(False)
    with pytest.raises(RuntimeError, match=r"attention layer 2 of .* carries no gradient: with every weight frozen"):
        explainer(image, method="gae", detection=2)
    explainer(image, method="rollout", detection=2)  # needs no gradient
    assert not any(p.requires_grad for p in explainer.model.parameters())


def test_evaluate_and_data_sets_refuse_detr_with_the_reason(folder):
    from hf_vit_rollout import evaluate
    import datasets
    from PIL import Image

    from hf_vit_rollout.datasets import explain_dataset

    explainer = RolloutExplainer.from_pretrained(folder)
    for door, call in (("evaluate", lambda: evaluate(explainer, _images()[:1], methods=["rollout"])),
                       ("explain_dataset", lambda: explain_dataset(datasets.Dataset.from_dict({"image": [Image.fromarray(_images()[0])]}), explainer))):
        with pytest.raises(UnsupportedModelError, match=rf"{door} works with image classifiers .* is a detector"):
            call()
