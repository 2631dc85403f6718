"""Images as users have them: phone photos (EXIF orientation), 16- and 32-bit files, pipes, placement."""

from __future__ import annotations

import os
import struct
import threading
import zlib

import numpy as np
import pytest
from PIL import Image

from hf_vit_rollout import InputError, RolloutExplainer
from hf_vit_rollout.images import load_image
from hf_vit_rollout.placement import HEATMAP_MAX_PIXELS, Placement, shrink_for_processor

# EXIF orientation → the PIL transpose that shows the stored pixels as displayed
DISPLAY = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def asymmetric(h=30, w=50):
    """An image that no flip or rotation maps onto itself."""
    rng = np.random.default_rng(3)
    arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    arr[:5, :8] = (255, 0, 0)
    return Image.fromarray(arr)


def with_orientation(path, stored: Image.Image, orientation: int, fmt="PNG"):
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored.save(path, format=fmt, exif=exif)
    return path


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_is_applied_to_files_and_pil_images(tmp_path, orientation):
    stored = asymmetric()
    displayed = stored if DISPLAY[orientation] is None else stored.transpose(DISPLAY[orientation])
    path = with_orientation(tmp_path / f"o{orientation}.png", stored, orientation)
    from_file = load_image(path)
    assert from_file.size == displayed.size
    assert np.array_equal(np.asarray(from_file), np.asarray(displayed))
    with Image.open(path) as opened:  # a PIL image handed over with its EXIF (as Gradio or a user may)
        assert np.array_equal(np.asarray(load_image(opened)), np.asarray(displayed))


def test_a_rotated_phone_photo_is_explained_as_displayed(checkpoint, tmp_path):
    explainer = RolloutExplainer.from_pretrained(checkpoint("deit"))
    stored = asymmetric(40, 64)
    displayed = stored.transpose(DISPLAY[6])
    path = with_orientation(tmp_path / "phone.jpg", stored, 6, fmt="JPEG")
    from_file = explainer(str(path), method="gae")
    as_displayed = explainer(load_image(path), method="gae")
    assert from_file.image.size == displayed.size == (40, 64)
    assert from_file.heatmap.shape == (64, 40) and from_file.overlay().size == (40, 64)
    np.testing.assert_array_equal(from_file.mask, as_displayed.mask)


# ----------------------------------------------------------------------------------- bit depth
def _png16_rgb(path, arr: np.ndarray):
    """A 16-bit RGB PNG written by hand (PIL cannot write one)."""
    h, w, _ = arr.shape
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return path


def test_16_bit_files_and_arrays_give_identical_pixels(tmp_path):
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 65536, (20, 30), dtype=np.uint16)
    Image.fromarray(grey).save(tmp_path / "g16.png")
    assert np.array_equal(np.asarray(load_image(tmp_path / "g16.png")), np.asarray(load_image(grey)))
    assert np.array_equal(np.asarray(load_image(grey))[..., 0], (grey >> 8).astype(np.uint8))
    colour = rng.integers(0, 65536, (20, 30, 3), dtype=np.uint16)
    path = _png16_rgb(tmp_path / "c16.png", colour)
    assert np.array_equal(np.asarray(load_image(path)), np.asarray(load_image(colour)))


def test_32_bit_files_follow_the_array_rule(tmp_path):
    floats = np.random.default_rng(1).random((20, 30), dtype=np.float32)
    Image.fromarray(floats).save(tmp_path / "f.tiff")
    assert np.array_equal(np.asarray(load_image(tmp_path / "f.tiff")), np.asarray(load_image(floats)))
    Image.fromarray(floats * 7).save(tmp_path / "f7.tiff")
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        load_image(tmp_path / "f7.tiff")
    ints = np.random.default_rng(2).integers(0, 256, (20, 30)).astype(np.int32)
    Image.fromarray(ints).save(tmp_path / "i.tiff")
    assert np.array_equal(np.asarray(load_image(tmp_path / "i.tiff")), np.asarray(load_image(ints)))
    Image.fromarray(ints * 300).save(tmp_path / "i300.tiff")
    with pytest.raises(InputError, match="0-255.*uint16"):
        load_image(tmp_path / "i300.tiff")


# ----------------------------------------------------------------------------------- special files
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_a_named_pipe_is_refused_at_once(checkpoint, tmp_path):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    explainer = RolloutExplainer.from_pretrained(checkpoint("vit"))
    outcome = {}

    def call():
        try:
            explainer([asymmetric(), str(fifo)])
        except InputError as exc:
            outcome["error"] = str(exc)

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(30)
    assert not thread.is_alive(), "explaining a named pipe hung"
    assert "named pipe, not a regular file" in outcome["error"]


# ----------------------------------------------------------------------------------- placement
def _vit_processor(**kwargs):
    from transformers import ViTImageProcessorPil

    return ViTImageProcessorPil(**kwargs)


def test_placement_without_resizing_covers_only_whole_patches(checkpoint):
    """35 × 21 pixels, 8-px patches: the model sees 32 × 16; the rest of the heat-map is zero."""
    explainer = RolloutExplainer.from_pretrained(checkpoint("vit"), interpolate_pos_encoding=True)
    explainer.image_processor = _vit_processor(do_resize=False)
    result = explainer(np.full((21, 35, 3), 128, np.uint8))
    assert result.mask.shape == (2, 4)
    assert result.heatmap.shape == (21, 35)
    assert np.all(result.heatmap[16:, :] == 0) and np.all(result.heatmap[:, 32:] == 0)
    ones = result.placement.heatmap(np.ones((2, 4), np.float32))
    assert np.all(ones[:16, :32] == 1)


@pytest.mark.parametrize(
    "size,crop,image,expected_zero_rows,expected_zero_cols",  # zero margins in resized pixels
    [
        ({"shortest_edge": 32}, {"height": 32, "width": 32}, (64, 128), 0, 16),  # crop cuts 16 resized px each side
        ({"height": 48, "width": 48}, {"height": 32, "width": 32}, (48, 48), 8, 8),  # crop cuts 8 px each side
    ],
)
def test_placement_of_a_centre_crop(image, size, crop, expected_zero_rows, expected_zero_cols):
    from transformers import CLIPImageProcessorPil

    processor = CLIPImageProcessorPil(size=size, crop_size=crop, do_center_crop=True)
    h, w = image
    placement = Placement.of(processor, (w, h), (8, 8), (4, 4))
    heat = placement.heatmap(np.ones((4, 4), np.float32))
    rows, cols = np.nonzero(heat.any(1))[0], np.nonzero(heat.any(0))[0]
    scale_h = h / placement.resized[0]
    assert rows.min() == round(expected_zero_rows * scale_h) and rows.max() == h - 1 - round(expected_zero_rows * scale_h)
    scale_w = w / placement.resized[1]
    assert cols.min() == round(expected_zero_cols * scale_w) and cols.max() == w - 1 - round(expected_zero_cols * scale_w)


def test_placement_follows_the_processors_own_output():
    """A bright patch in the model input lands on the original pixels that produced it."""
    from transformers import CLIPImageProcessorPil

    processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, do_normalize=False)
    image = np.zeros((40, 100, 3), np.uint8)
    image[:, 50:60] = 255  # a bright band right of centre
    pixels = processor(images=Image.fromarray(image), return_tensors="pt")["pixel_values"][0, 0].numpy()
    column_profile = pixels.mean(0)
    placement = Placement.of(processor, (100, 40), (1, 1), (32, 32))
    back = placement.heatmap(np.tile(column_profile / column_profile.max(), (32, 1)))
    profile = back.mean(0)
    centre = float((profile * np.arange(100)).sum() / profile.sum())
    assert abs(centre - 54.5) < 1.0  # the band covers pixels 50-59


def test_shrinking_first_gives_the_processors_exact_input():
    processor = _vit_processor(size={"height": 32, "width": 32})
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 500, 3), dtype=np.uint8))
    direct = processor(images=image, return_tensors="pt")["pixel_values"]
    shrunk = processor(images=shrink_for_processor(image, processor), return_tensors="pt")["pixel_values"]
    assert np.array_equal(direct.numpy(), shrunk.numpy())


def test_large_images_get_bounded_heatmaps_unless_full_resolution_is_asked(checkpoint):
    explainer = RolloutExplainer.from_pretrained(checkpoint("vit"))
    big = Image.new("RGB", (4000, 1500), (90, 120, 150))
    bounded = explainer(big)
    assert bounded.heatmap.size <= HEATMAP_MAX_PIXELS and bounded.image.size == (4000, 1500)
    assert abs(bounded.heatmap.shape[1] / bounded.heatmap.shape[0] - 4000 / 1500) < 0.01
    assert bounded.overlay().size == (bounded.heatmap.shape[1], bounded.heatmap.shape[0])
    full = explainer(big, full_resolution=True)
    assert full.heatmap.shape == (1500, 4000) and full.overlay().size == (4000, 1500)
    np.testing.assert_array_equal(full.heatmap, bounded.heatmap_at())


def test_processors_whose_size_rule_rounds_twice_are_not_pre_shrunk():
    from transformers import BitImageProcessorPil

    processor = BitImageProcessorPil(size={"max_height": 64, "max_width": 64}, do_center_crop=False)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 322, 3), dtype=np.uint8))
    assert shrink_for_processor(image, processor) is image
    shortest = _vit_processor(size={"shortest_edge": 40})
    direct = shortest(images=image, return_tensors="pt")["pixel_values"]
    shrunk = shortest(images=shrink_for_processor(image, shortest), return_tensors="pt")["pixel_values"]
    assert np.array_equal(direct.numpy(), shrunk.numpy())
