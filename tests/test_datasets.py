"""explain_dataset over a datasets.Dataset."""

from __future__ import annotations

import numpy as np
import pytest

datasets = pytest.importorskip("datasets")

from hf_vit_rollout import RolloutExplainer  # noqa: E402
from hf_vit_rollout.datasets import explain_dataset  # noqa: E402


@pytest.fixture(scope="module")
def small_dataset():
    from PIL import Image

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (36, 40, 3), dtype=np.uint8)) for _ in range(6)]
    features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64")})
    return datasets.Dataset.from_dict({"image": images, "label": [0, 1, 2, 3, 1, 2]}, features=features)


def test_masks_column_matches_the_explainer(checkpoint, small_dataset):
    explainer = RolloutExplainer.from_pretrained(checkpoint("vit"))
    out = explain_dataset(small_dataset, explainer, target_column="label", method="gae", batch_size=4, load_from_cache_file=False)
    assert "gae_mask" in out.column_names and out["gae_mask_target"] == [0, 1, 2, 3, 1, 2]
    direct = explainer([row["image"] for row in small_dataset], target=small_dataset["label"], method="gae")
    for row, expected in zip(out, direct):
        np.testing.assert_allclose(np.array(row["gae_mask"], dtype=np.float32), expected.mask, rtol=1e-4, atol=1e-5)


def test_multiprocess_map(checkpoint, small_dataset):
    explainer = RolloutExplainer.from_pretrained(checkpoint("vit"))
    serial = explain_dataset(small_dataset, explainer, batch_size=2, load_from_cache_file=False)
    parallel = explain_dataset(small_dataset, explainer, batch_size=2, num_proc=2, load_from_cache_file=False)
    for a, b in zip(serial["rollout_mask"], parallel["rollout_mask"]):
        np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-4, atol=1e-5)


def test_bad_columns_and_settings_fail_before_work(checkpoint, small_dataset):
    explainer = RolloutExplainer.from_pretrained(checkpoint("vit"))
    with pytest.raises(ValueError, match="no column 'picture'"):
        explain_dataset(small_dataset, explainer, image_column="picture")
    with pytest.raises(ValueError, match="class-agnostic"):
        explain_dataset(small_dataset, explainer, target_column="label", method="rollout")
    with pytest.raises(ValueError, match="discard_ratio"):
        explain_dataset(small_dataset, explainer, discard_ratio=1.5)
