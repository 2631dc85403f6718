"""What a forward pass of the stages gives and checks, shared by the stages and by families whose
pass has rules of its own (:meth:`~hf_vit_rollout.families.base.Family.forward`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .errors import NonFiniteError
from .images import PreparedImage


def batch_inputs(batch: list[PreparedImage]) -> dict | None:
    """The images' extra model inputs stacked into a batch (``None`` when they have none)."""
    if not batch or batch[0].inputs is None:
        return None
    return {name: torch.stack([p.inputs[name] for p in batch]) for name in batch[0].inputs}


@dataclass
class ImagePass:
    """One image after ``forward``: ``(k, N)`` token relevance for each of its ``k`` explained targets;
    ``heads``: ``(H, N)`` per-head relevance (method ``"attention"`` with ``head=None``), else ``None``."""

    relevance: torch.Tensor
    explained: list
    probabilities: np.ndarray | None
    heads: torch.Tensor | None = None


def check_finite(values: torch.Tensor | None, what: str, positions: list[int], stacked: int = 1) -> None:
    """Refuse NaN or infinite numbers in a pass: the one check every stage's numbers go through.

    Args:
        values: ``(S·B, ...)`` rows per image (``S`` read-out layers stacked layer-major), or ``None``.
        what: what they are, for the message (``"model outputs"``, ``"explained scores"``, ``"relevance"``).
        positions: each of the ``B`` images' position in the call's input.

    Raises:
        NonFiniteError: naming the images whose rows hold NaN or infinity.
    """
    if values is None:
        return
    count = len(positions)
    rows = values.detach().reshape(stacked, count, -1)
    bad = (~torch.isfinite(rows)).any(-1).any(0).nonzero().flatten().tolist()
    if bad:
        shown = [positions[i] for i in bad]
        raise NonFiniteError(
            f"the {what} are NaN or infinite for image(s) {shown}, so there is no map to show. Check the model "
            "(its weights, dtype: float16 overflows easily) and the inputs for non-finite values",
            shown,
        )
