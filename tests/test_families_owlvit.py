"""OWL-ViT: open-vocabulary detection, one box per patch token, classes named by text queries.

GAE is checked against a hand computation from a reference copy loaded with
``attn_implementation="eager"``: its vision tower's ``output_attentions``, their retained gradients
for the box's query logit, and the chain's row of that box's patch token.
"""

from __future__ import annotations

import string

import numpy as np
import pytest
import torch
import transformers as T

from hf_vit_rollout import RolloutExplainer, TargetError

QUERIES = ["a cat", "a dog"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("owlvit")
    # a character-level CLIP tokenizer whose start token is not id 0 (OWL-ViT reads id 0 first as a padded query)
    letters = list(string.ascii_lowercase)
    vocab = {t: i for i, t in enumerate(["!", "<|startoftext|>", "<|endoftext|>", *letters, *[c + "</w>" for c in letters]])}
    T.CLIPTokenizer(vocab=vocab, merges=[], pad_token="!").save_pretrained(path)
    torch.manual_seed(0)
    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=16,
                vocab_size=len(vocab), bos_token_id=1, eos_token_id=2, pad_token_id=0)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8)
    model = T.OwlViTForObjectDetection(T.OwlViTConfig(text_config=text, vision_config=vision, projection_dim=32))
    with torch.no_grad():
        for p in model.class_head.parameters():
            p.normal_(0, 1.0)
    model.save_pretrained(path)
    T.OwlViTImageProcessorPil(size={"height": 32, "width": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(path)
    return str(path)


def _images():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (40, 60, 3), dtype=np.uint8) for _ in range(2)]


def test_each_box_map_equals_a_hand_computation(folder):
    explainer = RolloutExplainer.from_pretrained(folder)
    assert explainer.is_detector and explainer.num_layers == 2  # the vision tower's layers only
    images = _images()
    pixels = torch.cat([explainer.image_processor(images=i, return_tensors="pt")["pixel_values"] for i in images])
    tokens = explainer.tokenizer(QUERIES, padding=True, return_tensors="pt")
    ref = T.OwlViTForObjectDetection.from_pretrained(folder, attn_implementation="eager").eval()
    out = ref(pixel_values=pixels, input_ids=tokens["input_ids"].repeat(2, 1), attention_mask=tokens["attention_mask"].repeat(2, 1),
              output_attentions=True)
    attentions = out.vision_model_output.attentions
    for a in attentions:
        a.retain_grad()
    detection = 5
    query = out.logits[:, detection].sigmoid().argmax(-1)  # the box's best query, per image
    out.logits[torch.arange(2), detection, query].sum().backward()
    n = attentions[0].shape[-1]
    chain = torch.eye(n).expand(2, n, n)
    for a in attentions:
        chain = chain + (a.detach() * a.grad).clamp(min=0).mean(1) @ chain
    expected = chain[:, 1 + detection, 1:]
    found = explainer(images, method="gae", text=QUERIES, detection=detection)
    for b, exp in enumerate(found):
        assert exp.detection == detection and exp.label == QUERIES[int(query[b])]
        assert exp.score == pytest.approx(float(out.logits[b, detection, query[b]].detach().sigmoid()), rel=1e-5)
        np.testing.assert_allclose(exp.token_relevance[1:], expected[b].numpy(), rtol=1e-4, atol=1e-6)


def test_min_score_and_batch_independence(folder):
    explainer = RolloutExplainer.from_pretrained(folder)
    images = _images()
    images[1] = images[1][::-1].copy()
    together = explainer(images, method="gae", text=QUERIES, min_score=0.5)
    assert sum(len(t) for t in together) >= 2
    for image, found in zip(images, together):
        alone = explainer(image, method="gae", text=QUERIES, min_score=0.5)
        assert [e.detection for e in alone] == [e.detection for e in found]
        assert all(e.score >= 0.5 for e in found) and [e.score for e in found] == sorted((e.score for e in found), reverse=True)
        for a, b in zip(alone, found):
            np.testing.assert_allclose(a.token_relevance, b.token_relevance, rtol=1e-5, atol=1e-7)


def test_queries_are_required_and_boxes_are_range_checked(folder):
    explainer = RolloutExplainer.from_pretrained(folder)
    image = _images()[0]
    with pytest.raises(TargetError, match=r"detects what text queries name: pass text="):
        explainer(image, method="gae", detection=1)
    with pytest.raises(TargetError, match=r"detection 16 is out of range: this OwlViTForObjectDetection has 16 boxes, one per patch \(0 to 15\)"):
        explainer(image, method="gae", text=QUERIES, detection=16)
    rollout = explainer(image, method="rollout", text=["a cat"])  # the most confident box, class-agnostic
    assert rollout.detection is not None and rollout.label == "a cat"
    before = [(m.config._attn_implementation if hasattr(m, "config") else None, m.training) for m in explainer.model.modules()]
    explainer(image, method="gae", text=QUERIES, detection=0)
    assert [(m.config._attn_implementation if hasattr(m, "config") else None, m.training) for m in explainer.model.modules()] == before
