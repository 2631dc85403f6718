"""The app with detection (YOLOS, OWL-ViT), depth (DPT) and video (VideoMAE) checkpoints.

Through the app's own functions (no browser): the detection and region controls are shown only for
the models that take them, and what the app shows equals what the explainer gives directly.
"""

from __future__ import annotations

import os
import string

import numpy as np
import pytest
import torch
import transformers as T

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
gr = pytest.importorskip("gradio")

from PIL import Image  # noqa: E402

from hf_vit_rollout import RolloutExplainer  # noqa: E402
from hf_vit_rollout.app import (  # noqa: E402
    ALL_DETECTIONS,
    ModelChoice,
    build_app,
    display_overlay,
    explain,
    explain_all,
    model_settings,
    model_updates,
    top_predictions,
)

LABELS = {0: "cat", 1: "dog", 2: "bird"}
QUERIES = ["a cat", "a dog"]
BASE = {"method": "gae", "head_fusion": "mean", "discard_ratio": 0.0, "target": "predicted class"}
SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    out = {}
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("yolos")
    model = T.YolosForObjectDetection(T.YolosConfig(**SMALL, image_size=[32, 32], patch_size=8, num_detection_tokens=5,
                                                    num_labels=3, id2label=LABELS, label2id={v: k for k, v in LABELS.items()}))
    with torch.no_grad():  # varied class scores and boxes
        for p in [*model.bbox_predictor.parameters(), model.vit.embeddings.detection_tokens]:
            p.normal_(0, 1.0)
        for p in model.class_labels_classifier.parameters():
            p.normal_(0, 0.3)
    model.save_pretrained(path)
    T.YolosImageProcessorPil(size={"shortest_edge": 32, "longest_edge": 64}).save_pretrained(path)
    out["yolos"] = str(path)

    path = tmp_path_factory.mktemp("owlvit")
    letters = list(string.ascii_lowercase)
    vocab = {t: i for i, t in enumerate(["!", "<|startoftext|>", "<|endoftext|>", *letters, *[c + "</w>" for c in letters]])}
    T.CLIPTokenizer(vocab=vocab, merges=[], pad_token="!").save_pretrained(path)
    text = dict(SMALL, max_position_embeddings=16, vocab_size=len(vocab), bos_token_id=1, eos_token_id=2, pad_token_id=0)
    model = T.OwlViTForObjectDetection(T.OwlViTConfig(text_config=text, vision_config=dict(SMALL, image_size=32, patch_size=8),
                                                      projection_dim=32))
    with torch.no_grad():
        for p in model.class_head.parameters():
            p.normal_(0, 1.0)
    model.save_pretrained(path)
    T.OwlViTImageProcessorPil(size={"height": 32, "width": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(path)
    out["owlvit"] = str(path)

    path = tmp_path_factory.mktemp("dpt")
    model = T.DPTForDepthEstimation(T.DPTConfig(**{**SMALL, "num_hidden_layers": 4}, image_size=32, patch_size=8,
                                                backbone_out_indices=[0, 1, 2, 3], neck_hidden_sizes=[8, 8, 8, 8],
                                                fusion_hidden_size=8, reassemble_factors=[4, 2, 1, 0.5], head_in_index=-1))
    with torch.no_grad():  # a depth head whose output (after its ReLU) is not all zero
        for p in model.head.parameters():
            p.normal_(0, 0.5)
        model.head.head[-2].bias.fill_(1.0)
    model.save_pretrained(path)
    T.DPTImageProcessorPil(size={"height": 32, "width": 32}, keep_aspect_ratio=False).save_pretrained(path)
    out["dpt"] = str(path)

    path = tmp_path_factory.mktemp("videomae")
    T.VideoMAEForVideoClassification(T.VideoMAEConfig(**SMALL, image_size=32, num_frames=4, num_labels=3, patch_size=8,
                                                      tubelet_size=2)).save_pretrained(path)
    T.VideoMAEImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(path)
    out["video"] = str(path)
    return out


@pytest.fixture(scope="module")
def choice(folders):
    return ModelChoice(("demo", folders["yolos"], folders["owlvit"], folders["dpt"], folders["video"]))


def _image():
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8))


def _pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_detection_and_region_controls_are_shown_only_for_the_models_that_take_them(choice, folders):
    shown = {name: model_settings(choice.explainer(folder)) for name, folder in folders.items()}
    assert shown == {"yolos": ("min_score", "detection"), "owlvit": ("min_score", "detection", "queries"),
                     "dpt": ("region",), "video": ("clip",)}
    assert model_settings(choice.explainer("demo")) == ()
    names = ("min score", "detection", "queries", "region", "gallery", "target class", "clip")
    for model, visible in [("demo", {"target class"}), (folders["yolos"], {"min score", "detection", "gallery"}),
                           (folders["owlvit"], {"min score", "detection", "queries", "gallery"}), (folders["dpt"], {"region"}),
                           (folders["video"], {"clip", "gallery"})]:
        updates = dict(zip(names, model_updates(choice.explainer(model))))
        assert {n for n, u in updates.items() if u["visible"]} == visible, model
    detections = model_updates(choice.explainer(folders["yolos"]))[1]["choices"]
    assert detections == [ALL_DETECTIONS, "0", "1", "2", "3", "4"]
    assert model_updates(choice.explainer(folders["yolos"]))[1]["label"] == "detection"
    owlvit = model_updates(choice.explainer(folders["owlvit"]))[1]  # one box per patch: an index is typed, not listed
    assert owlvit["choices"] == [ALL_DETECTIONS] and owlvit["label"] == "detection (or type a box index, 0 to 15)"


def test_a_typed_box_index_explains_that_box_alone(choice, folders):
    image = _image()
    want = RolloutExplainer.from_pretrained(folders["owlvit"])(image, method="gae", text=QUERIES, detection=11)
    settings = {**BASE, "min_score": 0.5, "queries": "a cat, a dog"}
    path, caption, gallery = explain_all(choice, image, folders["owlvit"], {**settings, "detection": " 11 "})
    assert len(gallery) == 1 and caption.splitlines()[1].startswith(f"detection 11: {want.label} {want.score:.2f}")
    assert np.array_equal(_pixels(path), np.asarray(display_overlay(want).convert("RGB")))
    with pytest.raises(gr.Error, match=r"detection is 'every detection above min score' or a box index from 0 to 15; got 'cat'"):
        explain(choice, image, folders["owlvit"], {**settings, "detection": "cat"})
    with pytest.raises(gr.Error, match=r"detection 16 is out of range: .* \(0 to 15\)"):
        explain(choice, image, folders["owlvit"], {**settings, "detection": "16"})


def test_the_app_starts_with_the_first_models_controls(folders):
    app = build_app((folders["yolos"], "demo"))
    visible = {b.elem_id: b.visible for b in app.blocks.values() if getattr(b, "elem_id", None)}
    assert visible["min-score"] and visible["detection"] and visible["detections"]
    assert not visible["queries"] and not visible["region"] and not visible["layer"]
    app = build_app(("demo", folders["dpt"]))
    visible = {b.elem_id: b.visible for b in app.blocks.values() if getattr(b, "elem_id", None)}
    assert not visible["min-score"] and not visible["detection"] and not visible["region"]


def test_every_detection_above_the_min_score_is_shown_with_its_box_and_named(choice, folders):
    direct = RolloutExplainer.from_pretrained(folders["yolos"])
    image = _image()
    want = direct(image, method="gae", min_score=0.1)
    assert len(want) >= 2  # the test really shows several detections
    path, caption, gallery = explain_all(choice, image, folders["yolos"], {**BASE, "min_score": 0.1, "detection": ALL_DETECTIONS})
    assert len(gallery) == len(want)
    for (shown, line), exp in zip(gallery, want):
        assert np.array_equal(_pixels(shown), np.asarray(display_overlay(exp).convert("RGB")))
        assert line.startswith(f"detection {exp.detection}: {exp.label} {exp.score:.2f}, box (")
        assert line in caption
    assert np.array_equal(_pixels(path), _pixels(gallery[0][0]))  # the most confident one
    plain = display_overlay(RolloutExplainer.from_pretrained(folders["yolos"])(image, method="gae", detection=want[0].detection))
    assert np.array_equal(_pixels(path), np.asarray(plain.convert("RGB")))
    # one detection by its index; the class target of an image model is not used
    path, caption = explain(choice, image, folders["yolos"], {**BASE, "target": "cat", "min_score": 0.9, "detection": "3"})
    exp = direct(image, method="gae", detection=3)
    assert np.array_equal(_pixels(path), np.asarray(display_overlay(exp).convert("RGB")))
    assert f"detection 3: {exp.label} {exp.score:.2f}" in caption
    with pytest.raises(gr.Error, match=r"no detection scores at least 1.00; lower the min score"):
        explain(choice, image, folders["yolos"], {**BASE, "min_score": 1.0, "detection": ALL_DETECTIONS})
    with pytest.raises(gr.Error, match="YOLOS explains one detection token's row per map"):
        explain(choice, image, folders["yolos"], {**BASE, "method": "flow"})
    assert top_predictions(choice, image, folders["yolos"]) == {}


def test_owlvit_takes_text_queries(choice, folders):
    direct = RolloutExplainer.from_pretrained(folders["owlvit"])
    image = _image()
    want = direct(image, method="gae", text=QUERIES, min_score=0.5)
    assert want
    path, caption, gallery = explain_all(choice, image, folders["owlvit"],
                                         {**BASE, "min_score": 0.5, "detection": ALL_DETECTIONS, "queries": "a cat,  a dog\n"})
    assert [line for _, line in gallery] == [line for line in caption.splitlines()[1:]]
    assert len(gallery) == len(want) and all(f": {e.label} {e.score:.2f}" in line for (_, line), e in zip(gallery, want))
    assert np.array_equal(_pixels(path), np.asarray(display_overlay(want[0]).convert("RGB")))
    with pytest.raises(gr.Error, match="type one or more"):
        explain(choice, image, folders["owlvit"], {**BASE, "queries": " , "})


def test_a_depth_model_explains_the_region_given(choice, folders):
    direct = RolloutExplainer.from_pretrained(folders["dpt"])
    image = _image()
    want = direct(image, method="gae", region=(0, 0, 30, 20))
    path, caption = explain(choice, image, folders["dpt"], {**BASE, "region": (0, 0, 30, 20)})
    assert np.array_equal(_pixels(path), np.asarray(display_overlay(want).convert("RGB")))
    assert caption == f"gae · mean depth {want.score:.4g} over the region (0, 0, 30, 20)"
    whole = direct(image, method="gae")
    path, caption = explain(choice, image, folders["dpt"], {**BASE, "region": (None, None, None, None)})
    assert np.array_equal(_pixels(path), np.asarray(display_overlay(whole).convert("RGB")))
    assert "(0, 0, 60, 40)" in caption
    with pytest.raises(gr.Error, match="all four region values"):
        explain(choice, image, folders["dpt"], {**BASE, "region": (0, 0, None, 20)})
    with pytest.raises(gr.Error, match=r"lies outside images\[0\]"):
        explain(choice, image, folders["dpt"], {**BASE, "region": (100, 100, 120, 130)})


def test_a_video_model_explains_an_animated_gif(choice, folders, tmp_path):
    from PIL import ImageSequence

    from hf_vit_rollout.app import _enlarged

    rng = np.random.default_rng(0)
    frames = [Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)) for _ in range(7)]
    gif = tmp_path / "clip.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=100, loop=0)
    with Image.open(gif) as clip:  # what the GIF holds: frames 0, 2, 4, 6 of 7 are taken
        held = [f.convert("RGB") for f in ImageSequence.Iterator(clip)]
    want = RolloutExplainer.from_pretrained(folders["video"])([held[i] for i in (0, 2, 4, 6)], method="gae")
    path, caption, gallery = explain_all(choice, None, folders["video"], {**BASE, "clip": str(gif), "min_score": 0.3})
    assert caption == want.title and len(gallery) == 4
    for (shown, line), overlay, i in zip(gallery, want.overlays(), range(4)):
        assert np.array_equal(_pixels(shown), np.asarray(_enlarged(overlay))) and line == f"frame {i} (tubelet {i // 2})"
    with Image.open(path) as animated:
        assert animated.format == "GIF" and animated.n_frames == 4 and animated.size == _enlarged(want.overlays()[0]).size
    with pytest.raises(gr.Error, match=r"is a video model \(VideoMAEForVideoClassification\) and explains clips of 4 frames: upload"):
        explain(choice, _image(), folders["video"], BASE)
    frames[0].save(gif, save_all=True, append_images=frames[1:2], duration=100, loop=0)
    with pytest.raises(gr.Error, match=r"the clip has 2 frames; this model takes 4"):
        explain(choice, None, folders["video"], {**BASE, "clip": str(gif)})
    gif.write_text("not a gif")
    with pytest.raises(gr.Error, match="could not be read as an animated GIF"):
        explain(choice, None, folders["video"], {**BASE, "clip": str(gif)})
    assert top_predictions(choice, _image(), folders["video"]) == {}


def test_the_served_app_passes_every_setting_through(folders, tmp_path):
    """The running server's ``/explain_all``: each widget reaches the explainer in its place."""
    gradio_client = pytest.importorskip("gradio_client")
    import socket

    from hf_vit_rollout.app import launch_kwargs

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = build_app((folders["yolos"], folders["owlvit"], folders["dpt"], folders["video"]))
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **launch_kwargs())
    image = tmp_path / "street.png"
    _image().save(image)
    try:
        client = gradio_client.Client(f"http://127.0.0.1:{port}/", verbose=False)

        def ask(model, min_score=0.5, detection=ALL_DETECTIONS, queries="", region=(None,) * 4, clip=None):
            return client.predict(gradio_client.handle_file(str(image)), model, "gae", "mean", 0.0, "predicted class", 1, "all (fused)",
                                  0, min_score, detection, queries, *region, clip, api_name="/explain_all")

        overlay, caption, gallery = ask(folders["yolos"], detection="3")
        want = RolloutExplainer.from_pretrained(folders["yolos"])(_image(), method="gae", detection=3)
        assert np.array_equal(_pixels(overlay), np.asarray(display_overlay(want).convert("RGB"))) and len(gallery) == 1
        overlay, caption, gallery = ask(folders["owlvit"], min_score=0.5, queries="a cat, a dog")
        want = RolloutExplainer.from_pretrained(folders["owlvit"])(_image(), method="gae", text=QUERIES, min_score=0.5)
        assert len(gallery) == len(want) and np.array_equal(_pixels(overlay), np.asarray(display_overlay(want[0]).convert("RGB")))
        overlay, caption, gallery = ask(folders["owlvit"], detection="7", queries="a cat, a dog")  # typed, not a listed choice
        want = RolloutExplainer.from_pretrained(folders["owlvit"])(_image(), method="gae", text=QUERIES, detection=7)
        assert len(gallery) == 1 and np.array_equal(_pixels(overlay), np.asarray(display_overlay(want).convert("RGB")))
        overlay, caption, gallery = ask(folders["dpt"], region=(0, 0, 30, 20))
        want = RolloutExplainer.from_pretrained(folders["dpt"])(_image(), method="gae", region=(0, 0, 30, 20))
        assert np.array_equal(_pixels(overlay), np.asarray(display_overlay(want).convert("RGB"))) and "(0, 0, 30, 20)" in caption
        frames = [_image(), _image().transpose(Image.FLIP_LEFT_RIGHT)] * 2
        frames[0].save(tmp_path / "clip.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
        overlay, caption, gallery = ask(folders["video"], clip=gradio_client.handle_file(str(tmp_path / "clip.gif")))
        with Image.open(overlay) as animated:
            assert animated.n_frames == 4 and len(gallery) == 4 and caption.startswith("gae")
    finally:
        app.close()


def test_a_clip_too_large_is_refused_before_its_frames_are_decoded(choice, folders, tmp_path, monkeypatch):
    import hf_vit_rollout.images as images

    frames = [Image.new("RGB", (40, 50), (i * 30, 0, 0)) for i in range(5)]
    gif = tmp_path / "big.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=100, loop=0)
    decoded = []
    real_convert = Image.Image.convert
    monkeypatch.setattr(Image.Image, "convert", lambda self, *a, **k: decoded.append(1) or real_convert(self, *a, **k))
    monkeypatch.setattr(images, "MAX_PIXELS", 1000)
    with pytest.raises(gr.Error, match="more than the limit of 1,000"):
        explain(choice, None, folders["video"], {**BASE, "clip": str(gif)})
    assert decoded == []
    monkeypatch.setattr(images, "MAX_PIXELS", 10**8)
    from hf_vit_rollout.videos import read_video

    decoded.clear()
    taken = read_video(str(gif), 4, "the clip")
    assert len(decoded) == 4 and [f.getpixel((0, 0))[0] for f in taken] == [0, 30, 90, 120]
