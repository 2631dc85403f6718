"""Class targets: a label name or index checked against a model's labels."""

from __future__ import annotations

import difflib

import numpy as np

from .errors import TargetError


def label_index(id2label: dict[int, str], num_labels: int, target: int | str) -> int:
    """A class index or label name → class index.

    Label names match case-insensitively, also against each comma-separated synonym of an
    ImageNet-style label (``"tabby"`` finds ``"tabby, tabby cat"``).

    Raises:
        TargetError: an out-of-range index, or an unknown name (the closest names suggested).
    """
    if isinstance(target, str):
        names: dict[str, int] = {}
        for index, label in id2label.items():
            names.setdefault(label.lower(), index)
            for synonym in label.split(","):
                names.setdefault(synonym.strip().lower(), index)
        key = target.strip().lower()
        if key in names:
            return names[key]
        close = difflib.get_close_matches(key, list(names), n=3, cutoff=0.5)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise TargetError(f"unknown label {target!r}{hint} (the model has {num_labels} classes: see .id2label)")
    if isinstance(target, (bool, np.bool_)) or not isinstance(target, (int, np.integer)):
        raise TargetError(f"target must be a class index or label name, got {target!r}")
    if not 0 <= int(target) < num_labels:
        raise TargetError(f"target index {int(target)} is out of range: this model has {num_labels} classes (0 to {num_labels - 1})")
    return int(target)
