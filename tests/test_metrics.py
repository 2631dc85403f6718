"""Metric functions on hand-made cases with known answers, and the synthetic data generator."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hf_vit_rollout.demo.data import CLASSES, HELD_OUT_SEED, make_dataset, make_sample
from hf_vit_rollout.metrics import (
    class_sensitivity,
    curve_auc,
    energy_in_mask,
    perturbation_curve,
    pointing_game,
    spearman,
)


def square_mask(top, left, size, shape=(8, 8)):
    mask = np.zeros(shape, bool)
    mask[top : top + size, left : left + size] = True
    return mask


def test_pointing_game():
    heat = np.zeros((8, 8))
    heat[2, 3] = 1.0
    assert pointing_game(heat, square_mask(2, 2, 2)) == 1.0
    assert pointing_game(heat, square_mask(5, 5, 2)) == 0.0
    # a constant map scores the mask's area share, not a lucky hit
    assert pointing_game(np.ones((8, 8)), square_mask(0, 0, 4)) == pytest.approx(16 / 64)
    tied = np.zeros((8, 8))
    tied[0, 0] = tied[7, 7] = 1.0
    assert pointing_game(tied, square_mask(0, 0, 2)) == 0.5


def test_energy_in_mask():
    heat = np.zeros((8, 8))
    heat[0, 0], heat[7, 7] = 3.0, 1.0
    assert energy_in_mask(heat, square_mask(0, 0, 2)) == pytest.approx(0.75)
    assert energy_in_mask(np.ones((8, 8)), square_mask(0, 0, 4)) == pytest.approx(0.25)
    assert energy_in_mask(np.zeros((8, 8)), square_mask(0, 0, 4)) == 0.0


def test_class_sensitivity():
    a, b = square_mask(0, 0, 3), square_mask(5, 5, 3)
    heat = np.zeros((8, 8))
    heat[a] = 1.0
    assert class_sensitivity(heat, a, b) == 1.0
    assert class_sensitivity(heat, b, a) == 0.0
    assert class_sensitivity(np.ones((8, 8)), a, b) == 0.5  # a class-agnostic flat map


def test_deletion_and_insertion_curves():
    # score = mean of the top-left patch: deleting it first drops the score at the first step
    pixels = torch.ones(1, 4, 4)

    def score(batch):
        return batch[:, 0, :2, :2].mean(dim=(1, 2))

    relevance = np.array([[1.0, 0.0], [0.0, 0.0]])
    deletion = perturbation_curve(pixels, relevance, (2, 2), score, "deletion", steps=4)
    np.testing.assert_allclose(deletion, [1, 0, 0, 0, 0])
    insertion = perturbation_curve(pixels, relevance, (2, 2), score, "insertion", steps=4)
    np.testing.assert_allclose(insertion, [0, 1, 1, 1, 1])
    assert curve_auc(deletion) == pytest.approx(0.125)
    assert curve_auc(insertion) == pytest.approx(0.875)
    worst = perturbation_curve(pixels, 1 - relevance, (2, 2), score, "deletion", steps=4)
    assert curve_auc(worst) > curve_auc(deletion)
    with pytest.raises(ValueError, match="mode"):
        perturbation_curve(pixels, relevance, (2, 2), score, "both")


def test_spearman():
    a = np.arange(16.0)
    assert spearman(a, a * 2 + 1) == pytest.approx(1.0)
    assert spearman(a, -a) == pytest.approx(-1.0)
    assert spearman(a, np.ones(16)) == 0.0


def test_generator_is_deterministic_and_masks_match_labels():
    a, b = make_sample(42), make_sample(42)
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image)) and a.labels == b.labels
    assert not np.array_equal(np.asarray(make_sample(43).image), np.asarray(a.image))
    for sample in make_dataset(60, seed=HELD_OUT_SEED):
        assert 1 <= len(sample.labels) <= 2 and len(set(sample.labels)) == len(sample.labels)
        assert sample.masks.shape == (len(sample.labels), 64, 64) and sample.masks.dtype == bool
        assert all(m.sum() > 20 for m in sample.masks)  # every object visible
        if len(sample.labels) == 2:
            assert not (sample.masks[0] & sample.masks[1]).any()  # objects do not overlap
        assert sample.multi_hot.sum() == len(sample.labels) and sample.image.size == (64, 64)
    assert len(CLASSES) == 10
    with pytest.raises(ValueError, match="num_objects"):
        make_sample(0, num_objects=3)
