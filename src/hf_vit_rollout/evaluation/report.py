"""The result of ``evaluate``: per-item scores, curves and costs, as a table, a dict, JSON or plots."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


def _mean(values: np.ndarray) -> float:
    kept = values[~np.isnan(values)]
    return float(kept.mean()) if kept.size else math.nan


def _json_number(value: float):
    return None if value is None or not math.isfinite(value) else round(float(value), 6)


@dataclass
class EvaluationReport:
    """Scores of each method under each metric.

    Attributes:
        methods: row names, in the order given.
        metrics: metric names, in the order given.
        values: ``values[method][metric]`` → ``(num_items,)`` per-item scores (NaN: not applicable).
        curves: ``curves[method][metric]`` → ``(num_items, S)`` for curve metrics (deletion,
            insertion, ROAD), with abscissa ``curve_x[metric]`` (fraction of patches changed).
        higher_is_better: per metric; ``None`` for descriptive scores.
        items: per item ``{"image": name, "target": class scored}`` (target of the first method).
        forward_passes: model forward passes per scored (item, method) pair, as counted during the run.
        seconds: wall time per metric (all methods), and ``"explain"`` for the maps themselves.
        settings: each metric's settings.
    """

    methods: list[str]
    metrics: list[str]
    values: dict[str, dict[str, np.ndarray]]
    curves: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    curve_x: dict[str, np.ndarray] = field(default_factory=dict)
    higher_is_better: dict[str, bool | None] = field(default_factory=dict)
    items: list[dict] = field(default_factory=list)
    forward_passes: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    settings: dict[str, dict] = field(default_factory=dict)

    @classmethod
    def from_results(cls, data, configs, metrics, results, run) -> EvaluationReport:
        """Assemble the report from the per-chunk :class:`~.scores.Result` lists of ``evaluate``."""
        methods = [c.name for c in configs]
        values, curves = {}, {}
        for name in methods:
            chunks = results[name]
            values[name] = {m.name: np.concatenate([r.values for r in chunks[m.name]]) for m in metrics}
            curves[name] = {
                m.name: np.concatenate([r.curves for r in chunks[m.name]]) for m in metrics if m.curve_x() is not None
            }
        first = np.concatenate(results[methods[0]]["_targets"])
        items = [{"image": data.names[it.image], "target": int(t)} for it, t in zip(data.items, first)]
        return cls(
            methods=methods,
            metrics=[m.name for m in metrics],
            values=values,
            curves=curves,
            curve_x={m.name: m.curve_x() for m in metrics if m.curve_x() is not None},
            higher_is_better={m.name: m.higher_is_better for m in metrics},
            items=items,
            forward_passes={m.name: run.forwards.get(m.name, 0) / max(run.scored.get(m.name, 0), 1) for m in metrics},
            seconds=dict(run.seconds),
            settings={m.name: m.settings() for m in metrics},
        )

    # ------------------------------------------------------------------ summaries
    def summary(self) -> dict[str, dict[str, float]]:
        """``{method: {metric: mean over the items where it applies}}``."""
        return {m: {k: _mean(v) for k, v in self.values[m].items()} for m in self.methods}

    def counts(self) -> dict[str, int]:
        """Items each metric applied to (the most over the methods: ``randomisation`` skips ``random``)."""
        return {k: max(int((~np.isnan(self.values[m][k])).sum()) for m in self.methods) for k in self.metrics}

    def _heading(self, metric: str) -> str:
        arrow = {True: " ↑", False: " ↓"}.get(self.higher_is_better.get(metric), "")
        return metric + arrow

    def table(self) -> str:
        """A Markdown table: one row per method, one column per metric (means), then the costs."""
        summary = self.summary()
        lines = ["| method | " + " | ".join(self._heading(m) for m in self.metrics) + " |"]
        lines.append("|---" * (len(self.metrics) + 1) + "|")
        for method in self.methods:
            cells = ["" if math.isnan(v) else f"{v:.3f}" for v in (summary[method][m] for m in self.metrics)]
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        counts = self.counts()
        lines.append("")
        lines.append(f"{len(self.items)} items; items scored per metric: " + ", ".join(f"{m} {counts[m]}" for m in self.metrics))
        lines.append(
            "forward passes per item and method: "
            + ", ".join(f"{m} {self.forward_passes[m]:g}" for m in self.metrics)
            + " (plus the explanation: 1 forward, and a backward for gradient methods)"
        )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    # ------------------------------------------------------------------ export
    def to_dict(self, per_item: bool = True) -> dict:
        """JSON-ready: summary, settings, costs, mean curves and (``per_item``) every item's scores."""
        out = {
            "methods": self.methods,
            "metrics": self.metrics,
            "higher_is_better": self.higher_is_better,
            "settings": self.settings,
            "num_items": len(self.items),
            "items_per_metric": self.counts(),
            "forward_passes_per_item": self.forward_passes,
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
            "summary": {m: {k: _json_number(v) for k, v in s.items()} for m, s in self.summary().items()},
            "mean_curves": {
                m: {
                    k: {"x": [round(float(x), 6) for x in self.curve_x[k]], "y": [_json_number(y) for y in c.mean(axis=0)]}
                    for k, c in self.curves[m].items()
                }
                for m in self.methods
            },
        }
        if per_item:
            out["items"] = self.items
            out["per_item"] = {m: {k: [_json_number(x) for x in v] for k, v in self.values[m].items()} for m in self.methods}
        return out

    def to_json(self, path: str | Path | None = None, per_item: bool = True) -> str:
        """The :meth:`to_dict` as JSON text; also written to ``path`` if given."""
        text = json.dumps(self.to_dict(per_item), indent=2, ensure_ascii=False)
        if path is not None:
            Path(path).write_text(text + "\n", encoding="utf-8")
        return text

    def plot(self):
        """A matplotlib ``Figure``: the mean curve of each curve metric per method, and bars of every metric's mean."""
        import matplotlib.pyplot as plt

        curve_metrics = [m for m in self.metrics if m in self.curve_x]
        fig, axes = plt.subplots(1, len(curve_metrics) + 1, figsize=(4.2 * (len(curve_metrics) + 1), 3.4), squeeze=False)
        for ax, metric in zip(axes[0], curve_metrics):
            for method in self.methods:
                ax.plot(self.curve_x[metric], self.curves[method][metric].mean(axis=0), marker=".", label=method)
            ax.set(title=self._heading(metric), xlabel="fraction of patches changed", ylabel="target probability", ylim=(0, 1))
        bars = axes[0][-1]
        summary = self.summary()
        width = 0.8 / len(self.methods)
        for k, method in enumerate(self.methods):
            heights = [np.nan_to_num(summary[method][m]) for m in self.metrics]
            bars.bar(np.arange(len(self.metrics)) + k * width, heights, width=width, label=method)
        bars.set_xticks(np.arange(len(self.metrics)) + 0.4 - width / 2, [self._heading(m) for m in self.metrics], rotation=45, ha="right")
        bars.set(title="means", ylim=(min(0, bars.get_ylim()[0]), 1))
        bars.legend(fontsize=7)
        fig.tight_layout()
        return fig

    def save(self, folder: str | Path) -> list[Path]:
        """Write ``report.md`` (the table), ``report.json`` and ``report.png`` (the plots) into ``folder``."""
        import matplotlib.pyplot as plt

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        table, data, figure = folder / "report.md", folder / "report.json", folder / "report.png"
        table.write_text(self.table() + "\n", encoding="utf-8")
        self.to_json(data)
        fig = self.plot()
        fig.savefig(figure, dpi=110)
        plt.close(fig)
        return [table, data, figure]
