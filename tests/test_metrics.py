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


# --------------------------------------------------------------------------- maps alone, ROAD, patch helpers
from hf_vit_rollout.metrics import (  # noqa: E402
    ROAD_FRACTIONS,
    complexity,
    linear_imputation,
    noisy_linear_imputation,
    patches_to_pixels,
    perturbation_frames,
    road_frames,
    sparseness,
    top_patches,
)


def test_sparseness_and_complexity_known_maps():
    one_hot, flat = np.eye(1, 16).reshape(4, 4), np.ones((4, 4))
    assert sparseness(one_hot) == pytest.approx(15 / 16) and sparseness(flat) == pytest.approx(0.0)
    assert complexity(one_hot) == 0.0 and complexity(flat) == pytest.approx(1.0)
    half = np.zeros((4, 4))
    half[:2] = 1.0  # mass on 8 of 16 cells: entropy log 8 of log 16
    assert complexity(half) == pytest.approx(0.75) and 0 < sparseness(half) < sparseness(one_hot)
    assert sparseness(np.zeros((4, 4))) == 0.0 and complexity(np.zeros((4, 4))) == 1.0


def test_top_patches_and_pixels():
    relevance = np.array([[0.1, 0.9], [0.5, 0.5]])
    most = top_patches(relevance, [0, 1, 2, 4])
    assert most[1].tolist() == [[False, True], [False, False]]
    assert most[2].tolist() == [[False, True], [True, False]]  # a tie keeps raster order
    assert most[3].all() and not most[0].any()
    least = top_patches(relevance, [1], most_relevant_first=False)
    assert least[0].tolist() == [[True, False], [False, False]]
    pixels = patches_to_pixels(most[1:2], (3, 3), (7, 8))  # 2×2 grid of 3 px patches in a 7×8 input
    assert pixels.shape == (1, 7, 8) and pixels[0, :3, 3:6].all() and pixels.sum() == 9  # remainder never chosen


def ramp(height=16, width=16):
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    return np.stack([2 * yy + 3 * xx + 1, -yy + 0.5 * xx])


def test_linear_imputation_reconstructs_a_ramp_exactly():
    image = ramp()
    removed = np.zeros((16, 16), bool)
    removed[3:9, 4:12] = True  # two interior holes (off the border, where the neighbourhood is symmetric)
    removed[10:14, 2:5] = True
    np.testing.assert_allclose(linear_imputation(image, removed), image, atol=1e-9)
    broken = image.copy()
    broken[:, removed] = 1000.0  # the removed values themselves are never used
    np.testing.assert_allclose(linear_imputation(broken, removed), image, atol=1e-9)
    with pytest.raises(ValueError, match="every pixel"):
        linear_imputation(image, np.ones((16, 16), bool))
    np.testing.assert_array_equal(linear_imputation(image, np.zeros((16, 16), bool)), image)


def test_imputation_is_a_weighted_mean_of_neighbours_and_noise_only_on_removed_pixels():
    image = np.zeros((1, 5, 5))
    image[0, 1:4, 1:4] = np.arange(9.0).reshape(3, 3)
    removed = np.zeros((5, 5), bool)
    removed[2, 2] = True  # one pixel: 1/6 of each direct neighbour, 1/12 of each diagonal one
    direct, diagonal = image[0, [1, 3, 2, 2], [2, 2, 1, 3]].sum(), image[0, [1, 1, 3, 3], [1, 3, 1, 3]].sum()
    assert linear_imputation(image, removed)[0, 2, 2] == pytest.approx(direct / 6 + diagonal / 12)
    big = np.zeros((3, 40, 40))
    hole = np.zeros((40, 40), bool)
    hole[5:35, 5:35] = True
    noisy = noisy_linear_imputation(big, hole, noise_std=0.5, rng=np.random.default_rng(0))
    assert np.all(noisy[:, ~hole] == 0.0)
    assert noisy[:, hole].std() == pytest.approx(0.5, rel=0.05)


def object_scene():
    """A 32×32 image: a bright 2×2-patch object on black; the "model" scores the object's brightness."""
    pixels = torch.zeros(1, 32, 32)
    pixels[0, 8:24, 8:24] = 1.0
    perfect = np.zeros((4, 4))
    perfect[1:3, 1:3] = 1.0
    perfect += np.linspace(0, 0.01, 16).reshape(4, 4)  # no ties

    def score(batch):
        return batch[:, 0, 8:24, 8:24].mean(dim=(1, 2)).clamp(0, 1)

    return pixels, perfect, score


def test_deletion_insertion_perfect_random_inverted():
    pixels, perfect, score = object_scene()
    random_map = np.random.default_rng(3).random((4, 4))
    auc = {
        (mode, name): curve_auc(perturbation_curve(pixels, relevance, (8, 8), score, mode, steps=16))
        for mode in ("deletion", "insertion")
        for name, relevance in (("perfect", perfect), ("random", random_map), ("inverted", -perfect))
    }
    assert auc["deletion", "perfect"] < auc["deletion", "random"] < auc["deletion", "inverted"]
    assert auc["insertion", "perfect"] > auc["insertion", "random"] > auc["insertion", "inverted"]
    frames = perturbation_frames(pixels, perfect, (8, 8), "insertion", steps=4, baseline=0.5)
    assert frames.shape == (5, 1, 32, 32) and torch.all(frames[0] == 0.5) and torch.equal(frames[-1], pixels)


def test_road_perfect_random_inverted():
    pixels, perfect, score = object_scene()
    random_map = np.random.default_rng(3).random((4, 4))

    def road(relevance, morf):
        frames = road_frames(pixels, relevance, (8, 8), morf, noise_std=0.0)
        assert frames.shape == (len(ROAD_FRACTIONS), 1, 32, 32)
        return float(score(frames).mean())

    morf = {name: road(m, True) for name, m in (("perfect", perfect), ("random", random_map), ("inverted", -perfect))}
    lerf = {name: road(m, False) for name, m in (("perfect", perfect), ("random", random_map), ("inverted", -perfect))}
    assert morf["perfect"] < morf["random"] < morf["inverted"]
    assert lerf["perfect"] > lerf["random"] > lerf["inverted"]
    assert morf["perfect"] < 0.2 and morf["inverted"] > 0.6  # the object, imputed from black, is gone
    # the noise is seeded: the same generator state gives the same frames
    a = road_frames(pixels, perfect, (8, 8), rng=np.random.default_rng(1))
    b = road_frames(pixels, perfect, (8, 8), rng=np.random.default_rng(1))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="strictly between"):
        road_frames(pixels, perfect, (8, 8), fractions=(0.0, 0.5))
