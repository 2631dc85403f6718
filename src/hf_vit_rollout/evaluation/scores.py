"""The metrics ``evaluate`` runs: one small class per metric with a uniform call.

Each metric takes a :class:`Batch` (one method's maps for a chunk of items) and returns one value per
item (NaN where it does not apply) and, for perturbation metrics, the curve behind it. The maths
lives in :mod:`hf_vit_rollout.metrics`; these classes only choose inputs and batch the forward passes.
Pass an instance to ``evaluate(metrics=[...])`` to change a setting, e.g. ``Deletion(baseline="blur")``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .. import metrics as M
from .data import Item


@dataclass
class Batch:
    """One method's maps for a chunk of items.

    Attributes:
        pixel_values: ``(n, C, H, W)`` model inputs (CPU).
        maps: ``(n, gh, gw)`` float64 relevance, clipped at 0 and scaled to max 1 (all-zero stays zero).
        targets: class scored per item (its target, else the model's prediction).
        items: the items (masks in model-input space).
        index: global position of each item, for per-item seeds.
        score: ``score(stacks) -> list of (S,) arrays``: target probabilities of each ``(S, C, H, W)``
            stack, batched into forward passes; ``stacks`` yields ``(frames, target)``.
        baseline: ``baseline(kind, pixel_values (C, H, W)) -> (C, H, W)`` "no information" input.
        random_maps: ``() -> (n, gh, gw)`` maps of the same method on the randomised model, or ``None``.
    """

    pixel_values: torch.Tensor
    maps: np.ndarray
    targets: list[int]
    items: list[Item]
    index: list[int]
    score: Callable
    baseline: Callable
    random_maps: Callable | None = None

    @property
    def patch_size(self) -> tuple[int, int]:
        return self.pixel_values.shape[-2] // self.maps.shape[-2], self.pixel_values.shape[-1] // self.maps.shape[-1]

    def heatmaps(self) -> np.ndarray:
        """``(n, H, W)`` maps upsampled (bilinear) to the model input, clipped to ``[0, 1]``."""
        maps = torch.from_numpy(self.maps.astype(np.float32))[:, None]
        up = torch.nn.functional.interpolate(maps, size=tuple(self.pixel_values.shape[-2:]), mode="bilinear", align_corners=False)
        return up[:, 0].clamp(0, 1).numpy()


@dataclass
class Result:
    """Per-item values ``(n,)`` (NaN: not applicable) and, for curves, ``(n, S)`` scores."""

    values: np.ndarray
    curves: np.ndarray | None = None


class Metric:
    """Base class. ``higher_is_better`` is ``None`` for descriptive scores (sparseness, complexity)."""

    name: str = ""
    higher_is_better: bool | None = None
    needs_masks = False
    needs_several_objects = False
    needs_classifier = False

    def forward_passes(self) -> int:
        """Model forward passes per item and method (beyond the explanation itself)."""
        return 0

    def curve_x(self) -> np.ndarray | None:
        """The curve's abscissa (fraction of patches changed), for curve metrics."""
        return None

    def settings(self) -> dict:
        return {}

    def __call__(self, batch: Batch) -> Result:
        raise NotImplementedError


class _MaskMetric(Metric):
    needs_masks = True
    higher_is_better = True
    score_fn: Callable = staticmethod(M.pointing_game)

    def __call__(self, batch: Batch) -> Result:
        heat = batch.heatmaps()
        values = [np.nan if it.mask is None else self.score_fn(h, it.mask) for h, it in zip(heat, batch.items)]
        return Result(np.array(values, dtype=np.float64))


class PointingGame(_MaskMetric):
    """The map's maximum lies on the object (ties split fairly)."""

    name = "pointing_game"
    score_fn = staticmethod(M.pointing_game)


class Energy(_MaskMetric):
    """Share of the map's mass on the object."""

    name = "energy"
    score_fn = staticmethod(M.energy_in_mask)


class ClassSensitivity(Metric):
    """On images with several labelled objects: the map for one object's class puts more mass on that
    object than on another (mean over the other objects; 1, 0.5 on a tie, 0)."""

    name = "class_sensitivity"
    needs_masks = needs_several_objects = True
    higher_is_better = True

    def __call__(self, batch: Batch) -> Result:
        values = []
        for heat, item in zip(batch.heatmaps(), batch.items):
            if item.mask is None or not item.others:
                values.append(np.nan)
            else:
                values.append(np.mean([M.class_sensitivity(heat, item.mask, other) for other in item.others]))
        return Result(np.array(values, dtype=np.float64))


class Sparseness(Metric):
    """Gini index of the patch map (0 flat, near 1 concentrated)."""

    name = "sparseness"

    def __call__(self, batch: Batch) -> Result:
        return Result(np.array([M.sparseness(m) for m in batch.maps]))


class Complexity(Metric):
    """Normalised entropy of the patch map (1 flat, 0 one patch)."""

    name = "complexity"

    def __call__(self, batch: Batch) -> Result:
        return Result(np.array([M.complexity(m) for m in batch.maps]))


BASELINES = ("grey", "mean", "blur")


@dataclass
class Deletion(Metric):
    """AUC of the target probability as patches are replaced by ``baseline``, most relevant first
    (lower is better). ``baseline``: ``"grey"``, ``"mean"`` (the image's channel means) or ``"blur"``."""

    steps: int = 16
    baseline: str = "grey"
    name: str = field(default="deletion", init=False)
    higher_is_better: bool | None = field(default=False, init=False)
    needs_classifier = True
    mode = "deletion"

    def __post_init__(self):
        M.step_counts(1, self.steps)  # validates steps
        if self.baseline not in BASELINES:
            raise ValueError(f"baseline must be one of {BASELINES}, got {self.baseline!r}")

    def forward_passes(self) -> int:
        return self.steps + 1

    def curve_x(self) -> np.ndarray:
        return np.linspace(0.0, 1.0, self.steps + 1)

    def settings(self) -> dict:
        return {"steps": self.steps, "baseline": self.baseline}

    def __call__(self, batch: Batch) -> Result:
        def stacks():
            for pixels, relevance, target in zip(batch.pixel_values, batch.maps, batch.targets):
                base = batch.baseline(self.baseline, pixels)
                yield M.perturbation_frames(pixels, relevance, batch.patch_size, self.mode, self.steps, base), target

        curves = np.stack(batch.score(stacks()))
        return Result(np.array([M.curve_auc(c) for c in curves]), curves)


@dataclass
class Insertion(Deletion):
    """AUC of the target probability as patches are pasted onto ``baseline``, most relevant first
    (higher is better)."""

    name: str = field(default="insertion", init=False)
    higher_is_better: bool | None = field(default=True, init=False)
    mode = "insertion"


@dataclass
class ROAD(Metric):
    """ROAD (Rong et al. 2022): mean target probability with ``fractions`` of the patches removed and
    filled by noisy linear imputation. ``most_relevant_first`` (MoRF, lower is better) or least
    relevant first (LeRF, higher is better)."""

    most_relevant_first: bool = True
    fractions: Sequence[float] = M.ROAD_FRACTIONS
    noise_std: float = 0.01
    seed: int = 0
    needs_classifier = True

    def __post_init__(self):
        self.fractions = tuple(float(f) for f in self.fractions)
        if not self.fractions or not all(0 < f < 1 for f in self.fractions):
            raise ValueError(f"ROAD fractions must lie strictly between 0 and 1, got {list(self.fractions)}")
        self.name = "road_morf" if self.most_relevant_first else "road_lerf"
        self.higher_is_better = not self.most_relevant_first

    def forward_passes(self) -> int:
        return len(self.fractions)

    def curve_x(self) -> np.ndarray:
        return np.array(self.fractions)

    def settings(self) -> dict:
        return {"fractions": list(self.fractions), "noise_std": self.noise_std, "seed": self.seed}

    def __call__(self, batch: Batch) -> Result:
        def stacks():
            for pixels, relevance, target, index in zip(batch.pixel_values, batch.maps, batch.targets, batch.index):
                rng = np.random.default_rng([self.seed, index])  # the same noise whatever the batching
                frames = M.road_frames(pixels, relevance, batch.patch_size, self.most_relevant_first, self.fractions, self.noise_std, rng)
                yield frames, target

        curves = np.stack(batch.score(stacks()))
        return Result(curves.mean(axis=1), curves)


@dataclass
class Randomisation(Metric):
    """Model-randomisation sanity check (Adebayo et al. 2018): Spearman ρ between the map of the
    trained model and that of a model of the same class and config with random weights, drawn with
    ``seed`` (lower: the map depends more on what the model learned). One forward (and, for gradient
    methods, backward) pass on the copy. The default seed is not 0, the seed a model is most likely
    to have been initialised with itself."""

    seed: int = 2018
    name: str = field(default="randomisation", init=False)
    higher_is_better: bool | None = field(default=False, init=False)

    def settings(self) -> dict:
        return {"seed": self.seed}

    def forward_passes(self) -> int:
        return 1

    def __call__(self, batch: Batch) -> Result:
        if batch.random_maps is None:
            return Result(np.full(len(batch.items), np.nan))
        return Result(np.array([M.spearman(a, b) for a, b in zip(batch.maps, batch.random_maps())]))


METRICS: dict[str, Callable[[], Metric]] = {
    "deletion": Deletion,
    "insertion": Insertion,
    "road_morf": lambda: ROAD(most_relevant_first=True),
    "road_lerf": lambda: ROAD(most_relevant_first=False),
    "pointing_game": PointingGame,
    "energy": Energy,
    "class_sensitivity": ClassSensitivity,
    "randomisation": Randomisation,
    "sparseness": Sparseness,
    "complexity": Complexity,
}


def parse_metrics(metrics) -> list[Metric]:
    """Names or :class:`Metric` instances → instances (unique names)."""
    parsed = []
    for metric in metrics:
        if isinstance(metric, Metric):
            parsed.append(metric)
        elif isinstance(metric, str) and metric in METRICS:
            parsed.append(METRICS[metric]())
        else:
            raise ValueError(f"unknown metric {metric!r}; choose from {', '.join(METRICS)} (or pass a Metric instance)")
    names = [m.name for m in parsed]
    if len(set(names)) != len(names):
        raise ValueError(f"metric names must be unique, got {names}")
    return parsed
