"""OWLv2: OWL-ViT's one box per patch token, on images its processor pads to a square first.

``Owlv2ImageProcessorPil`` pads an ``H × W`` image bottom and right to ``S × S`` (``S = max(H, W)``)
and resizes that square to the model input, so the image is the top-left ``H × W`` part of the
padded square. The references here are written from that definition and from the model's own
outputs, not from the package's placement:

* heat-map: the patch map upsampled (bilinear, ``align_corners=False``) to the padded square at the
  image's own resolution, then cropped to the image's ``H × W`` part;
* box: the processor's own ``post_process_object_detection`` with ``target_sizes``, clipped to the
  image as the package clips every box;
* rollout and GAE: a hand computation from a reference copy loaded with ``attn_implementation="eager"``
  (its vision tower's ``output_attentions`` and their retained gradients for the box's query logit).
"""

from __future__ import annotations

import string

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import transformers as T

from hf_vit_rollout import RolloutExplainer, TargetError

QUERIES = ["a cat", "a dog"]
PATCHES = 16  # a 32-px input of 8-px patches


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("owlv2")
    # a character-level CLIP tokenizer whose start token is not id 0 (OWLv2 reads id 0 first as a padded query)
    letters = list(string.ascii_lowercase)
    vocab = {t: i for i, t in enumerate(["!", "<|startoftext|>", "<|endoftext|>", *letters, *[c + "</w>" for c in letters]])}
    T.CLIPTokenizer(vocab=vocab, merges=[], pad_token="!").save_pretrained(path)
    torch.manual_seed(0)
    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=16,
                vocab_size=len(vocab), bos_token_id=1, eos_token_id=2, pad_token_id=0)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8)
    model = T.Owlv2ForObjectDetection(T.Owlv2Config(text_config=text, vision_config=vision, projection_dim=32))
    with torch.no_grad():
        for p in model.class_head.parameters():
            p.normal_(0, 1.0)
        model.box_head.dense2.weight.zero_()  # each box its patch's box (box_bias), moved and resized by
        model.box_head.dense2.bias.normal_(0, 0.2)  # a shift: the random head alone saturates every box
    model.save_pretrained(path)
    T.Owlv2ImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(path)
    return str(path)


def _images():
    """A wide and a tall image: the padding falls below the first and right of the second."""
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, shape, dtype=np.uint8) for shape in [(40, 60, 3), (60, 50, 3)]]


def _reference(folder, explainer, images):
    pixels = torch.cat([explainer.image_processor(images=i, return_tensors="pt")["pixel_values"] for i in images])
    tokens = explainer.tokenizer(QUERIES, padding=True, return_tensors="pt")
    ref = T.Owlv2ForObjectDetection.from_pretrained(folder, attn_implementation="eager").eval()
    count = len(images)
    out = ref(pixel_values=pixels, input_ids=tokens["input_ids"].repeat(count, 1),
              attention_mask=tokens["attention_mask"].repeat(count, 1), output_attentions=True)
    for a in out.vision_model_output.attentions:
        a.retain_grad()
    return out


def _hand(out, method, detection, query):
    """``(B, N - 1)`` relevance of the patch tokens for box ``detection`` (its query ``query`` per image)."""
    attentions = out.vision_model_output.attentions
    count = attentions[0].shape[0]
    if method == "gae":
        for a in attentions:
            a.grad = None
        out.logits[torch.arange(count), detection, query].sum().backward(retain_graph=True)
    n = attentions[0].shape[-1]
    chain = torch.eye(n).expand(count, n, n)
    for a in attentions:
        if method == "rollout":
            m = a.detach().mean(1) + torch.eye(n)
            chain = (m / m.sum(-1, keepdim=True)) @ chain
        else:
            chain = chain + (a.detach() * a.grad).clamp(min=0).mean(1) @ chain
    return chain[:, 1 + detection, 1:]


def _heatmap_by_definition(mask: np.ndarray, image: np.ndarray) -> np.ndarray:
    """The patch map over the padded ``S × S`` square at the image's resolution, cropped to the image."""
    height, width = image.shape[:2]
    side = max(height, width)
    square = F.interpolate(torch.tensor(mask)[None, None], size=(side, side), mode="bilinear", align_corners=False)[0, 0]
    return square[:height, :width].numpy()


@pytest.mark.parametrize("method", ["rollout", "gae"])
def test_each_box_map_and_heatmap_equal_a_hand_computation(folder, method):
    explainer = RolloutExplainer.from_pretrained(folder)
    assert type(explainer.model).__name__ == "Owlv2ForObjectDetection"
    assert explainer.is_detector and explainer.num_layers == 2  # the vision tower's layers only
    images = _images()
    out = _reference(folder, explainer, images)
    ratio = {"discard_ratio": 0.0} if method == "rollout" else {}
    for detection in (0, 5, 15):
        query = out.logits[:, detection].detach().argmax(-1)  # the box's best query (highest logit), per image
        expected = _hand(out, method, detection, query)
        found = explainer(images, method=method, text=QUERIES, detection=detection, **ratio)
        for b, (exp, image) in enumerate(zip(found, images)):
            assert exp.detection == detection and exp.label == QUERIES[int(query[b])]
            assert exp.score == pytest.approx(float(out.logits[b, detection, query[b]].detach().sigmoid()), rel=1e-5)
            np.testing.assert_allclose(exp.token_relevance[1:], expected[b].numpy(), rtol=1e-4, atol=1e-6)
            hand_mask = expected[b].clamp(min=0).reshape(4, 4)
            hand_mask = (hand_mask / hand_mask.max()).numpy()
            np.testing.assert_allclose(exp.mask, hand_mask, rtol=1e-4, atol=1e-6)
            assert exp.heatmap.shape == image.shape[:2]
            np.testing.assert_allclose(exp.heatmap, _heatmap_by_definition(hand_mask, image), rtol=1e-4, atol=1e-5)


def test_boxes_are_the_processors_own_in_image_pixels(folder):
    explainer = RolloutExplainer.from_pretrained(folder)
    processor = explainer.image_processor
    images = _images()
    for image in images:
        out = _reference(folder, explainer, [image])
        height, width = image.shape[:2]
        (post,) = processor.post_process_object_detection(out, threshold=0.0, target_sizes=[(height, width)])
        assert len(post["boxes"]) == PATCHES  # every box kept (their sigmoid scores are above 0)
        found = explainer(image, method="rollout", text=QUERIES, min_score=0.0)
        assert sorted(e.detection for e in found) == list(range(PATCHES))
        inside = 0
        for exp in found:
            box = post["boxes"][exp.detection].detach().numpy()
            inside += bool(box[2] <= width and box[3] <= height and box[0] >= 0 and box[1] >= 0)
            clipped = np.clip(box, 0, [width, height, width, height])
            np.testing.assert_allclose(exp.box, clipped, rtol=1e-5, atol=1e-4)
            assert exp.score == pytest.approx(float(post["scores"][exp.detection].detach()), rel=1e-5)
            assert exp.target == int(post["labels"][exp.detection])
        # boxes inside the image are compared unclipped, and boxes reaching into the padding clipped
        assert inside >= 2 and PATCHES - inside >= 2


def test_results_do_not_depend_on_the_rest_of_the_batch(folder):
    explainer = RolloutExplainer.from_pretrained(folder)
    images = _images()  # of different shapes: each keeps its own placement in a batch
    for method in ("rollout", "gae"):
        together = explainer(images, method=method, text=QUERIES, min_score=0.4)
        assert sum(len(t) for t in together) >= 2
        for image, found in zip(images, together):
            alone = explainer(image, method=method, text=QUERIES, min_score=0.4)
            assert [e.detection for e in alone] == [e.detection for e in found]
            assert [e.score for e in found] == sorted((e.score for e in found), reverse=True)
            for a, b in zip(alone, found):
                np.testing.assert_allclose(a.token_relevance, b.token_relevance, rtol=1e-5, atol=1e-7)
                np.testing.assert_allclose(a.heatmap, b.heatmap, rtol=1e-5, atol=1e-6)
                assert a.box == pytest.approx(b.box, rel=1e-5, abs=1e-4)


def test_range_errors_and_queries_are_required(folder):
    explainer = RolloutExplainer.from_pretrained(folder)
    image = _images()[0]
    with pytest.raises(TargetError, match=r"detection 16 is out of range: this Owlv2ForObjectDetection has 16 boxes, one per patch \(0 to 15\)"):
        explainer(image, method="gae", text=QUERIES, detection=16)
    with pytest.raises(TargetError, match=r"detects what text queries name: pass text="):
        explainer(image, method="gae", detection=1)
    with pytest.raises(ValueError, match=r"OWL-ViT and OWLv2 explain one box's patch-token row per map, and attention flow"):
        explainer(image, method="flow", text=QUERIES, detection=1)
    for method in ("transformer_attribution", "attnlrp", "cp_lrp", "libragrad"):
        with pytest.raises(ValueError, match=rf"method '{method}' is not available here: the LRP rules cover .* OWL-ViT and OWLv2"):
            explainer(image, method=method, text=QUERIES, detection=1)


def test_model_state_is_restored_after_success_and_failure(folder):
    explainer = RolloutExplainer.from_pretrained(folder)
    model = explainer.model
    model.train()  # a model in training mode: explained in eval mode, given back in training mode

    def state():
        return ([m.config._attn_implementation for m in model.modules() if hasattr(m, "config")],
                sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()),
                [m.training for m in model.modules()], [p.requires_grad for p in model.parameters()])

    before = state()
    image = _images()[0]
    explainer(image, method="gae", text=QUERIES, min_score=0.4)
    with pytest.raises(TargetError):
        explainer(image, method="gae", text=QUERIES, detection=99)
    layers = model.owlv2.vision_model.encoder.layers
    original = layers[0].self_attn.forward

    def broken(*args, **kwargs):
        raise RuntimeError("broken layer")

    layers[1].self_attn.forward = broken
    try:
        with pytest.raises(RuntimeError, match="broken layer"):
            explainer(image, method="gae", text=QUERIES, detection=0)
    finally:
        del layers[1].self_attn.forward
    assert layers[0].self_attn.forward == original
    assert state() == before and model.training


def test_pipeline_and_cli_explain_boxes(folder, tmp_path, capsys):
    from PIL import Image

    from hf_vit_rollout.cli import main
    from hf_vit_rollout.pipeline import pipeline

    image = _images()[0]
    direct = RolloutExplainer.from_pretrained(folder)(image, method="gae", text=QUERIES, min_score=0.4)
    assert direct
    explain = pipeline(model=folder, method="gae")  # the queries come with each call
    results = explain(Image.fromarray(image), text=QUERIES, min_score=0.4)
    assert [r["detection"] for r in results] == [e.detection for e in direct]
    for r, e in zip(results, direct):
        assert r["box"] == dict(zip(("xmin", "ymin", "xmax", "ymax"), e.box))
        np.testing.assert_allclose(r["explanation"].heatmap, e.heatmap, rtol=1e-5, atol=1e-6)
    with pytest.raises(TargetError, match=r"detects what text queries name: pass text="):
        explain(Image.fromarray(image), min_score=0.4)
    path = tmp_path / "street.png"
    Image.fromarray(image).save(path)
    one = RolloutExplainer.from_pretrained(folder)(image, method="gae", text="a cat", min_score=0.3)
    assert one
    assert main([str(path), "--model", folder, "--method", "gae", "--text", "a cat", "--min-score", "0.3",
                 "--save-maps", "--out", str(tmp_path / "out")]) == 0
    written = sorted(p.name for p in (tmp_path / "out").glob("*.png"))
    assert written == sorted(f"street_gae_mean_0_det{e.detection}_{e.target}.png" for e in one)
    for e in one:
        (saved,) = (tmp_path / "out").glob(f"street_gae_mean_0_det{e.detection}_*.npy")
        np.testing.assert_allclose(np.load(saved), e.heatmap, rtol=1e-5, atol=1e-6)
    assert main([str(path), "--model", folder, "--text", "a cat", "--detection", "16", "--out", str(tmp_path / "o2")]) != 0
    assert "detection 16 is out of range" in capsys.readouterr().err


def test_an_explanation_saves_and_loads_with_its_padded_placement(folder, tmp_path):
    from hf_vit_rollout import Explanation

    explanation = RolloutExplainer.from_pretrained(folder)(_images()[0], method="gae", text=QUERIES, detection=5)
    assert explanation.placement.resized == pytest.approx((40 * 32 / 60, 32.0))  # the image's part of the square input
    again = Explanation.load(explanation.save(tmp_path / "saved"))
    assert again == explanation and again.placement == explanation.placement
    np.testing.assert_array_equal(again.heatmap_at((60, 40)), explanation.heatmap)


def test_evaluate_and_data_sets_refuse_owlv2_with_the_reason(folder):
    from hf_vit_rollout import UnsupportedModelError, evaluate
    import datasets
    from PIL import Image

    from hf_vit_rollout.datasets import explain_dataset

    explainer = RolloutExplainer.from_pretrained(folder)
    for door, call in (("evaluate", lambda: evaluate(explainer, _images()[:1], methods=["rollout"])),
                       ("explain_dataset", lambda: explain_dataset(datasets.Dataset.from_dict({"image": [Image.fromarray(_images()[0])]}), explainer))):
        with pytest.raises(UnsupportedModelError, match=rf"{door} works with image classifiers .* is a detector"):
            call()
