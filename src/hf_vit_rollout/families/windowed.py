"""Windowed families: Swin, Swin V2, Donut-Swin, MaskFormer-Swin (windows and patch merging) and ViTDet.

**Swin family.** Each stage's blocks attend inside windows and patch merging halves the grid
between stages; the layout is a :class:`~hf_vit_rollout.families.window_layout.WindowedLayout`
(each family's window rule there), the token space :mod:`hf_vit_rollout.families.windows`. The
capture takes each block's attention (:mod:`hf_vit_rollout.families.window_capture`): Swin's
dispatches through ``AttentionInterface``; Swin V2, Donut-Swin and MaskFormer-Swin return it only
under the forward keyword arguments each family declares. Swin and Donut-Swin clamp their blocks'
windows inside the forward pass, so every call runs under
:func:`~hf_vit_rollout.families.window_capture.kept_window_geometry`.

**ViTDet**: one token grid, with window-attention blocks and global-attention blocks mixed.

``VitDetModel`` keeps a single ``h × w`` patch grid (no class token, no merging) through every
block. Blocks listed in the config's ``window_block_indices`` attend inside ``window_size ×
window_size`` windows: the grid is padded at the bottom and right to a multiple of the window
(zero tokens) and cut into windows in row-major window order, row-major inside a window, with no
shift. That is Swin's partition with ``shift = 0``, so a window block's ``(B·nW, heads, w², w²)``
attention is folded into a block-diagonal ``(B, heads, N, N)`` map by
:func:`hf_vit_rollout.families.windows.fold_window_attention` (padding columns dropped, as for Swin: see
that module for the conventions); the other blocks' attention is already ``(B, heads, N, N)``.
Each block is ``x + attn(norm(x))`` then ``x + mlp(norm(x))``, one factor per block as in a ViT.

The explained output is the mean of all tokens of ``last_hidden_state`` (a backbone: give a
callable target, e.g. ``lambda out: out.last_hidden_state.mean((1, 2, 3))``, for gradient methods).

Capture: ``VitDetAttention`` computes its attention itself and returns only a reshaped copy of
the probabilities (not the tensor its output is computed from), so the capture re-runs the module
for its own thread under a thread-local ``TorchFunctionMode`` that takes the module's one softmax
as a ``(B·nW, heads, n, n)`` tensor on the autograd graph. Refused: checkpoints with
``residual_block_indices`` (a convolutional bottleneck after those blocks mixes neighbouring
tokens outside attention, which no attention chain follows).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.overrides import TorchFunctionMode

from ..errors import UnsupportedModelError
from .base import Family
from .tokens import OneStepPerLayer
from .window_capture import find_window_blocks, held_windows, kept_window_geometry, window_attention_modules
from .window_layout import WindowedLayout
from .windows import BlockGeometry, _pair, fold_layer_map, fold_window_attention

_SOFTMAX = {torch.Tensor.softmax, torch.softmax, torch.nn.functional.softmax}


class _SoftmaxProbe(TorchFunctionMode):
    """Takes the first softmax of a module's forward as ``(B', heads, n, n)`` and feeds the model a
    view of it, so the recorded tensor is the one the output is computed from."""

    def __init__(self, heads: int):
        super().__init__()
        self.heads = heads
        self.probabilities: torch.Tensor | None = None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in _SOFTMAX and self.probabilities is None:
            self.probabilities = out.unflatten(0, (-1, self.heads))
            return self.probabilities.flatten(0, 1)
        return out


def _vitdet_recompute(module, args, kwargs):
    """Re-run a ``VitDetAttention`` with its softmax recorded: ``(output, (B', heads, n, n))``."""
    probe = _SoftmaxProbe(module.num_heads)
    with probe:
        output = module.forward(*args, **kwargs)
    return output, probe.probabilities


@dataclass(frozen=True)
class MixedWindowLayout(OneStepPerLayer):
    """One ``grid_size`` token grid; each block global (``window = 0``) or windowed.

    Attributes:
        grid_size: ``(h, w)`` patches; ``N = h·w`` tokens, row-major, no prefix tokens.
        windows: every block's window side in forward order, ``0`` for a global block.
    """

    grid_size: tuple[int, int]
    windows: tuple[int, ...]
    num_prefix_tokens: int = 0
    cls_index: int | None = None
    pooling: str = "mean"

    @property
    def num_tokens(self) -> int:
        return self.grid_size[0] * self.grid_size[1]

    def _block(self, layer: int) -> BlockGeometry:
        return BlockGeometry(0, self.grid_size, self.windows[layer], 0)

    def output_weights(self, dtype=torch.float32, device=None) -> torch.Tensor:
        """``(N,)`` uniform weights: the mean of every token."""
        return torch.full((self.num_tokens,), 1.0 / self.num_tokens, dtype=dtype, device=device)

    def patch_relevance(self, relevance: torch.Tensor) -> torch.Tensor:
        return relevance.reshape(-1, *self.grid_size)

    def attention_mismatch(self, layer: int, attention: torch.Tensor) -> str | None:
        if layer >= len(self.windows):
            return f"attention layer {layer} ran, but the config describes {len(self.windows)} blocks"
        if not self.windows[layer]:
            if attention.shape[-1] == self.num_tokens:
                return None
            return f"global block {layer} attends over {attention.shape[-1]} tokens, the grid has {self.num_tokens}"
        block = self._block(layer)
        slots = block.window**2
        if attention.dim() == 4 and attention.shape[-2:] == (slots, slots) and attention.shape[0] % block.num_windows == 0:
            return None
        return (
            f"block {layer}'s attention has shape {tuple(attention.shape)}, but the config describes a "
            f"{self.grid_size[0]}×{self.grid_size[1]} grid in {block.window}×{block.window} windows"
        )

    def layer_map(self, method_map: Callable, layer: int, attention: torch.Tensor, grad, settings: tuple) -> torch.Tensor:
        """Block ``layer``'s ``(B, N, N)`` factor (window attention folded first)."""
        if not self.windows[layer]:
            return method_map(attention, grad, *settings, None)
        return fold_layer_map(method_map, attention, grad, self._block(layer), *settings, None)

    def full_attention(self, layer: int, attention: torch.Tensor) -> torch.Tensor:
        """Block ``layer``'s attention as ``(B, heads, N, N)`` (window blocks folded)."""
        if not self.windows[layer]:
            return attention
        block = self._block(layer)
        return torch.cat(
            [
                fold_window_attention(attention[s : s + block.num_windows], self.grid_size, block.window, 0)
                for s in range(0, attention.shape[0], block.num_windows)
            ]
        )


class SwinFamily(Family):
    """A Swin-family model: its windowed blocks, the keyword arguments that make them return their
    attention, and the window geometry they hold.

    Args:
        model_type: the ``model_type`` it answers for.
        block_class: the class name of its windowed block.
        forward_kwargs: model keyword arguments under which the blocks return their attention.
        window_rule: how its blocks fit their windows to the grid
            (:data:`~hf_vit_rollout.families.window_layout.WINDOW_RULES`).
    """

    def __init__(self, model_type: str, block_class: str, forward_kwargs: dict, window_rule: str):
        self.model_types = (model_type,)
        self.block_class = block_class
        self.forward_kwargs = forward_kwargs
        self.window_rule = window_rule

    def check(self, config) -> None:
        """Refuse a config whose windows and stages cannot be read."""
        self._probe_layout(config)

    def layout(self, config, image_size, held=None, inputs=None) -> WindowedLayout:
        return WindowedLayout.from_config(config, image_size, held, self.window_rule)

    def attention_setup(self, vision_root):
        """The windowed blocks, :attr:`forward_kwargs` and each block's attention module.

        Raises:
            UnsupportedModelError: the model has none of this family's blocks.
        """
        blocks = find_window_blocks(vision_root, self.block_class)
        if not blocks:
            raise UnsupportedModelError(f"{type(vision_root).__name__} is a {self.model_types[0]!r} model without its windowed blocks")
        return blocks, dict(self.forward_kwargs), window_attention_modules(vision_root, blocks)

    def held(self, blocks) -> list[tuple[int, int]] | None:
        """The ``(window, shift)`` the blocks hold outside the explainer's calls
        (:func:`~hf_vit_rollout.families.window_capture.held_windows`)."""
        return held_windows(blocks) if blocks else None

    def forward_context(self, explainer, input_size: tuple[int, int]):
        """The blocks run with this input size's window geometry, shared only with calls that clamp them
        alike, and are restored afterwards (:func:`~hf_vit_rollout.families.window_capture.kept_window_geometry`)."""
        return kept_window_geometry(explainer.window_blocks, explainer.layout(input_size).geometry())


class VitDetFamily(Family):
    model_types = ("vitdet",)

    def check(self, config) -> None:
        residual = list(getattr(config, "residual_block_indices", None) or [])
        if residual:
            raise UnsupportedModelError(
                f"this ViTDet checkpoint has residual_block_indices={residual}: a convolutional bottleneck after "
                "those blocks mixes neighbouring tokens outside attention, which attention-based methods cannot follow"
            )

    def layout(self, config, image_size, held=None, inputs=None) -> MixedWindowLayout:
        patch_h, patch_w = _pair(config.patch_size)
        grid = (int(image_size[0]) // patch_h, int(image_size[1]) // patch_w)
        windowed = set(getattr(config, "window_block_indices", None) or [])
        window = int(config.window_size)
        return MixedWindowLayout(grid, tuple(window if i in windowed else 0 for i in range(config.num_hidden_layers)))

    def attention_setup(self, vision_root):
        from transformers.models.vitdet.modeling_vitdet import VitDetAttention

        modules = [(n, m, _vitdet_recompute) for n, m in vision_root.named_modules() if isinstance(m, VitDetAttention)]
        if not modules:
            raise UnsupportedModelError(f"{type(vision_root).__name__} has no ViTDet attention modules")
        return [], {}, modules


#: Swin's eager attention always returns its maps; MaskFormer-Swin's encoder (transformers 5.24) fails
#: on ``output_attentions=True`` alone but runs with hidden states too.
FAMILIES = (
    SwinFamily("swin", "SwinLayer", {}, "per_call"),
    SwinFamily("swinv2", "Swinv2Layer", {"output_attentions": True}, "at_build"),
    SwinFamily("donut-swin", "DonutSwinLayer", {"output_attentions": True}, "per_call"),
    SwinFamily("maskformer-swin", "MaskFormerSwinLayer", {"output_attentions": True, "output_hidden_states": True}, "never"),
    VitDetFamily(),
)
