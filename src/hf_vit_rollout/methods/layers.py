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


def check_layer(layer, num_layers: int) -> int:
    """``layer`` (negative counts from the end) as an index in ``[0, num_layers)``.

    Raises:
        ValueError: not an integer, or out of range (the message names the model's layer count).
    """
    index = _as_index(layer, "layer")
    if not -num_layers <= index < num_layers:
        raise ValueError(
            f"layer {index} is out of range: the model has {num_layers} attention layers "
            f"(0 to {num_layers - 1}, or -1 to {-num_layers} from the end)"
        )
    return index % num_layers


def check_head(head, num_heads: int) -> int | None:
    """``head`` (``None`` = fuse all heads; negative counts from the end) as an index in ``[0, num_heads)``."""
    if head is None:
        return None
    index = _as_index(head, "head")
    if not -num_heads <= index < num_heads:
        raise ValueError(
            f"head {index} is out of range: the model's attention layers have {num_heads} heads "
            f"(0 to {num_heads - 1}); pass head=None to fuse them"
        )
    return index % num_heads


def check_start_layer(start_layer, num_layers: int) -> int:
    """``start_layer`` (negative counts from the end) as an index in ``[0, num_layers)``: the first
    layer a product method aggregates."""
    index = _as_index(start_layer, "start_layer")
    if not -num_layers <= index < num_layers:
        raise ValueError(
            f"start_layer {index} is out of range: the model has {num_layers} attention layers, so "
            f"start_layer must lie in 0 to {num_layers - 1} (or -1 to {-num_layers} from the end)"
        )
    return index % num_layers
