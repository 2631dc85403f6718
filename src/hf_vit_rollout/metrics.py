"""Scores of an explanation map: against ground truth, by perturbation, and of the map alone.

The one implementation of each metric; :func:`hf_vit_rollout.evaluate` batches them over images and
methods. Maps are numpy arrays: ``heatmap`` is ``(H, W)`` float (non-negative), ``mask`` is
``(H, W)`` bool, ``patch_relevance`` is ``(grid_h, grid_w)``. Perturbations work on model inputs:
``pixel_values`` is a ``(C, H, W)`` tensor as the image processor makes it, changed patch by patch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

# --------------------------------------------------------------------------- against ground truth


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


# --------------------------------------------------------------------------- the map alone


def sparseness(relevance: np.ndarray) -> float:
    """Gini index of the non-negative map (Chalasani et al. 2020): 0 for a flat map, ``1 - 1/n`` for
    a map with all its mass on one of ``n`` cells. Higher means more concentrated; 0 for an all-zero map."""
    values = np.sort(np.clip(np.ravel(np.asarray(relevance, dtype=np.float64)), 0, None))
    n, total = values.size, values.sum()
    if total <= 0:
        return 0.0
    ranks = np.arange(1, n + 1)
    return float(((2 * ranks - n - 1) * values).sum() / (n * total))


def complexity(relevance: np.ndarray) -> float:
    """Entropy of the map as a distribution over its cells (Bhatt et al. 2020), divided by its maximum
    ``log n``: 1 for a flat (or all-zero) map, 0 for a single cell. Lower means simpler."""
    values = np.clip(np.ravel(np.asarray(relevance, dtype=np.float64)), 0, None)
    total = values.sum()
    if values.size < 2 or total <= 0:
        return 1.0 if values.size >= 2 else 0.0
    p = values[values > 0] / total
    return float(-(p * np.log(p)).sum() / np.log(values.size)) + 0.0  # no -0.0


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two maps (average ranks on ties); 0 if either is constant."""
    from scipy.stats import spearmanr

    a, b = np.ravel(a), np.ravel(b)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    return float(spearmanr(a, b).statistic)


# --------------------------------------------------------------------------- perturbation


def top_patches(patch_relevance: np.ndarray, counts: Sequence[int], most_relevant_first: bool = True) -> np.ndarray:
    """``(S, gh, gw)`` bool: for each count, the ``count`` most (or least) relevant patches.

    Ties keep raster order (a stable sort), so a constant map removes patches row by row.
    """
    relevance = np.asarray(patch_relevance, dtype=np.float64)
    flat = -relevance.ravel() if most_relevant_first else relevance.ravel()
    rank = np.empty(flat.size, dtype=np.int64)
    rank[np.argsort(flat, kind="stable")] = np.arange(flat.size)
    chosen = rank[None, :] < np.asarray(counts, dtype=np.int64)[:, None]
    return chosen.reshape(len(counts), *relevance.shape)


def patches_to_pixels(chosen: np.ndarray, patch_size: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """``(S, gh, gw)`` bool patch sets → ``(S, H, W)`` bool pixel masks.

    Pixels beyond ``gh·ph`` rows or ``gw·pw`` columns (inputs not divisible by the patch size, whose
    remainder the patch embedding ignores) are never selected.
    """
    ph, pw = patch_size
    pixels = torch.from_numpy(np.ascontiguousarray(chosen)).repeat_interleave(ph, 1).repeat_interleave(pw, 2)
    height, width = size
    pixels = pixels[:, :height, :width]
    return torch.nn.functional.pad(pixels, (0, width - pixels.shape[2], 0, height - pixels.shape[1]))


#: Most steps a deletion/insertion curve may take: each step is one forward pass per image (and one
#: ``(C, H, W)`` frame held per step); more steps than an image has patches only repeat frames.
MAX_STEPS = 1024


def step_counts(num_patches: int, steps: int) -> list[int]:
    """Patches changed after each of ``steps`` equal steps: ``[0, ..., num_patches]`` (``steps + 1`` values).

    Raises:
        ValueError: ``steps`` is not an integer in ``[1, MAX_STEPS]``.
    """
    if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= MAX_STEPS:
        raise ValueError(
            f"steps must be an integer from 1 to {MAX_STEPS} (each step is one forward pass per image, and steps "
            f"beyond the number of patches only repeat frames), got {steps!r}"
        )
    return [int(round(step * num_patches / steps)) for step in range(steps + 1)]


def perturbation_frames(
    pixel_values: torch.Tensor,
    patch_relevance: np.ndarray,
    patch_size: tuple[int, int],
    mode: str = "deletion",
    steps: int = 16,
    baseline: torch.Tensor | float = 0.0,
) -> torch.Tensor:
    """The inputs of a deletion or insertion curve, most relevant patches first.

    Args:
        pixel_values: ``(C, H, W)`` model input.
        patch_relevance: ``(gh, gw)`` relevance per patch (ties keep raster order).
        patch_size: ``(ph, pw)`` pixels per patch.
        mode: ``"deletion"`` (start from the image, replace patches by ``baseline``) or
            ``"insertion"`` (start from ``baseline``, paste the image's patches back).
        steps: number of equal steps from no patch to all patches changed.
        baseline: value or ``(C, H, W)`` tensor that stands for "no information".

    Returns:
        ``(steps + 1, C, H, W)`` inputs; frame ``k`` has ``round(k·P/steps)`` patches changed.
    """
    if mode not in ("deletion", "insertion"):
        raise ValueError(f"mode must be 'deletion' or 'insertion', not {mode!r}")
    gh, gw = np.shape(patch_relevance)
    chosen = top_patches(patch_relevance, step_counts(gh * gw, steps))
    changed = patches_to_pixels(chosen, patch_size, tuple(pixel_values.shape[-2:])).to(pixel_values.device)
    base = torch.as_tensor(baseline, dtype=pixel_values.dtype, device=pixel_values.device).expand_as(pixel_values)
    start, end = (pixel_values, base) if mode == "deletion" else (base, pixel_values)
    return torch.where(changed[:, None], end[None], start[None])


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

    ``score_fn`` maps ``(K, C, H, W)`` inputs to ``(K,)`` target scores (e.g. probabilities); the
    other arguments are those of :func:`perturbation_frames`. Returns ``(steps + 1,)`` scores; the
    curve's area is :func:`curve_auc`. (One image, one forward pass; ``evaluate`` batches many.)
    """
    frames = perturbation_frames(pixel_values, patch_relevance, patch_size, mode, steps, baseline)
    with torch.no_grad():
        return score_fn(frames).detach().float().cpu().numpy()


def curve_auc(curve: np.ndarray) -> float:
    """Normalised area under a perturbation curve (trapezoid rule over ``[0, 1]``)."""
    curve = np.asarray(curve, dtype=np.float64)
    return float(((curve[1:] + curve[:-1]) / 2).mean())


# --------------------------------------------------------------------------- ROAD

#: Neighbour offsets and weights of the noisy linear imputation (Rong et al. 2022): direct
#: neighbours weigh 1/6, diagonal ones 1/12 (they sum to 1 inside the image).
_NEIGHBOURS = tuple((dy, dx, 1 / 6 if dy == 0 or dx == 0 else 1 / 12) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx)


def linear_imputation(image: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """Fill ``removed`` pixels so each is the weighted mean of its 8 neighbours (a sparse linear system).

    Args:
        image: ``(C, H, W)`` float array.
        removed: ``(H, W)`` bool, the pixels to replace; at least one pixel must remain.

    Returns:
        ``(C, H, W)`` float64 copy; known pixels unchanged. Inside a region the result is harmonic, so
        a linear ramp is reconstructed exactly wherever the removed pixels keep off the border.
    """
    from scipy.sparse import coo_matrix, diags
    from scipy.sparse.linalg import splu

    channels, height, width = image.shape
    out = np.array(image, dtype=np.float64)
    ys, xs = np.nonzero(removed)
    count = ys.size
    if count == 0:
        return out
    if count == height * width:
        raise ValueError("cannot impute an image with every pixel removed")
    index = np.full((height, width), -1, dtype=np.int64)
    index[ys, xs] = np.arange(count)
    diagonal, rhs = np.zeros(count), np.zeros((count, channels))
    rows, cols, vals = [], [], []
    for dy, dx, weight in _NEIGHBOURS:
        ny, nx = ys + dy, xs + dx
        inside = np.nonzero((ny >= 0) & (ny < height) & (nx >= 0) & (nx < width))[0]
        ny, nx = ny[inside], nx[inside]
        diagonal[inside] += weight  # each pixel has one neighbour per offset: no repeated indices
        neighbour = index[ny, nx]
        unknown = neighbour >= 0
        rows.append(inside[unknown])
        cols.append(neighbour[unknown])
        vals.append(np.full(int(unknown.sum()), -weight))
        rhs[inside[~unknown]] += weight * out[:, ny[~unknown], nx[~unknown]].T
    system = coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(count, count))
    system = (system + diags(diagonal)).tocsc()
    # the system is symmetric positive definite: a symmetric ordering without pivoting is exact and ~2× faster
    factor = splu(system, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0, options={"SymmetricMode": True})
    out[:, ys, xs] = factor.solve(rhs).T
    return out


def noisy_linear_imputation(
    image: np.ndarray, removed: np.ndarray, noise_std: float = 0.01, rng: np.random.Generator | None = None
) -> np.ndarray:
    """ROAD's imputation (Rong et al. 2022): :func:`linear_imputation` plus Gaussian noise of
    ``noise_std`` on the imputed pixels only. Shapes as for :func:`linear_imputation`."""
    out = linear_imputation(image, removed)
    if noise_std > 0:
        rng = np.random.default_rng() if rng is None else rng
        ys, xs = np.nonzero(removed)
        out[:, ys, xs] += rng.normal(0.0, noise_std, (out.shape[0], ys.size))
    return out


#: Fractions of the patches ROAD removes (Rong et al. 2022 use 10% to 90%).
ROAD_FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def road_frames(
    pixel_values: torch.Tensor,
    patch_relevance: np.ndarray,
    patch_size: tuple[int, int],
    most_relevant_first: bool = True,
    fractions: Sequence[float] = ROAD_FRACTIONS,
    noise_std: float = 0.01,
    rng: np.random.Generator | None = None,
) -> torch.Tensor:
    """ROAD inputs: for each fraction, that share of the patches removed (most or least relevant
    first) and filled by :func:`noisy_linear_imputation`.

    Args:
        pixel_values: ``(C, H, W)`` model input (imputed in this space, noise in its units).
        patch_relevance: ``(gh, gw)``; patch_size: ``(ph, pw)``.
        fractions: shares in ``(0, 1)`` of the ``gh·gw`` patches to remove.

    Returns:
        ``(len(fractions), C, H, W)`` inputs.
    """
    if not all(0 < f < 1 for f in fractions):
        raise ValueError(f"ROAD fractions must lie strictly between 0 and 1, got {list(fractions)}")
    gh, gw = np.shape(patch_relevance)
    counts = [int(round(f * gh * gw)) for f in fractions]
    chosen = top_patches(patch_relevance, counts, most_relevant_first)
    removed = patches_to_pixels(chosen, patch_size, tuple(pixel_values.shape[-2:])).numpy()
    image = pixel_values.detach().float().cpu().numpy()
    frames = [noisy_linear_imputation(image, r, noise_std, rng) for r in removed]
    return torch.from_numpy(np.stack(frames)).to(dtype=pixel_values.dtype, device=pixel_values.device)
