"""Token space of windowed, hierarchical vision transformers (Swin, Swin V2) as pure tensor functions.

A Swin stage holds ``N_s = H_s·W_s`` tokens on an ``H_s × W_s`` grid, in row-major order (the order
of the model's hidden states, ``index = row·W_s + col``). Its blocks attend only inside ``w × w``
windows, so each block's attention arrives as ``(B·nW, heads, w², w²)``; between stages a patch
merging layer turns every 2 × 2 group of tokens into one. This module turns both into maps over
tokens, so the methods (rollout, gradient rollout, GAE) stay the same pure functions over
``(B, N, N)`` chains:

* :func:`fold_window_attention`: a block's window attention becomes a block-diagonal
  ``(B, heads, N_s, N_s)`` map. The window partition is re-derived, not copied: the grid is padded at
  the bottom and right to a multiple of ``w`` (zero tokens), shifted blocks roll the *padded* grid by
  ``-shift`` on both axes (so slot ``(r, c)`` of the rolled grid holds padded token
  ``((r + shift) mod H_pad, (c + shift) mod W_pad)``), and the rolled grid is cut into windows in
  row-major window order, row-major inside a window. :func:`window_token_index` gives the token
  behind every window slot, which undoes the cyclic shift exactly: a shifted window that wraps
  around the border lands on the tokens it really mixed (its cross-region entries, masked with
  ``-100`` by the model, are ~e⁻¹⁰⁰ and folded as they are).
* :func:`merge_matrix`: patch merging as an ``(N_{s+1}, N_s)`` aggregation matrix. The model
  concatenates the children of merged token ``(i, j)`` in the order ``(2i, 2j), (2i+1, 2j),
  (2i, 2j+1), (2i+1, 2j+1)`` (:func:`merge_children`; Swin and Swin V2 agree), after padding an odd
  grid with a zero row/column at the bottom/right, so ``N_{s+1} = ⌈H_s/2⌉·⌈W_s/2⌉``.
* :class:`~hf_vit_rollout.families.window_layout.WindowedLayout`: the stage grids and every block's window
  and shift for an input size, read from the config with each family's own rules; the output
  tokens are the last stage's, mean-pooled (``SwinModel``'s pooler and the classifiers both
  average them).

Conventions, with the reasoning:

* **Padding.** Padded slots are zero vectors (Swin pads after ``layernorm_before``; V2 before the
  attention) and are *not* masked, so real queries put some attention on them. They are no token's
  information (their keys and values are the projections' biases: a constant), so their columns are
  dropped and a row may sum to less than one: that mass is a bias, which rollout also ignores for
  ViTs. Rollout renormalises rows after adding the residual as usual; GAE's ``I + Ā`` keeps the
  loss, as it keeps any relevance that goes to a constant. Padded query rows are dropped (their
  outputs are cut off by the model).
* **Residual per block.** Each block is ``x + attn(x)`` then ``x + mlp(x)`` (Swin: pre-norm; V2:
  post-norm on the branch, ``x + LN(attn(x))``), one attention per block, so a block contributes
  one factor exactly as a ViT layer does: rollout's ``norm(0.5·Ā + 0.5·I)``, GAE's ``I + Ā``,
  gradient rollout's ``norm(0.5·max(Ā⊙∇, 0) + 0.5·I)``, applied to the folded map. The identity is
  the block's own skip connection; the window structure lives only in ``Ā``.
* **Merging splits relevance equally among the real children.** A merged token is a learned linear
  map of the concatenation of its (up to) four children; which child a channel came from carries
  no sign of importance without a gradient, so each real child gets ``1/#real`` of its parent
  (``1/4`` away from the border): rows of the matrix sum to one (rollout's row-stochastic
  convention: a merged token's content is its children's), and since every child has exactly one
  parent the relevance a parent receives is conserved when it is passed down (GAE). Zero padding
  children get nothing. Patch merging has no skip connection, so this factor has no identity.
* **Mean-pooled output.** The explained row is ``1/N_last`` on every last-stage token. Unlike a
  ViT's class token, each output token's own skip path (identity through every block, then the
  merges down to its children) lands on image tokens, so it is part of the relevance: for GAE it is
  exactly ``1/N_0`` per first-stage token (without padding). It is kept, as for the mean-pooled ViT
  families; it lowers the contrast of max-scaled maps (see the README's localization figures).
* **Heads and discarding.** Head fusion (mean/min/max) commutes with folding (entries outside the
  windows are zero for every head), so methods fuse the folded map unchanged. ``discard_ratio``
  counts all ``N²`` entries of the folded map, of which only ``w²/N`` per row can be nonzero: a
  ratio below ``1 - w²/N`` discards only structural zeros, i.e. nothing.
* **Swin V2** differs where it does not matter to token space (scaled cosine attention, continuous
  position bias, post-norm, merge norm after the reduction) and in one place where it does: its
  windows are fixed when the model is built, from the config's ``image_size`` (window
  ``min(H_s, w)``; no shift where ``H_s ≤ w``, heights only), while Swin clamps at every call from
  the actual grid (``min(H_s, W_s) ≤ w`` → window ``min(H_s, W_s)``, no shift; Donut-Swin the
  same; MaskFormer-Swin never clamps).

Memory: a folded map is dense, ``heads·N_s²`` floats per image (3 × 3136² × 4 B = 118 MB for the
first stage of Swin-T at 224 px); :func:`fold_layer_map` folds one image at a time so only the
per-layer ``(B, N_s, N_s)`` result is held for the batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

def _pair(value) -> tuple[int, int]:
    if isinstance(value, (list, tuple)):
        return int(value[0]), int(value[1])
    return int(value), int(value)


def merged_grid(grid: tuple[int, int]) -> tuple[int, int]:
    """Grid after patch merging: ``(⌈H/2⌉, ⌈W/2⌉)`` (odd grids are zero-padded first)."""
    return (grid[0] + 1) // 2, (grid[1] + 1) // 2


def window_token_index(grid: tuple[int, int], window: int, shift: int = 0, device=None) -> torch.Tensor:
    """Token behind every window slot of a (shifted) window partition.

    Args:
        grid: ``(H, W)`` token grid of the stage.
        window: window side ``w`` (the grid is padded at the bottom/right to multiples of it).
        shift: cyclic shift of shifted-window blocks (``0`` for plain ones).

    Returns:
        ``(nW, w²)`` long tensor: the row-major token index ``row·W + col`` of slot ``p`` of window
        ``k`` (windows in the model's order), or ``-1`` where the slot holds padding.
    """
    height, width = grid
    if window < 1 or height < 1 or width < 1:
        raise ValueError(f"window {window} and grid {grid} must be positive")
    pad_h, pad_w = -(-height // window) * window, -(-width // window) * window
    rows = (torch.arange(pad_h, device=device) + shift) % pad_h  # rolled slot r holds padded row rows[r]
    cols = (torch.arange(pad_w, device=device) + shift) % pad_w
    index = rows[:, None] * width + cols[None, :]
    index = index.masked_fill((rows[:, None] >= height) | (cols[None, :] >= width), -1)
    windows = index.view(pad_h // window, window, pad_w // window, window).transpose(1, 2)
    return windows.reshape(-1, window * window)


def fold_window_attention(attention: torch.Tensor, grid: tuple[int, int], window: int, shift: int = 0) -> torch.Tensor:
    """A block's window attention as a block-diagonal map over the stage's tokens.

    Args:
        attention: ``(B·nW, heads, w², w²)`` window attention, windows in the model's order (image
            ``b``'s windows are rows ``b·nW ... (b+1)·nW - 1``). Gradients of it fold the same way.
        grid: ``(H, W)`` token grid; ``N = H·W``.
        window, shift: the block's window side and cyclic shift.

    Returns:
        ``(B, heads, N, N)`` map, ``out[b, h, i, j]`` = attention of token ``i`` on token ``j``
        (zero outside shared windows; padding rows and columns dropped).
    """
    index = window_token_index(grid, window, shift, device=attention.device)
    num_windows, slots = index.shape
    if attention.dim() != 4 or attention.shape[-2:] != (slots, slots) or attention.shape[0] % num_windows:
        raise ValueError(
            f"window attention of shape {tuple(attention.shape)} does not fit a {grid[0]}×{grid[1]} grid in "
            f"{window}×{window} windows ({num_windows} windows of {slots} tokens per image)"
        )
    batch, heads = attention.shape[0] // num_windows, attention.shape[1]
    n = grid[0] * grid[1]
    dump = n  # padding goes to an extra row/column that is cut off
    safe = index.masked_fill(index < 0, dump)
    flat = (safe[:, :, None] * (n + 1) + safe[:, None, :]).reshape(-1)  # (nW·w²·w²,)
    values = attention.reshape(batch, num_windows, heads, slots, slots).permute(0, 2, 1, 3, 4)
    out = attention.new_zeros(batch, heads, (n + 1) * (n + 1))
    out.index_add_(2, flat, values.reshape(batch, heads, -1))  # real pairs occur once: a copy
    return out.view(batch, heads, n + 1, n + 1)[:, :, :n, :n]


def merge_children(grid: tuple[int, int], device=None) -> torch.Tensor:
    """Children of every merged token, in the model's concatenation order.

    Args:
        grid: ``(H, W)`` grid before merging.

    Returns:
        ``(N_next, 4)`` long tensor: for merged token ``(i, j)`` (row-major on :func:`merged_grid`),
        the token indices of ``(2i, 2j), (2i+1, 2j), (2i, 2j+1), (2i+1, 2j+1)``, ``-1`` for padding.
    """
    height, width = grid
    next_h, next_w = merged_grid(grid)
    i = torch.arange(next_h, device=device)[:, None, None]
    j = torch.arange(next_w, device=device)[None, :, None]
    dr = torch.tensor([0, 1, 0, 1], device=device)[None, None, :]
    dc = torch.tensor([0, 0, 1, 1], device=device)[None, None, :]
    rows, cols = 2 * i + dr, 2 * j + dc
    index = (rows * width + cols).masked_fill((rows >= height) | (cols >= width), -1)
    return index.reshape(next_h * next_w, 4)


def merge_matrix(grid: tuple[int, int], dtype=torch.float32, device=None) -> torch.Tensor:
    """Patch merging as an aggregation matrix: each merged token from its real 2 × 2 children.

    Args:
        grid: ``(H, W)`` grid before merging; ``N = H·W``.

    Returns:
        ``(N_next, N)`` row-stochastic matrix with ``1/#real children`` on each real child.
    """
    children = merge_children(grid, device=device)
    real = children >= 0
    weights = (1.0 / real.sum(dim=1, keepdim=True).to(dtype)).expand(-1, 4)
    matrix = torch.zeros(children.shape[0], grid[0] * grid[1] + 1, dtype=dtype, device=device)
    matrix.scatter_(1, children.masked_fill(~real, matrix.shape[1] - 1), weights.masked_fill(~real, 0.0))
    return matrix[:, :-1]


def fold_layer_map(layer_map: Callable, attention: torch.Tensor, grad: torch.Tensor | None, block, *method_args) -> torch.Tensor:
    """Apply a method's per-layer map to a block's window attention, folded one image at a time.

    Args:
        layer_map: ``(attention, grad | None, *method_args) -> (B, N, N)`` of
            :class:`~hf_vit_rollout.methods.MethodSpec`.
        attention, grad: ``(B·nW, heads, w², w²)`` (``grad`` may be ``None``).
        block: the block's :class:`BlockGeometry`.
        *method_args: ``head_fusion, discard_ratio, keep_index`` as the method takes them.

    Returns:
        ``(B, N, N)`` with ``N`` the stage's tokens; row ``b`` depends on image ``b`` only.
    """
    num_windows = block.num_windows
    maps = []
    for start in range(0, attention.shape[0], num_windows):
        part = slice(start, start + num_windows)
        folded = fold_window_attention(attention[part], block.grid, block.window, block.shift)
        folded_grad = None if grad is None else fold_window_attention(grad[part], block.grid, block.window, block.shift)
        maps.append(layer_map(folded, folded_grad, *method_args))
    return torch.cat(maps)


@dataclass(frozen=True)
class BlockGeometry:
    """Where one block's windows lie.

    Attributes:
        stage: stage index (0 = the first, finest grid).
        grid: ``(H_s, W_s)`` token grid of the stage.
        window: window side ``w``.
        shift: cyclic shift (``0`` for plain windows).
    """

    stage: int
    grid: tuple[int, int]
    window: int
    shift: int

    @property
    def num_windows(self) -> int:
        """Windows per image, ``⌈H/w⌉·⌈W/w⌉``."""
        return -(-self.grid[0] // self.window) * -(-self.grid[1] // self.window)
