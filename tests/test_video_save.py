"""VideoExplanation.save / load: PNG frames, NPY arrays and a JSON manifest written last, equal after a round trip."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import transformers as T
from PIL import Image

from hf_vit_rollout import RolloutExplainer
from hf_vit_rollout.families.video import VIDEO_MANIFEST, VideoExplanation


@pytest.fixture(scope="module")
def explanation(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vivit")
    torch.manual_seed(0)
    config = T.VivitConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32,
                           num_frames=4, num_labels=3, tubelet_size=[2, 8, 8])
    T.VivitForVideoClassification(config).save_pretrained(folder)
    T.VivitImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    clip = np.random.default_rng(0).integers(0, 256, (4, 40, 50, 3), dtype=np.uint8)
    return RolloutExplainer.from_pretrained(str(folder))(clip, target=1, method="gae")


def test_a_saved_video_explanation_loads_equal(explanation, tmp_path):
    folder = explanation.save(tmp_path / "clip")
    assert sorted(p.name for p in (folder / "frames").iterdir()) == [f"frame_{i:03d}.png" for i in range(4)]
    with Image.open(folder / "overlay.gif") as gif:
        assert gif.n_frames == 4
    again = VideoExplanation.load(folder)
    assert again == explanation
    assert again.placement == explanation.placement and again.tubelet_size == 2 and again.label == explanation.label
    assert again.heatmaps.dtype == np.float32 and again.mask.shape == (2, 4, 4)
    # equality looks at every field: one changed field, one changed pixel or one changed value is seen
    assert dataclasses.replace(again, score=0.5) != explanation
    assert dataclasses.replace(again, tubelet_size=1) != explanation
    changed = again.frames[-1].copy()
    changed.putpixel((0, 0), tuple(255 - v for v in changed.getpixel((0, 0))))
    assert dataclasses.replace(again, frames=[*again.frames[:-1], changed]) != explanation
    heatmaps = again.heatmaps.copy()
    heatmaps[3, 0, 0] += 0.5
    assert dataclasses.replace(again, heatmaps=heatmaps) != explanation


def test_save_refuses_a_used_folder_and_load_an_unfinished_one(explanation, tmp_path):
    folder = explanation.save(tmp_path / "clip")
    with pytest.raises(FileExistsError, match="is not empty; pass overwrite=True"):
        explanation.save(folder)
    shorter = dataclasses.replace(explanation, frames=explanation.frames[:2], heatmaps=explanation.heatmaps[:2])
    assert VideoExplanation.load(shorter.save(folder, overwrite=True)) == shorter
    assert sorted(p.name for p in (folder / "frames").iterdir()) == ["frame_000.png", "frame_001.png"]
    (folder / VIDEO_MANIFEST).unlink()
    with pytest.raises(FileNotFoundError, match="has no video_explanation.json"):
        VideoExplanation.load(folder)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        VideoExplanation.load(tmp_path / "missing")


def test_loading_an_image_explanation_as_a_video_says_which_load_to_use(tmp_path):
    image = RolloutExplainer.from_pretrained("demo")(np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(FileNotFoundError, match=r"holds an image explanation \(load it with Explanation.load\)"):
        VideoExplanation.load(image.save(tmp_path / "image"))


def test_an_overwrite_that_fails_midway_does_not_look_complete(explanation, tmp_path, monkeypatch):
    folder = explanation.save(tmp_path / "clip")

    def failing(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(VideoExplanation, "save_gif", failing)
    with pytest.raises(OSError, match="disk full"):
        explanation.save(folder, overwrite=True)
    with pytest.raises(FileNotFoundError, match="unfinished save"):
        VideoExplanation.load(folder)
