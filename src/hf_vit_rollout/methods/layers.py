"""Checks of layer, head and start-layer choices against a model's counts (errors name the counts)."""

from __future__ import annotations

import operator


def _as_index(value, what: str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{what} must be an integer, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise ValueError(f"{what} must be an integer, got {value!r}") from None


def _in_range(value, what: str, count: int, explain: str) -> int:
    """``value`` (negative counts from the end) as an index in ``[0, count)``, else ``ValueError``
    with ``f"{what} {index} is out of range: {explain}"``."""
    index = _as_index(value, what)
    if not -count <= index < count:
        raise ValueError(f"{what} {index} is out of range: {explain}")
    return index % count


def check_layer(layer, num_layers: int) -> int:
    """``layer`` (negative counts from the end) as an index in ``[0, num_layers)``.

    Raises:
        ValueError: not an integer, or out of range (the message names the model's layer count).
    """
    return _in_range(
        layer, "layer", num_layers,
        f"the model has {num_layers} attention layers (0 to {num_layers - 1}, or -1 to {-num_layers} from the end)",
    )


def check_head(head, num_heads: int) -> int | None:
    """``head`` (``None`` = fuse all heads; negative counts from the end) as an index in ``[0, num_heads)``."""
    if head is None:
        return None
    return _in_range(
        head, "head", num_heads,
        f"the model's attention layers have {num_heads} heads (0 to {num_heads - 1}); pass head=None to fuse them",
    )


def check_start_layer(start_layer, num_layers: int) -> int:
    """``start_layer`` (negative counts from the end) as an index in ``[0, num_layers)``: the first
    layer a product method aggregates."""
    return _in_range(
        start_layer, "start_layer", num_layers,
        f"the model has {num_layers} attention layers, so start_layer must lie in 0 to {num_layers - 1} "
        f"(or -1 to {-num_layers} from the end)",
    )
