"""Every kind of image input, and a specific error for every kind of bad one."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from hf_vit_rollout import InputError
from hf_vit_rollout.images import MAX_PIXELS, load_image, load_images


def rgb(h=20, w=30, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("mode", ["1", "L", "P", "RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV", "I", "F", "I;16", "LA", "PA", "RGBX", "RGBa", "La"])
def test_every_pil_mode_becomes_rgb(mode):
    base = Image.fromarray(rgb())
    if mode in ("I", "F", "I;16"):
        # values within the documented rule: 32-bit integers in 0-255, floats in [0, 1], 16-bit any
        grey = np.asarray(base.convert("L"))
        img = Image.fromarray({"I": grey.astype(np.int32), "F": grey.astype(np.float32) / 255, "I;16": grey.astype(np.uint16) * 3}[mode])
        if mode == "I;16":
            img = img.convert("I;16") if img.mode != "I;16" else img
    elif mode == "PA":
        img = base.convert("RGBA").convert("PA") if hasattr(Image, "Palette") else base.convert("P")
    else:
        img = base.convert(mode)
    out = load_image(img)
    assert out.mode == "RGB" and out.size == (30, 20)


def test_transparent_pixels_are_composited_on_white():
    img = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert np.asarray(load_image(img)).min() == 255


def test_numpy_and_torch_inputs():
    arr = rgb()
    assert load_image(arr).size == (30, 20)
    assert load_image(arr[..., 0]).size == (30, 20)
    assert load_image(arr[..., :1]).size == (30, 20)
    assert load_image(np.concatenate([arr, arr[..., :1]], -1)).size == (30, 20)
    assert load_image(arr / 255.0).size == (30, 20)
    assert load_image((arr.astype(np.uint16) * 257)).size == (30, 20)
    tensor = torch.from_numpy(arr).permute(2, 0, 1)
    assert load_image(tensor).size == (30, 20)
    assert load_image(tensor.float() / 255).size == (30, 20)
    images, single = load_images(tensor.float().div(255).unsqueeze(0).repeat(3, 1, 1, 1))
    assert len(images) == 3 and not single


def test_files_of_several_formats(tmp_path):
    for ext in ("png", "jpg", "bmp", "tiff", "webp", "gif"):
        path = tmp_path / f"x.{ext}"
        Image.fromarray(rgb()).save(path)
        assert load_image(path).size == (30, 20)
        assert load_image(str(path)).mode == "RGB"
    path16 = tmp_path / "x16.tiff"
    Image.fromarray((rgb()[..., 0].astype(np.uint16) * 200)).save(path16)
    assert load_image(path16).mode == "RGB"
    pathf = tmp_path / "xf.tiff"
    Image.fromarray(rgb()[..., 0].astype(np.float32) / 255).save(pathf)
    assert load_image(pathf).mode == "RGB"


@pytest.mark.parametrize(
    "make,error,match",
    [
        (lambda p: p / "missing.png", FileNotFoundError, "not found"),
        (lambda p: p, InputError, "is a directory"),
        (lambda p: _write(p / "text.png", b"this is not an image"), InputError, "not an image file"),
        (lambda p: _write(p / "cut.png", _png_bytes()[:200]), InputError, "truncated or corrupt"),
        (lambda p: _write(p / "cut.jpg", _jpeg_bytes()[:300]), InputError, "truncated or corrupt"),
    ],
)
def test_bad_files(tmp_path, make, error, match):
    with pytest.raises(error, match=match):
        load_image(make(tmp_path))


def _write(path, data):
    path.write_bytes(data)
    return path


def _png_bytes():
    buffer = io.BytesIO()
    Image.fromarray(rgb(64, 64)).save(buffer, "PNG")
    return buffer.getvalue()


def _jpeg_bytes():
    buffer = io.BytesIO()
    Image.fromarray(rgb(64, 64)).save(buffer, "JPEG")
    return buffer.getvalue()


def test_decompression_bomb_is_refused(tmp_path):
    path = tmp_path / "huge.png"
    Image.new("L", (10_000, 10_000)).save(path)  # compresses to a few kB
    with pytest.raises(InputError, match="decompression-bomb guard"):
        load_image(path)
    assert 10_000 * 10_000 > MAX_PIXELS


@pytest.mark.parametrize(
    "value,match",
    [
        (np.zeros((0, 5, 3), np.uint8), "empty"),
        (np.zeros((5, 0), np.uint8), "empty"),
        (np.full((4, 4, 3), np.nan), "NaN or infinite"),
        (np.full((4, 4, 3), np.inf, np.float32), "NaN or infinite"),
        (np.full((4, 4, 3), 3.0), r"must lie in \[0, 1\]"),
        (np.zeros((3, 16, 16), np.uint8), "channels-first"),
        (np.zeros((6, 6, 5), np.uint8), "expected"),
        (np.zeros((2, 4, 4, 3), np.uint8), "expected"),
        (np.zeros((4, 4), bool), "dtype bool"),
        (np.array([["a"]]), "dtype"),
        (torch.zeros(5, 4, 4), "expected"),
        (torch.zeros(2, 3, 4), "expected"),
        (torch.full((3, 4, 4), float("nan")), "NaN"),
        (12, "is a builtins.int"),
        (None, "NoneType"),
        (Image.new("RGB", (0, 0)), "empty"),
    ],
)
def test_bad_values(value, match):
    with pytest.raises(InputError, match=match):
        load_image(value)


def test_lists():
    with pytest.raises(InputError, match="empty list"):
        load_images([])
    with pytest.raises(InputError, match=r"images\[1\]"):
        load_images([rgb(), "not-a-file-but-a-string-that-does-not-exist.png" and 3.5])
    images, single = load_images([rgb(), Image.fromarray(rgb()), torch.zeros(3, 8, 8)])
    assert len(images) == 3 and not single
    assert load_images(rgb())[1] is True


def test_one_by_one_image_is_explained(checkpoint):
    from hf_vit_rollout import RolloutExplainer

    explainer = RolloutExplainer.from_pretrained(checkpoint("vit"))
    exp = explainer(np.zeros((1, 1, 3), np.uint8))
    assert exp.heatmap.shape == (1, 1) and exp.mask.shape == (4, 4)


def test_url_when_offline_says_so(monkeypatch):
    import urllib.request

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(InputError, match="offline"):
        load_image("https://example.com/cat.jpg")
