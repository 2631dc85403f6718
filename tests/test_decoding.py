"""One rule for decoding images, shared by the explainer, ``evaluate`` and ``explain_dataset``."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from hf_vit_rollout import InputError, RolloutExplainer, evaluate
from hf_vit_rollout.evaluation.data import load_inputs
from hf_vit_rollout.images import decode_image, load_image


@pytest.fixture(scope="module")
def explainer(checkpoint):
    return RolloutExplainer.from_pretrained(checkpoint("vit"))


def _rotated_jpeg(path):
    """A 40 × 20 JPEG stored landscape whose EXIF orientation (6) says: display it rotated, 20 × 40."""
    rng = np.random.default_rng(0)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(rng.integers(0, 256, (20, 40, 3), dtype=np.uint8)).save(path, quality=95, exif=exif)
    return path


def _png16(path):
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 65536, (24, 30), dtype=np.uint16)).save(path)
    return path


def _inputs(tmp_path):
    rng = np.random.default_rng(2)
    return {
        "exif": str(_rotated_jpeg(tmp_path / "rotated.jpg")),
        "png16": str(_png16(tmp_path / "deep.png")),
        "uint16": rng.integers(0, 65536, (24, 30, 3), dtype=np.uint16),
        "float": rng.random((24, 30, 3)),
    }


def test_evaluate_scores_the_pixels_the_explainer_shows(explainer, tmp_path):
    inputs = _inputs(tmp_path)
    data = load_inputs(list(inputs.values()), None, None, explainer)
    for (name, value), decoded in zip(inputs.items(), data.images):
        np.testing.assert_array_equal(np.asarray(decoded), np.asarray(load_image(value)), err_msg=name)
        np.testing.assert_array_equal(np.asarray(decoded), np.asarray(explainer(value).image), err_msg=name)
    assert data.images[0].size == (20, 40)  # displayed upright, as the explainer shows it


def test_a_mask_drawn_on_the_displayed_photo_is_accepted(explainer, tmp_path):
    path = _rotated_jpeg(tmp_path / "rotated.jpg")
    mask = np.zeros((40, 20), bool)  # (H, W) of the photo as displayed
    mask[5:20, 5:15] = True
    report = evaluate(explainer, [str(path)], [1], [mask], methods=["rollout"], metrics=["energy"], progress=False)
    assert report.counts()["energy"] == 1


def test_float_pixels_outside_zero_one_are_refused_by_every_door(explainer, tmp_path):
    image = np.full((24, 30, 3), 2.0)
    with pytest.raises(InputError, match=r"must lie in \[0, 1\]"):
        explainer(image)
    with pytest.raises(InputError, match=r"must lie in \[0, 1\]"):
        evaluate(explainer, [image], [1], methods=["rollout"], metrics=["complexity"], progress=False)
    with pytest.raises(InputError, match=r"must lie in \[0, 1\]"):
        decode_image(image.tolist(), "row 0")


def test_a_truncated_image_file_is_named(explainer, tmp_path):
    path = tmp_path / "cut.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(InputError, match=r"cut\.png.*truncated"):
        evaluate(explainer, [str(path)], [1], methods=["rollout"], metrics=["complexity"], progress=False)
