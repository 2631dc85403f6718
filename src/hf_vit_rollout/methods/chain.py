"""Streaming accumulation of ``w · M_L ··· M_1`` from per-layer maps, in either arrival order.

Forward hooks deliver layer maps first layer first; gradient hooks deliver them last layer first.
:class:`ChainFold` multiplies each map in as soon as the next one in its direction arrives, so only
``O(B·N²)`` is held, and it keys every map by its layer index, so an out-of-order arrival is kept
until its turn instead of being multiplied in the wrong place.
"""

from __future__ import annotations

import torch


class ChainFold:
    """Accumulate the relevance ``w · M_{L-1} ··· M_0`` of per-layer ``(B, N, N)`` maps.

    Args:
        output_weights: ``(N,)`` weights ``w`` of the output tokens.
        direction: ``"forward"`` (maps arrive 0, 1, ...: keeps the ``(B, N, N)`` running product
            ``M_l ··· M_0``) or ``"backward"`` (maps arrive L-1, L-2, ...: keeps the ``(B, N)`` row
            vector ``w · M_{L-1} ··· M_l``).
    """

    def __init__(self, output_weights: torch.Tensor, direction: str):
        if direction not in ("forward", "backward"):
            raise ValueError(f"direction must be 'forward' or 'backward', not {direction!r}")
        self.output_weights = output_weights
        self.direction = direction
        self._pending: dict[int, torch.Tensor] = {}
        self._seen: set[int] = set()
        self._state: torch.Tensor | None = None
        self._next: int | None = 0 if direction == "forward" else None

    def add(self, layer: int, layer_map: torch.Tensor) -> None:
        """Hand in layer ``layer``'s ``(B, N, N)`` map."""
        if layer in self._seen:
            raise ValueError(f"layer {layer} was added twice")
        self._seen.add(layer)
        self._pending[layer] = layer_map
        self._drain()

    def start_backward(self, num_layers: int) -> None:
        """Backward direction only: the number of layers, known once the forward pass is done."""
        self._next = num_layers - 1
        self._drain()

    def _drain(self) -> None:
        while self._next is not None and self._next in self._pending:
            m = self._pending.pop(self._next)
            if self.direction == "forward":
                self._state = m if self._state is None else torch.bmm(m, self._state)
                self._next += 1
            else:
                if self._state is None:
                    w = self.output_weights.to(device=m.device, dtype=m.dtype)
                    self._state = w.expand(m.shape[0], -1)
                self._state = torch.bmm(self._state.unsqueeze(1), m).squeeze(1)
                self._next -= 1

    def relevance(self, num_layers: int) -> torch.Tensor:
        """``(B, N)`` relevance once all ``num_layers`` maps were added."""
        done = self._next == num_layers if self.direction == "forward" else self._next == -1
        if not done or self._pending or self._state is None:
            raise RuntimeError(
                f"incomplete chain: expected {num_layers} layers, next missing {self._next}, "
                f"{len(self._pending)} out of order"
            )
        if self.direction == "backward":
            return self._state
        w = self.output_weights.to(device=self._state.device, dtype=self._state.dtype)
        return torch.einsum("i,bij->bj", w, self._state)
