"""Scores of a heat-map against ground truth, and faithfulness curves.

All functions take numpy arrays; ``heatmap`` is ``(H, W)`` float (non-negative), ``mask`` is
``(H, W)`` bool. Batch helpers loop over these.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch


def pointing_game(heatmap: np.ndarray, mask: np.ndarray) -> float:
    """1 if the heat-map's maximum lies inside ``mask``, else 0.

    Ties are resolved fairly: with several maximal pixels the score is the fraction of them inside the
    mask (the expected hit under a random tie-break), so a constant map scores the mask's area share,
    not a lucky 1.
    """
    heatmap = np.asarray(heatmap, dtype=np.float64)
    peak = heatmap == heatmap.max()
    return float(mask[peak].mean())


def energy_in_mask(heatmap: np.ndarray, mask: np.ndarray) -> float:
    """Share of the heat-map's total mass inside ``mask`` (0 for an all-zero map)."""
    heatmap = np.clip(np.asarray(heatmap, dtype=np.float64), 0, None)
    total = heatmap.sum()
    return float(heatmap[mask].sum() / total) if total > 0 else 0.0


def class_sensitivity(heatmap_for_a: np.ndarray, mask_a: np.ndarray, mask_b: np.ndarray) -> float:
    """1 if the map explaining class A puts more mass on A's object than on B's, 0.5 on a tie, else 0."""
    on_a, on_b = energy_in_mask(heatmap_for_a, mask_a), energy_in_mask(heatmap_for_a, mask_b)
    return 1.0 if on_a > on_b else 0.5 if on_a == on_b else 0.0


def perturbation_curve(
    pixel_values: torch.Tensor,
    patch_relevance: np.ndarray,
    patch_size: tuple[int, int],
    score_fn: Callable[[torch.Tensor], torch.Tensor],
    mode: str = "deletion",
    steps: int = 16,
    baseline: torch.Tensor | float = 0.0,
) -> np.ndarray:
    """Target score while patches are removed (deletion) or added (insertion), most relevant first.

    Args:
        pixel_values: ``(C, H, W)`` model input.
        patch_relevance: ``(gh, gw)`` relevance per patch (ties keep raster order).
        patch_size: ``(ph, pw)`` pixels per patch; ``gh·ph = H``, ``gw·pw = W``.
        score_fn: ``(K, C, H, W) -> (K,)`` target scores (e.g. probabilities).
        mode: ``"deletion"`` (start from the image, replace patches by ``baseline``) or
            ``"insertion"`` (start from ``baseline``, paste patches back).
        steps: number of equal steps from no patch to all patches changed.
        baseline: value or ``(C, H, W)`` tensor that stands for "no information".

    Returns:
        ``(steps + 1,)`` scores; the curve's area is :func:`curve_auc`.
    """
    if mode not in ("deletion", "insertion"):
        raise ValueError(f"mode must be 'deletion' or 'insertion', not {mode!r}")
    gh, gw = patch_relevance.shape
    ph, pw = patch_size
    order = np.argsort(-np.asarray(patch_relevance).ravel(), kind="stable")
    base = torch.as_tensor(baseline, dtype=pixel_values.dtype).expand_as(pixel_values)
    start, end = (pixel_values, base) if mode == "deletion" else (base, pixel_values)
    frames = []
    for step in range(steps + 1):
        count = int(round(step * gh * gw / steps))
        chosen = np.zeros(gh * gw, dtype=bool)
        chosen[order[:count]] = True
        patch_mask = torch.from_numpy(chosen.reshape(gh, gw))
        pixel_mask = patch_mask.repeat_interleave(ph, 0).repeat_interleave(pw, 1).to(pixel_values.device)
        frames.append(torch.where(pixel_mask, end, start))
    with torch.no_grad():
        return score_fn(torch.stack(frames)).detach().float().cpu().numpy()


def curve_auc(curve: np.ndarray) -> float:
    """Normalised area under a perturbation curve (trapezoid rule over ``[0, 1]``)."""
    curve = np.asarray(curve, dtype=np.float64)
    return float(((curve[1:] + curve[:-1]) / 2).mean())


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two maps (average ranks on ties); 0 if either is constant."""
    from scipy.stats import spearmanr

    a, b = np.ravel(a), np.ravel(b)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    return float(spearmanr(a, b).statistic)
