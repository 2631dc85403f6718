"""Token layout of windowed, hierarchical models (Swin family) for one input size, from the config.

The stage grids and every block's window and shift, with each family's own rules (see
:mod:`hf_vit_rollout.families.windows` for the token-space conventions): Swin and Donut-Swin clamp a block's
window to the grid at every call (``min(H_s, W_s) ≤ w`` → window ``min(H_s, W_s)``, no shift), Swin
V2 fixes its windows when the model is built, from the config's ``image_size`` (window
``min(H_s, w)``; no shift where ``H_s ≤ w``, heights only), MaskFormer-Swin never clamps.
:class:`WindowedLayout` answers the questions :class:`~hf_vit_rollout.families.tokens.TokenLayout` answers,
so the stages treat both alike.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch

from .tokens import Layout
from .windows import (
    BlockGeometry,
    _pair,
    fold_layer_map,
    merge_matrix,
    merged_grid,
)


#: How a family's blocks fit their windows to the grid (each family declares one,
#: :class:`~hf_vit_rollout.families.windowed.SwinFamily`): ``"per_call"`` clamps to the input's grid at
#: every call (Swin, Donut-Swin), ``"at_build"`` fixes the windows from the config's grid when the model
#: is built (Swin V2), ``"never"`` keeps them (MaskFormer-Swin).
WINDOW_RULES = ("per_call", "at_build", "never")


def _block_windows(rule: str, grid, config_grid, window: int, shift: int) -> tuple[int, int]:
    """``(window, shift)`` a block runs with under ``rule``, from the values it holds before the call.

    Each rule is idempotent, so it applies to the config's values and to a block's held ones alike.
    """
    if rule == "at_build":  # fixed at construction from the config's grid, heights only
        side = min(config_grid[0], window)
        return side, 0 if config_grid[0] <= side else shift
    if rule == "never":
        return window, shift
    if min(grid) <= window:  # "per_call": clamped at every call
        return min(grid), 0
    return window, shift


def _refuse_small_input(image_size, grid, stage: int, window: int, patch_h: int, patch_w: int, stages: int) -> None:
    """Swin's attention has a relative-position table for whole windows only: a stage grid smaller
    than a window cannot run. The smallest side that works: a last-stage grid of ``window`` tokens."""
    from ..errors import InputError

    smallest_grid = (window - 1) * 2 ** (stages - 1) + 1  # each merging halves, rounding up
    smallest = ((smallest_grid - 1) * patch_h + 1, (smallest_grid - 1) * patch_w + 1)
    raise InputError(
        f"a {image_size[0]}×{image_size[1]}-pixel model input gives a {grid[0]}×{grid[1]} token grid in stage "
        f"{stage}, smaller than this model's {window}×{window}-token windows, which it cannot run; give inputs of "
        f"at least {smallest[0]}×{smallest[1]} pixels (or use an image processor that resizes)"
    )


@dataclass(frozen=True)
class WindowedLayout(Layout):
    """Token layout of a windowed, hierarchical model for one input size.

    Attributes:
        stage_grids: ``(H_s, W_s)`` of every stage, first (finest) stage first.
        blocks: every block's :class:`BlockGeometry`, in forward order.

    Relevance is explained on the first stage's grid; the output tokens are the last stage's,
    mean-pooled. It answers the same questions as :class:`~hf_vit_rollout.families.tokens.TokenLayout`
    (``grid_size``, ``output_weights``, ``patch_relevance``, ``layer_map``, ``step``,
    ``fixed_maps``, ``num_steps``, ``attention_mismatch``), so the stages treat both alike.
    """

    stage_grids: tuple[tuple[int, int], ...]
    blocks: tuple[BlockGeometry, ...]
    num_prefix_tokens: int = 0
    cls_index: int | None = None
    pooling: str = "mean"
    hierarchical: ClassVar[bool] = True

    @property
    def grid_size(self) -> tuple[int, int]:
        """The first stage's grid, on which relevance comes out."""
        return self.stage_grids[0]

    @property
    def num_tokens(self) -> int:
        """Tokens of the first stage (the length of a relevance row)."""
        return self.grid_size[0] * self.grid_size[1]

    @property
    def num_output_tokens(self) -> int:
        return self.stage_grids[-1][0] * self.stage_grids[-1][1]

    @classmethod
    def from_config(
        cls, config, image_size: tuple[int, int], held: list[tuple[int, int]] | None = None, rule: str | None = None
    ) -> WindowedLayout:
        """Layout for an input of ``image_size = (height, width)`` pixels.

        The patch embedding pads the image to a multiple of the patch size, so the first grid is
        ``⌈height/patch⌉ × ⌈width/patch⌉``; each later stage is :func:`merged_grid` of the one before.
        Blocks alternate plain and shifted (``shift = window // 2``) windows within a stage.

        Args:
            held: ``(window_size, shift_size)`` every block of a loaded model holds now (Swin keeps
                the values an earlier call clamped them to); default the config's.
            rule: the family's window rule (:data:`WINDOW_RULES`); default the one the config's
                family declares.

        Raises:
            ValueError: for a config whose family is not windowed.
            InputError: a Swin or Donut-Swin input whose grid is smaller than a window in some
                stage (``transformers`` cannot run it); the message gives the smallest size that works.
        """
        if rule is None:
            from . import FAMILIES, family_for

            rule = getattr(family_for(config), "window_rule", None)
            if rule is None:
                windowed = [t for t, f in FAMILIES.items() if getattr(f, "window_rule", None)]
                raise ValueError(f"{getattr(config, 'model_type', None)!r} is not a windowed family ({', '.join(windowed)})")
        if rule not in WINDOW_RULES:
            raise ValueError(f"window rule {rule!r} is not one of {', '.join(WINDOW_RULES)}")
        patch_h, patch_w = _pair(config.patch_size)
        grid = (-(-int(image_size[0]) // patch_h), -(-int(image_size[1]) // patch_w))
        config_h, config_w = _pair(config.image_size)
        config_grid = (config_h // patch_h, config_w // patch_w)
        window = int(config.window_size)
        grids, blocks = [], []
        for stage, depth in enumerate(config.depths):
            if stage:
                grid = merged_grid(grid)
            grids.append(grid)
            stage_config = (config_grid[0] // 2**stage, config_grid[1] // 2**stage)
            if rule == "per_call" and min(grid) < window:
                _refuse_small_input(image_size, grid, stage, window, patch_h, patch_w, len(config.depths))
            for i in range(depth):
                start = held[len(blocks)] if held else (window, window // 2 if i % 2 else 0)
                side, shift = _block_windows(rule, grid, stage_config, *start)
                blocks.append(BlockGeometry(stage, grid, side, shift))
        if held is not None and len(held) != len(blocks):
            raise ValueError(f"the model has {len(held)} windowed blocks, its config describes {len(blocks)}")
        return cls(tuple(grids), tuple(blocks))

    def geometry(self) -> tuple[tuple[int, int], ...]:
        """``(window, shift)`` of every block: what a forward pass of this input size leaves them at."""
        return tuple((block.window, block.shift) for block in self.blocks)

    def chain_steps(self) -> list[tuple[str, int]]:
        """The token-space chain in forward order: ``("block", block_index)`` or ``("merge", stage)``.

        ``("merge", s)`` is the ``(N_{s+1}, N_s)`` :func:`merge_matrix` of stage ``s``'s grid. A
        :class:`~hf_vit_rollout.methods.chain.ChainFold` takes step ``k`` as its layer ``k``.
        """
        steps: list[tuple[str, int]] = []
        for index, block in enumerate(self.blocks):
            if steps and block.stage != self.blocks[index - 1].stage:
                steps.append(("merge", block.stage - 1))
            steps.append(("block", index))
        return steps

    def merge_map(self, stage: int, batch: int, dtype=torch.float32, device=None) -> torch.Tensor:
        """``(B, N_{s+1}, N_s)`` merging map after stage ``stage`` (one matrix, viewed per image)."""
        return merge_matrix(self.stage_grids[stage], dtype=dtype, device=device).expand(batch, -1, -1)

    def block_steps(self) -> list[int]:
        """Chain step of every block (blocks are steps, with a merge step between stages)."""
        return [step for step, (kind, _) in enumerate(self.chain_steps()) if kind == "block"]

    def merge_maps(self, batch: int, dtype=torch.float32, device=None) -> dict[int, torch.Tensor]:
        """``{chain step: (B, N_{s+1}, N_s) map}`` of every patch merging, known before the pass."""
        return {
            step: self.merge_map(stage, batch, dtype, device)
            for step, (kind, stage) in enumerate(self.chain_steps())
            if kind == "merge"
        }

    def step(self, layer: int) -> int:
        """Chain step of attention layer (= block) ``layer``."""
        return self.block_steps()[layer]

    def num_steps(self, num_layers: int) -> int:
        """Steps of the whole chain: every block and every merge."""
        return len(self.chain_steps())

    def fixed_maps(self, batch: int, device=None) -> dict[int, torch.Tensor]:
        """The maps known before the forward pass: :meth:`merge_maps`."""
        return self.merge_maps(batch, device=device)

    def attention_mismatch(self, layer: int, attention: torch.Tensor) -> str | None:
        """Why block ``layer``'s ``(B·nW, heads, w², w²)`` attention does not fit this layout, or ``None``."""
        if layer >= len(self.blocks):
            return f"attention layer {layer} ran, but the config describes {len(self.blocks)} windowed blocks"
        block = self.blocks[layer]
        slots = block.window * block.window
        if attention.dim() == 4 and attention.shape[-2:] == (slots, slots) and attention.shape[0] % block.num_windows == 0:
            return None
        return (
            f"block {layer}'s attention has shape {tuple(attention.shape)}, but the config describes a "
            f"{block.grid[0]}×{block.grid[1]} grid in {block.window}×{block.window} windows ({block.num_windows} per image)"
        )

    def layer_map(self, method_map: Callable, layer: int, attention: torch.Tensor, grad, settings: tuple) -> torch.Tensor:
        """Block ``layer``'s ``(B, N_s, N_s)`` factor: ``method_map`` on the folded attention.

        Args:
            method_map: a :class:`~hf_vit_rollout.methods.MethodSpec`'s ``layer_map``.
            attention, grad: ``(B·nW, heads, w², w²)`` (``grad`` may be ``None``).
            settings: ``(head_fusion, discard_ratio)``.
        """
        return fold_layer_map(method_map, attention, grad, self.blocks[layer], *settings, None)

    def output_weights(self, dtype=torch.float32, device=None) -> torch.Tensor:
        """``(N_last,)`` uniform weights of the mean-pooled last-stage tokens."""
        return torch.full((self.num_output_tokens,), 1.0 / self.num_output_tokens, dtype=dtype, device=device)

    def patch_relevance(self, relevance: torch.Tensor) -> torch.Tensor:
        """``(B, N_0)`` first-stage token relevance → ``(B, H_0, W_0)``."""
        return relevance.reshape(-1, *self.grid_size)
