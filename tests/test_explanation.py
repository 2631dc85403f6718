"""Explanation as a value: repr, array protocol, to_dict, save / load."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from hf_vit_rollout import Explanation, RolloutExplainer


@pytest.fixture(scope="module")
def explainer(checkpoint):
    return RolloutExplainer.from_pretrained(checkpoint("deit"))


@pytest.fixture(scope="module")
def picture():
    return Image.fromarray(np.random.default_rng(3).integers(0, 256, (44, 52, 3), dtype=np.uint8))


def test_repr_is_one_short_line_without_the_arrays(explainer, picture):
    text = repr(explainer(picture, method="gae", target="dog"))
    assert len(text) < 250 and "\n" not in text and "array" not in text and "[" not in text.split("params")[0]
    assert text.startswith("Explanation(method='gae', target=1, label='dog', score=") and "mask=4x4" in text
    assert "heatmap=44x52" in text and "image=52x44" in text


def test_np_asarray_is_the_heat_map(explainer, picture):
    explanation = explainer(picture)
    array = np.asarray(explanation)
    assert array.shape == (44, 52) and array.dtype == np.float32 and np.array_equal(array, explanation.heatmap)
    assert np.asarray(explanation, dtype=np.float64).dtype == np.float64
    assert np.array(explanation, copy=True) is not explanation.heatmap
    with pytest.raises(ValueError, match="needs a copy"):
        np.array(explanation, dtype=np.float64, copy=False)
    assert np.stack([explanation, explanation]).shape == (2, 44, 52)


def test_to_dict_has_every_field(explainer, picture):
    explanation = explainer(picture, method="gae")
    data = explanation.to_dict()
    assert set(data) == {f for f in Explanation.__dataclass_fields__}
    assert data["mask"] is explanation.mask and data["image"] is explanation.image
    assert data["placement"] == {k: getattr(explanation.placement, k) for k in data["placement"]}


@pytest.mark.parametrize("settings", [dict(method="gae", target="dog"), dict(method="attention"), dict(method="rollout")])
def test_save_and_load_round_trip_equal(explainer, picture, tmp_path, settings):
    explanation = explainer(picture, **settings)
    folder = explanation.save(tmp_path / "saved")
    names = {p.name for p in folder.iterdir()}
    assert {"image.png", "heatmap.png", "overlay.png", "mask.npy", "heatmap.npy", "explanation.json"} <= names
    assert ("head_heatmaps.npy" in names) == (settings["method"] == "attention")
    again = Explanation.load(folder)
    assert again == explanation and repr(again) == repr(explanation)
    assert again.heatmap_at((104, 88)).shape == (88, 104)
    assert again.overlay().tobytes() == explanation.overlay().tobytes()


def test_a_jpeg_with_exif_round_trips_and_equality_compares_pixels(explainer, tmp_path):
    buffer = io.BytesIO()
    exif = Image.Exif()
    exif[0x010F] = "camera"
    Image.fromarray(np.full((40, 48, 3), 90, np.uint8)).save(buffer, format="JPEG", exif=exif)
    (tmp_path / "photo.jpg").write_bytes(buffer.getvalue())
    explanation = explainer(str(tmp_path / "photo.jpg"))
    assert explanation.image.info  # the decoded JPEG carries EXIF/JFIF info; the saved PNG does not
    assert Explanation.load(explanation.save(tmp_path / "saved")) == explanation


def test_save_refuses_to_mix_and_load_refuses_an_unfinished_save(explainer, picture, tmp_path):
    explanation = explainer(picture)
    folder = explanation.save(tmp_path / "saved")
    with pytest.raises(FileExistsError, match="not empty"):
        explanation.save(folder)
    explainer(picture, method="gae").save(folder, overwrite=True)
    assert Explanation.load(folder).method == "gae"
    (folder / "explanation.json").unlink()
    with pytest.raises(FileNotFoundError, match="unfinished save"):
        Explanation.load(folder)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        Explanation.load(tmp_path / "nothing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="is a file"):
        explanation.save(tmp_path / "file")
