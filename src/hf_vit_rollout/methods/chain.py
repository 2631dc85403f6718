"""Streaming accumulation of ``w · M_L ··· M_1`` from per-layer maps, in either arrival order.

Forward hooks deliver layer maps first layer first; gradient hooks deliver them last layer first.
:class:`ChainFold` keys every map by its layer index, so an out-of-order arrival is kept until its
turn instead of being multiplied in the wrong place.

* Backward order (gradient methods): the ``(B, N)`` row ``w · M_{L-1} ··· M_l`` is updated as each
  map arrives: ``O(B·N²)`` time per layer, ``O(B·N)`` state.
* Forward order (rollout): the row vector cannot be formed before the last layer has run, so maps
  are held in a buffer of at most ``buffer_bytes``; at the end the row is folded through them from
  the output side (``O(B·N²)`` per layer). When the buffer would overflow, the held maps are
  multiplied into a ``(B, N, N)`` running product ``M_l ··· M_0`` instead, which costs ``B·N³``
  per layer but bounds the extra memory at ``buffer_bytes + O(B·N²)``. ``buffer_bytes=0`` always
  folds into the product (strict ``O(B·N²)`` memory).

Maps need not be square: a hierarchical model's chain holds ``(B, N_{l+1}, N_l)`` maps where the
token count changes (Swin's patch merging, :func:`hf_vit_rollout.families.windows.merge_matrix`), and the
relevance then comes out over the first layer's ``N_0`` tokens while ``output_weights`` weigh the
last layer's. Consecutive maps must link (``M_{l+1}.shape[-1] == M_l.shape[-2]``); a break raises
``ValueError`` naming both layers.
"""

from __future__ import annotations

import torch


class ChainFold:
    """Accumulate the relevance ``w · M_{L-1} ··· M_0`` of per-layer ``(B, N_{l+1}, N_l)`` maps.

    Args:
        output_weights: ``(N_L,)`` weights ``w`` of the output tokens (the last map's rows).
        direction: ``"forward"`` (maps arrive 0, 1, ...) or ``"backward"`` (maps arrive L-1, L-2, ...).
        buffer_bytes: forward direction only: how many bytes of maps may be held before they are
            multiplied into the running product (see the module docstring).
        start_layer: first layer folded in (``>= 0``); maps of earlier layers are accepted and
            dropped, so the relevance is ``w · M_{L-1} ··· M_{start_layer}``.
    """

    def __init__(self, output_weights: torch.Tensor, direction: str, buffer_bytes: float = 0, start_layer: int = 0):
        if direction not in ("forward", "backward"):
            raise ValueError(f"direction must be 'forward' or 'backward', not {direction!r}")
        if not buffer_bytes >= 0:
            raise ValueError(f"buffer_bytes must be >= 0, got {buffer_bytes}")
        if isinstance(start_layer, bool) or not isinstance(start_layer, int) or start_layer < 0:
            raise ValueError(f"start_layer must be an integer >= 0, got {start_layer!r}")
        self.start_layer = start_layer
        self.output_weights = output_weights
        self.direction = direction
        self.buffer_bytes = buffer_bytes
        self._pending: dict[int, torch.Tensor] = {}
        self._seen: set[int] = set()
        self._state: torch.Tensor | None = None  # forward: (B, N, N) product; backward: (B, N) row
        self._buffer: list[torch.Tensor] = []  # forward: maps after the product, in layer order
        self._buffered = 0
        self._next: int | None = start_layer if direction == "forward" else None
        self._linked: tuple[int, int] | None = None  # (layer, tokens) the next map must link to
        self.num_folded = 0  # forward maps multiplied into the (B, N, N) product (B·N³ each)

    def add(self, layer: int, layer_map: torch.Tensor) -> None:
        """Hand in layer ``layer``'s ``(B, N_{l+1}, N_l)`` map (square for attention layers)."""
        if layer in self._seen:
            raise ValueError(f"layer {layer} was added twice")
        self._seen.add(layer)
        if layer < self.start_layer:
            return
        self._pending[layer] = layer_map
        self._drain()

    def start_backward(self, num_layers: int) -> None:
        """Backward direction only: the number of layers, known once the forward pass is done."""
        self._check_start(num_layers)
        self._next = num_layers - 1
        self._drain()

    def _check_start(self, num_layers: int) -> None:
        if self.start_layer >= num_layers:
            raise ValueError(
                f"start_layer {self.start_layer} is out of range: the model has {num_layers} attention layers "
                f"(0 to {num_layers - 1})"
            )

    def _row(self, m: torch.Tensor) -> torch.Tensor:
        w = self.output_weights.to(device=m.device, dtype=m.dtype)
        return w.expand(m.shape[0], -1)

    def _link(self, layer: int, m: torch.Tensor) -> None:
        """Check that ``m`` links to the previously folded map; remember what the next must match."""
        forward = self.direction == "forward"
        size, other = (m.shape[-1], m.shape[-2]) if forward else (m.shape[-2], m.shape[-1])
        if self._linked is None and not forward and size != self.output_weights.shape[-1]:
            raise ValueError(
                f"layer {layer} has {size} output tokens but {self.output_weights.shape[-1]} output weights were given"
            )
        if self._linked is not None and size != self._linked[1]:
            side = "input" if forward else "output"
            raise ValueError(
                f"layer {layer}'s map {tuple(m.shape)} does not link to layer {self._linked[0]}: it has {size} "
                f"{side} tokens where layer {self._linked[0]} has {self._linked[1]}"
            )
        self._linked = (layer, other)

    def _drain(self) -> None:
        while self._next is not None and self._next in self._pending:
            m = self._pending.pop(self._next)
            self._link(self._next, m)
            if self.direction == "forward":
                self._buffer.append(m)
                self._buffered += m.numel() * m.element_size()
                if self._buffered > self.buffer_bytes:
                    for held in self._buffer:
                        self._state = held if self._state is None else torch.bmm(held, self._state)
                        self.num_folded += 1
                    self._buffer, self._buffered = [], 0
                self._next += 1
            else:
                if self._state is None:
                    self._state = self._row(m)
                self._state = torch.bmm(self._state.unsqueeze(1), m).squeeze(1)
                self._next -= 1
                if self._next < self.start_layer:
                    self._next = self.start_layer - 1
                    break

    def relevance(self, num_layers: int) -> torch.Tensor:
        """``(B, N)`` relevance once all ``num_layers`` maps were added."""
        self._check_start(num_layers)
        done = self._next == num_layers if self.direction == "forward" else self._next == self.start_layer - 1
        if not done or self._pending or (self._state is None and not self._buffer):
            raise RuntimeError(
                f"incomplete chain: expected {num_layers} layers, next missing {self._next}, "
                f"{len(self._pending)} out of order"
            )
        if self.direction == "backward":
            return self._state
        last = self._buffer[-1] if self._buffer else self._state
        if last.shape[-2] != self.output_weights.shape[-1]:
            raise ValueError(
                f"the last layer has {last.shape[-2]} output tokens but {self.output_weights.shape[-1]} output weights were given"
            )
        row = self._row(last)
        for held in reversed(self._buffer):
            row = torch.bmm(row.unsqueeze(1), held).squeeze(1)
        if self._state is not None:
            row = torch.bmm(row.unsqueeze(1), self._state).squeeze(1)
        return row
