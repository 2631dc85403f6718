"""Video files as inputs of video models: ``read_video`` (PyAV, the ``video`` extra; GIF by Pillow)
through the explainer, the pipeline and the command line."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
import transformers as T
from PIL import Image

from hf_vit_rollout import InputError, RolloutExplainer
from hf_vit_rollout.videos import read_video

av = pytest.importorskip("av")

#: eight frames, each one grey level (frame i: 30 · i), so which frames were taken is readable after
#: lossy encoding; the 4 taken of 8 evenly spaced are frames 0, 2, 5, 7 (numpy.linspace(0, 7, 4).round())
LEVELS = [30 * i for i in range(8)]
TAKEN = [0, 2, 5, 7]


def _write_mp4(path, levels=LEVELS, size=(48, 64)):
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.height, stream.width = size
        stream.pix_fmt = "yuv420p"
        for level in levels:
            frame = av.VideoFrame.from_ndarray(np.full((*size, 3), level, dtype=np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return str(path)


@pytest.fixture(scope="module")
def videomae(tmp_path_factory):
    folder = tmp_path_factory.mktemp("videomae")
    torch.manual_seed(0)
    config = T.VideoMAEConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32,
                              num_frames=4, num_labels=3, patch_size=8, tubelet_size=2)
    T.VideoMAEForVideoClassification(config).save_pretrained(folder)
    T.VideoMAEImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return str(folder)


@pytest.mark.parametrize("suffix", ["mp4", "mkv"])  # MKV's header does not count the frames: they are counted first
def test_read_video_takes_frames_evenly_spaced(tmp_path, suffix):
    frames = read_video(_write_mp4(tmp_path / f"grey.{suffix}"), 4)
    assert [f.size for f in frames] == [(64, 48)] * 4
    levels = [float(np.asarray(f).mean()) for f in frames]
    np.testing.assert_allclose(levels, [LEVELS[i] for i in TAKEN], atol=4)  # mpeg4 is lossy, levels are 30 apart


def test_a_gif_is_read_with_pillow(tmp_path):
    path = tmp_path / "grey.gif"
    frames = [Image.new("RGB", (20, 10), (level,) * 3) for level in LEVELS]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    taken = read_video(path, 4)
    assert [f.getpixel((0, 0))[0] for f in taken] == [LEVELS[i] for i in TAKEN]


def test_a_video_file_explains_like_its_frames(videomae, tmp_path):
    path = _write_mp4(tmp_path / "clip.mp4")
    explainer = RolloutExplainer.from_pretrained(videomae)
    by_path = explainer(path, method="gae", target=1)
    by_frames = explainer(read_video(path, 4), method="gae", target=1)
    np.testing.assert_array_equal(by_path.mask, by_frames.mask)
    assert by_path.heatmaps.shape == (4, 48, 64)
    batch = explainer([path, path], method="gae", target=1)  # a list of video files is a batch of clips
    assert len(batch) == 2 and np.array_equal(batch[1].mask, by_path.mask)


def test_bad_video_files_get_specific_errors(videomae, tmp_path, monkeypatch):
    explainer = RolloutExplainer.from_pretrained(videomae)
    short = _write_mp4(tmp_path / "short.mp4", levels=LEVELS[:3])
    with pytest.raises(InputError, match=r"short\.mp4'\) has 3 frames; this model takes 4: give a video of at least 4"):
        explainer(short, method="gae")
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    with pytest.raises(InputError, match="could not be read as a video"):
        explainer(str(broken), method="gae")
    with pytest.raises(FileNotFoundError, match="missing.mp4"):
        explainer(str(tmp_path / "missing.mp4"), method="gae")
    monkeypatch.setitem(sys.modules, "av", None)  # PyAV not installed
    with pytest.raises(InputError, match=r'needs PyAV: pip install "hf-vit-rollout\[video\]"'):
        read_video(short, 4)


def test_video_files_through_the_pipeline_and_the_cli(videomae, tmp_path):
    from hf_vit_rollout.cli import main
    from hf_vit_rollout.pipeline import pipeline

    path = _write_mp4(tmp_path / "clip.mp4")
    direct = RolloutExplainer.from_pretrained(videomae)(path, method="gae", target=1)
    result = pipeline(model=videomae, method="gae")(path, target=1)
    np.testing.assert_allclose(result["explanation"].mask, direct.mask, rtol=1e-5)
    assert main([path, "--model", videomae, "--method", "gae", "--target", "1", "--save-maps", "--out", str(tmp_path / "out")]) == 0
    (gif,) = (tmp_path / "out").glob("*.gif")
    with Image.open(gif) as animated:
        assert animated.n_frames == 4 and animated.size == (64, 48)
    (saved,) = (tmp_path / "out").glob("*.npy")
    np.testing.assert_allclose(np.load(saved), direct.heatmaps, rtol=1e-5, atol=1e-6)
