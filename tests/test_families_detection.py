"""YOLOS: one map per detection, through the explainer, the pipeline and the CLI.

Rollout and GAE are checked against a hand computation from a reference copy loaded with
``attn_implementation="eager"``: its ``output_attentions``, their retained gradients for the
detection's class logit, and the chain's row of that detection token.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers as T

from hf_vit_rollout import RolloutExplainer, TargetError

LABELS = {0: "cat", 1: "dog", 2: "bird"}
DETECTIONS = 5


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("yolos")
    torch.manual_seed(0)
    config = T.YolosConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                           image_size=[32, 32], patch_size=8, num_detection_tokens=DETECTIONS, num_labels=3,
                           id2label=LABELS, label2id={v: k for k, v in LABELS.items()})
    model = T.YolosForObjectDetection(config)
    with torch.no_grad():  # varied class scores and boxes
        for p in [*model.class_labels_classifier.parameters(), *model.bbox_predictor.parameters(), model.vit.embeddings.detection_tokens]:
            p.normal_(0, 1.0)
    model.save_pretrained(path)
    T.YolosImageProcessorPil(size={"shortest_edge": 32, "longest_edge": 64}).save_pretrained(path)
    return str(path)


def _images():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, s, dtype=np.uint8) for s in [(40, 60, 3), (40, 60, 3), (50, 50, 3)]]


def _reference(folder, pixels):
    ref = T.YolosForObjectDetection.from_pretrained(folder, attn_implementation="eager").eval()
    out = ref(pixels, output_attentions=True)
    for a in out.attentions:
        a.retain_grad()
    return out


def _hand(out, pixels, method, detection, label):
    """The patch relevance of ``detection`` (class ``label``) per image, by hand."""
    if method == "gae":
        out.logits[torch.arange(pixels.shape[0]), detection, label].sum().backward(retain_graph=True)
    grid = (pixels.shape[-2] // 8, pixels.shape[-1] // 8)
    n = out.attentions[0].shape[-1]
    chain = torch.eye(n).expand(pixels.shape[0], n, n)
    for a in out.attentions:
        if method == "rollout":
            m = a.detach().mean(1) + torch.eye(n)
            chain = (m / m.sum(-1, keepdim=True)) @ chain
        else:
            chain = chain + (a.detach() * a.grad).clamp(min=0).mean(1) @ chain
    if method == "gae":
        for a in out.attentions:
            a.grad = None
    rows = chain[torch.arange(pixels.shape[0]), 1 + grid[0] * grid[1] + detection]
    return rows[:, 1 : 1 + grid[0] * grid[1]].reshape(-1, *grid)


@pytest.mark.parametrize("method", ["rollout", "gae"])
def test_each_detection_map_equals_a_hand_computation(folder, method):
    explainer = RolloutExplainer.from_pretrained(folder)
    assert explainer.is_detector and explainer.id2label == LABELS
    images = _images()[:2]
    pixels = torch.stack([explainer.image_processor(images=i, return_tensors="pt")["pixel_values"][0] for i in images])
    out = _reference(folder, pixels)
    probs = out.logits.detach().softmax(-1)[..., :-1]
    ratio = {"discard_ratio": 0.0} if method == "rollout" else {}
    for detection in range(DETECTIONS):
        label = probs[:, detection].argmax(-1)  # the detection's own predicted class, per image
        got = explainer.relevance_maps(pixels, method=method, detection=detection, **ratio)
        torch.testing.assert_close(got, _hand(out, pixels, method, torch.tensor([detection] * 2), label), rtol=1e-4, atol=1e-6)


def test_min_score_explains_every_detection_above_it_most_confident_first(folder):
    explainer = RolloutExplainer.from_pretrained(folder)
    images = _images()
    pixels = [explainer.image_processor(images=i, return_tensors="pt")["pixel_values"] for i in images]
    found = explainer(images, method="gae", min_score=0.4)
    assert isinstance(found, list) and all(isinstance(f, list) for f in found)
    assert sum(len(f) for f in found) >= 3  # the test really explains several detections
    for exps, pixel in zip(found, pixels):
        out = _reference(folder, pixel)
        best, labels = out.logits.detach().softmax(-1)[0, :, :-1].max(-1)
        expected = [int(d) for d in torch.argsort(best, descending=True) if best[d] >= 0.4]
        assert [e.detection for e in exps] == expected
        for e in exps:
            assert e.target == int(labels[e.detection]) and e.label == LABELS[e.target]
            assert e.score == pytest.approx(float(best[e.detection]), rel=1e-5)
            hand = _hand(out, pixel, "gae", torch.tensor([e.detection]), labels[e.detection : e.detection + 1])[0]
            np.testing.assert_allclose(e.mask, (hand.clamp(min=0) / hand.max()).numpy(), rtol=1e-4, atol=1e-6)
            # the box in image pixels: (cx, cy, w, h) relative to the input, scaled to the image
            cx, cy, w, h = out.pred_boxes[0, e.detection].tolist()
            width, height = e.image.size
            expected_box = [(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height]
            expected_box = [min(max(v, 0), lim) for v, lim in zip(expected_box, (width, height, width, height))]
            np.testing.assert_allclose(e.box, expected_box, rtol=1e-4, atol=1e-3)


def test_results_do_not_depend_on_the_rest_of_the_batch(folder):
    explainer = RolloutExplainer.from_pretrained(folder)
    images = _images()
    for method in ("rollout", "gae"):
        together = explainer(images, method=method, min_score=0.2)
        for i, image in enumerate(images):
            alone = explainer(image, method=method, min_score=0.2)
            assert [e.detection for e in alone] == [e.detection for e in together[i]]
            for a, b in zip(alone, together[i]):
                np.testing.assert_allclose(a.token_relevance, b.token_relevance, rtol=1e-5, atol=1e-7)


def test_overlay_draws_the_box(folder):
    from hf_vit_rollout import viz

    explainer = RolloutExplainer.from_pretrained(folder)
    image = np.zeros((60, 90, 3), np.uint8)
    exps = explainer(image, method="rollout", min_score=0.0)
    exp = max(exps, key=lambda e: (e.box[2] - e.box[0]) * (e.box[3] - e.box[1]))  # the largest box
    x0, y0, x1, y1 = (int(v) for v in exp.box)
    assert x1 - x0 >= 10 and y1 - y0 >= 10
    drawn = np.asarray(exp.overlay())
    plain = np.asarray(viz.overlay(exp.image, exp.heatmap, "jet", 0.5, False))
    assert (drawn != plain).any()
    for x in range(x0 + 2, x1 - 2):  # the box's bottom edge is drawn in white
        assert tuple(drawn[min(y1, 59), x]) == (255, 255, 255) or tuple(drawn[min(y1, 59) - 1, x]) == (255, 255, 255)


def test_bad_detection_targets_get_specific_errors(folder, checkpoint):
    explainer = RolloutExplainer.from_pretrained(folder)
    image = np.zeros((40, 40, 3), np.uint8)
    with pytest.raises(TargetError, match=r"detection 7 is out of range: this YolosForObjectDetection has 5 detection tokens \(0 to 4\)"):
        explainer(image, detection=7)
    with pytest.raises(TargetError, match=r"is a detector: name the detection to explain with detection=index \(0 to 4\)"):
        explainer(image, target=1, method="gae")
    with pytest.raises(TargetError, match=r"min_score must be a probability in \[0, 1\]"):
        explainer(image, min_score=1.5)
    with pytest.raises(ValueError, match="YOLOS explains one detection token's row per map"):
        explainer(image, method="flow", detection=0)
    vit = RolloutExplainer.from_pretrained(checkpoint("vit"))
    with pytest.raises(TargetError, match="predicts no boxes"):
        vit(image, min_score=0.5)


def test_model_state_is_restored_after_success_and_failure(folder):
    explainer = RolloutExplainer.from_pretrained(folder)
    model = explainer.model

    def state():
        return ([m.config._attn_implementation for m in model.modules() if hasattr(m, "config")],
                sum(len(m._forward_hooks) for m in model.modules()), [m.training for m in model.modules()])

    before = state()
    explainer(_images()[0], method="gae", min_score=0.2)
    with pytest.raises(TargetError):
        explainer(_images()[0], detection=99)
    original = model.vit.encoder.layer[0].attention.forward

    def broken(*args, **kwargs):
        raise RuntimeError("broken layer")

    model.vit.encoder.layer[1].attention.forward = broken
    try:
        with pytest.raises(RuntimeError, match="broken layer"):
            explainer(_images()[0], method="gae", detection=0)
    finally:
        del model.vit.encoder.layer[1].attention.forward
    assert model.vit.encoder.layer[0].attention.forward == original
    assert state() == before


def test_pipeline_and_cli_explain_detections(folder, tmp_path, capsys):
    from PIL import Image

    from hf_vit_rollout.cli import main
    from hf_vit_rollout.pipeline import pipeline

    explain = pipeline(model=folder, method="gae")
    results = explain(Image.fromarray(_images()[0]), min_score=0.2)
    direct = RolloutExplainer.from_pretrained(folder)(_images()[0], method="gae", min_score=0.2)
    assert [r["detection"] for r in results] == [e.detection for e in direct]
    assert set(results[0]["box"]) == {"xmin", "ymin", "xmax", "ymax"}
    np.testing.assert_allclose(results[0]["explanation"].mask, direct[0].mask, rtol=1e-5)
    image = tmp_path / "street.png"
    Image.fromarray(_images()[0]).save(image)
    assert main([str(image), "--model", folder, "--method", "gae", "--min-score", "0.2", "--out", str(tmp_path / "out")]) == 0
    written = sorted(p.name for p in (tmp_path / "out").glob("*.png"))
    assert written == sorted(f"street_gae_mean_0_det{e.detection}_{e.target}.png" for e in direct)
    assert main([str(image), "--model", folder, "--detection", "9", "--out", str(tmp_path / "out2")]) != 0
    assert "detection 9 is out of range" in capsys.readouterr().err


def test_a_detection_explanation_saves_and_loads_equal(folder, tmp_path):
    from hf_vit_rollout import Explanation

    explanation = RolloutExplainer.from_pretrained(folder)(_images()[0], method="gae", detection=2)
    again = Explanation.load(explanation.save(tmp_path / "saved"))
    assert again == explanation
    assert again.detection == 2 and again.box == explanation.box and isinstance(again.box, tuple)
    assert "detection=2" in repr(explanation) and "detection 2" in explanation.title


def test_supported_model_types_name_the_new_families():
    from hf_vit_rollout.tokens import supported_model_types

    types = supported_model_types()
    for name in ("data2vec-vision", "vit_mae", "vitdet", "siglip2_vision_model", "yolos", "owlvit_vision_model", "owlv2_vision_model",
                 "videomae", "vivit", "dpt", "depth_anything"):
        assert name in types
    assert "hiera" not in types and "timm_wrapper" not in types


def test_one_detection_per_image(folder):
    explainer = RolloutExplainer.from_pretrained(folder)
    images = _images()
    found = explainer(images, method="gae", detection=[4, 0, 2])
    assert [e.detection for e in found] == [4, 0, 2]
    for image, exp in zip(images, found):
        alone = explainer(image, method="gae", detection=exp.detection)
        np.testing.assert_allclose(alone.token_relevance, exp.token_relevance, rtol=1e-5, atol=1e-7)
    with pytest.raises(TargetError, match="got 2 detections for 3 images"):
        explainer(images, detection=[1, 2])
    with pytest.raises(TargetError, match=r"detection 5 is out of range"):
        explainer(images, detection=[1, 2, 5])


def test_predict_and_relevance_maps_refuse_what_a_detector_cannot_give(folder):
    """A detector predicts boxes, not one class per image; relevance_maps gives one map per input."""
    explainer = RolloutExplainer.from_pretrained(folder)
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with pytest.raises(TargetError, match="predicts boxes, not one class per image"):
        explainer.predict(_images()[0])
    with pytest.raises(ValueError, match="min_score= can give several detections per image"):
        explainer.relevance_maps(pixels, min_score=0.0, method="rollout")
    for detections in [(0,), (0, 1, 2)]:
        with pytest.raises(TargetError, match=f"got {len(detections)} detections for 2 images"):
            explainer.relevance_maps(pixels, detection=detections, method="gae")
    assert explainer.relevance_maps(pixels, detection=(0, 1), method="gae").shape == (2, 4, 4)


def test_evaluate_refuses_a_detector_with_the_reason(folder):
    from hf_vit_rollout import UnsupportedModelError, evaluate

    explainer = RolloutExplainer.from_pretrained(folder)
    with pytest.raises(UnsupportedModelError, match=r"evaluate works with image classifiers .*YolosForObjectDetection is a detector .*\(detection=, min_score="):
        evaluate(explainer, _images()[:1], methods=["rollout"])


def test_explain_dataset_refuses_a_detector_with_the_reason(folder):
    datasets = pytest.importorskip("datasets")
    from hf_vit_rollout import UnsupportedModelError, explain_dataset

    rows = datasets.Dataset.from_dict({"image": _images()[:1]})
    with pytest.raises(UnsupportedModelError, match=r"explain_dataset works with image classifiers .*YolosForObjectDetection is a detector"):
        explain_dataset(rows, RolloutExplainer.from_pretrained(folder), method="rollout")
