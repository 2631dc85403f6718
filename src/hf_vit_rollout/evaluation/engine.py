"""``evaluate``: run every method's maps through every metric, in batches, into a report."""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import torch

from ..families import refuse_unless_class_scores
from ..methods import HEAD_FUSIONS, METHODS
from .data import load_inputs
from .model import Baselines, FrameScorer, randomised_copy
from .report import EvaluationReport
from .scores import Batch, Randomisation, parse_metrics

logger = logging.getLogger(__name__)

#: The reference "method": a seeded uniform random map per item.
RANDOM = "random"


@dataclass(frozen=True)
class MethodConfig:
    """One row of the report: a method and its settings (``None``: the explainer's default)."""

    method: str
    head_fusion: str | None = None
    discard_ratio: float | None = None
    label: str | None = None

    @property
    def name(self) -> str:
        if self.label:
            return self.label
        options = [o for o in (self.head_fusion, None if self.discard_ratio is None else f"discard {self.discard_ratio:g}") if o]
        return f"{self.method} ({', '.join(options)})" if options else self.method

    @property
    def needs_target(self) -> bool:
        return self.method != RANDOM and METHODS[self.method].needs_gradient


def parse_methods(methods) -> list[MethodConfig]:
    """Names, ``(method, head_fusion, discard_ratio)`` tuples, dicts or :class:`MethodConfig` → configs."""
    if isinstance(methods, (str, MethodConfig, dict)):
        methods = [methods]
    configs = []
    for entry in methods:
        config = (
            entry if isinstance(entry, MethodConfig)
            else MethodConfig(**entry) if isinstance(entry, dict)
            else MethodConfig(*entry) if isinstance(entry, (tuple, list))
            else MethodConfig(entry)
        )
        if config.method != RANDOM and config.method not in METHODS:
            raise ValueError(f"unknown method {config.method!r}; choose from {', '.join([*METHODS, RANDOM])}")
        if config.head_fusion is not None and config.head_fusion not in HEAD_FUSIONS:
            raise ValueError(f"head_fusion must be one of {HEAD_FUSIONS}, got {config.head_fusion!r}")
        if config.discard_ratio is not None and not 0 <= float(config.discard_ratio) < 1:
            raise ValueError(f"discard_ratio must lie in [0, 1), got {config.discard_ratio!r}")
        configs.append(config)
    names = [c.name for c in configs]
    if not configs or len(set(names)) != len(names):
        raise ValueError(f"methods must be a non-empty list of distinct methods, got {names}")
    return configs


def _normalised(relevance: torch.Tensor) -> np.ndarray:
    """``(n, gh, gw)`` raw relevance → clipped at 0, each map scaled to max 1 (all-zero stays zero)."""
    maps = relevance.detach().float().cpu().clamp(min=0).double().numpy()
    peak = maps.reshape(len(maps), -1).max(axis=1)
    return maps / np.where(peak > 0, peak, 1.0)[:, None, None]


class _Run:
    """The state of one ``evaluate`` call: explainers, scorer, counters."""

    def __init__(self, explainer, metrics, batch_size: int):
        self.explainer = explainer
        self.metrics = metrics
        self.scorer = FrameScorer(explainer, batch_size)
        self.baselines = Baselines(explainer.image_processor)
        self.random_explainer = None
        sanity = next((m for m in metrics if isinstance(m, Randomisation)), None)
        if sanity is not None:
            from ..explainer import RolloutExplainer

            model = randomised_copy(explainer.model, sanity.seed)
            self.random_explainer = RolloutExplainer(model, explainer.image_processor, batch_size=batch_size)
        self.forwards: dict[str, int] = defaultdict(int)
        self.seconds: dict[str, float] = defaultdict(float)
        self.scored: dict[str, int] = defaultdict(int)  # (item, method) pairs each metric scored
        self.grid: tuple[int, int] | None = None

    def maps(self, config: MethodConfig, explainer, pixel_values, targets, index) -> np.ndarray:
        if config.method == RANDOM:
            if self.grid is None:
                self.grid = tuple(explainer.relevance_maps(pixel_values[:1], method="rollout").shape[1:])
            return np.stack([np.random.default_rng([7, i]).random(self.grid) for i in index])
        relevance = explainer.relevance_maps(
            pixel_values,
            targets if config.needs_target else None,
            method=config.method,
            head_fusion=config.head_fusion,
            discard_ratio=config.discard_ratio,
        )
        return _normalised(relevance)

    def random_maps(self, config, pixel_values, targets, index):
        if self.random_explainer is None or config.method == RANDOM:
            return None

        def compute():
            self.forwards["randomisation"] += len(index)
            return self.maps(config, self.random_explainer, pixel_values, targets, index)

        return compute

    def chunk(self, data, items, index, configs, results) -> None:
        """Score one chunk of items with every method and metric, appending to ``results``."""
        started = time.perf_counter()
        unique = sorted({it.image for it in items})
        try:
            pixels = self.explainer.image_processor(images=[data.images[i] for i in unique], return_tensors="pt")["pixel_values"]
        except Exception as exc:  # processors raise many types for odd images
            names = ", ".join(data.names[i] for i in unique)
            raise ValueError(f"the image processor could not prepare the images ({names}): {exc}") from exc
        pixel_values = pixels[[unique.index(it.image) for it in items]]
        targets = [it.target for it in items]
        if any(t is None for t in targets) and self.explainer.num_labels:
            predicted = self.scorer.logits(pixel_values).argmax(-1).tolist()
            targets = [p if t is None else t for t, p in zip(targets, predicted)]
        self.seconds["explain"] += time.perf_counter() - started
        for config in configs:
            started = time.perf_counter()
            maps = self.maps(config, self.explainer, pixel_values, targets, index)
            self.seconds["explain"] += time.perf_counter() - started
            batch = Batch(pixel_values, maps, targets, items, index, self.scorer, self.baselines,
                          self.random_maps(config, pixel_values, targets, index))
            results[config.name]["_targets"].append(np.array([-1 if t is None else t for t in targets]))
            for metric in self.metrics:
                started, before = time.perf_counter(), self.scorer.count
                result = metric(batch)
                results[config.name][metric.name].append(result)
                self.forwards[metric.name] += self.scorer.count - before
                self.scored[metric.name] += int((~np.isnan(result.values)).sum())
                self.seconds[metric.name] += time.perf_counter() - started


def default_metrics(has_masks: bool, has_several_objects: bool) -> list[str]:
    """The metrics ``evaluate`` runs when none are named: those the inputs allow, without ROAD and the
    randomisation check (opt in: they cost more)."""
    names = ["deletion", "insertion"]
    if has_masks:
        names += ["pointing_game", "energy"]
    if has_several_objects:
        names.append("class_sensitivity")
    return names + ["sparseness", "complexity"]


def _check_requirements(metrics, data, explainer) -> None:
    for metric in metrics:
        if metric.needs_masks and not data.has_masks:
            if data.masks_given:
                raise ValueError(
                    f"metric {metric.name!r} needs ground-truth masks, but every mask passed is empty or lies outside "
                    "the model's input (cropped away by the image processor); mark the objects' pixels (True, 1 or > 127)"
                )
            raise ValueError(f"metric {metric.name!r} needs ground-truth masks: pass masks=")
        if metric.needs_several_objects and not data.has_several_objects:
            raise ValueError(
                f"metric {metric.name!r} needs images with several labelled objects: give such an image a list "
                "of targets and one mask per target"
            )
        if metric.needs_classifier and not explainer.num_labels:
            raise ValueError(f"metric {metric.name!r} scores class probabilities, but the model has no classifier head")


def evaluate(
    explainer,
    images,
    targets=None,
    masks=None,
    methods=("rollout", "gae"),
    metrics=None,
    batch_size: int = 64,
    progress: bool = True,
) -> EvaluationReport:
    """Score explanation methods on your model and images.

    Args:
        explainer: a :class:`~hf_vit_rollout.RolloutExplainer` (its model is never changed).
        images: a list of images (PIL, paths, ``(H, W[, C])`` arrays), a folder of image files, or a
            ``datasets.Dataset`` (its ``"image"`` column, or its first ``Image()`` column).
        targets: ``None`` (explain and score each image's predicted class), one class for all, or one
            entry per image: a class index or label name, or a list of them for an image with several
            labelled objects (one item per object). With a ``Dataset``: a column name.
        masks: ground-truth object masks, one entry per image: an ``(H, W)`` mask (bool array, PIL
            image, file), or a list/``(K, H, W)`` array with one mask per target; a folder when
            ``images`` is a folder (paired by file stem: ``cat.jpg`` ↔ ``cat.png``; pixels > 127 are
            the object); a column name with a ``Dataset``. Masks go through the image processor like
            the images (resize, centre crop), so parts cropped away are not scored.
        methods: method names (``"rollout"``, ``"grad_rollout"``, ``"gae"``, ``"flow"``, or
            ``"random"``: a seeded random map as reference), ``(method, head_fusion, discard_ratio)``
            tuples, or :class:`MethodConfig`.
        metrics: names (``"deletion"``, ``"insertion"``, ``"road_morf"``, ``"road_lerf"``,
            ``"pointing_game"``, ``"energy"``, ``"class_sensitivity"``, ``"randomisation"``,
            ``"sparseness"``, ``"complexity"``) or metric instances (``Deletion(baseline="blur")``).
            ``None``: deletion, insertion, sparseness, complexity, and the mask metrics that the inputs allow.
        batch_size: items explained together, and perturbed inputs per forward pass.
        progress: show a progress bar.

    Returns:
        An :class:`EvaluationReport` (``str(report)`` is a table; ``to_dict``, ``to_json``,
        ``plot``, ``save``).

    Raises:
        ValueError: bad inputs or a metric the inputs cannot support, before any model work.
    """
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    refuse_unless_class_scores(explainer, "evaluate")
    configs = parse_methods(methods)
    data = load_inputs(images, targets, masks, explainer)
    metric_list = parse_metrics(default_metrics(data.has_masks, data.has_several_objects) if metrics is None else metrics)
    _check_requirements(metric_list, data, explainer)
    run = _Run(explainer, metric_list, batch_size)
    results: dict = defaultdict(lambda: defaultdict(list))
    starts = range(0, len(data.items), batch_size)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(data.items) * len(configs), desc="evaluating", unit="map")
    for start in starts:
        index = list(range(start, min(start + batch_size, len(data.items))))
        run.chunk(data, data.items[start : start + batch_size], index, configs, results)
        if bar is not None:
            bar.update(len(index) * len(configs))
    if bar is not None:
        bar.close()
    return EvaluationReport.from_results(data, configs, metric_list, results, run)
