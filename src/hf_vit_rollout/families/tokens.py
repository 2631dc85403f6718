"""Token layout of a ViT-family model: prefix tokens (class, distillation, registers) and patch grid.

Everything is read from the model config and the input size, never guessed from a square root:
a 16 × 20 patch grid with 5 prefix tokens is as valid as 14 × 14 with one. Which tokens come
before the patches is each family's declaration (:mod:`hf_vit_rollout.families.grid`); windowed,
hierarchical models (Swin) have a layout of their own
(:mod:`hf_vit_rollout.families.window_layout`). Every layout answers the questions
:class:`TokenLayout` answers, so the stages treat them alike.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch


def _vision_config(config):
    return getattr(config, "vision_config", None) or config


def _pair(value) -> tuple[int, int]:
    if isinstance(value, (list, tuple)):
        return int(value[0]), int(value[1])
    return int(value), int(value)


class Layout:
    """The questions the stages ask every layout that most layouts answer alike.

    Every layout also answers ``num_tokens``, ``num_prefix_tokens``, ``cls_index``,
    ``output_weights``, ``patch_relevance``, ``attention_mismatch``, ``layer_map``, ``step``,
    ``num_steps`` and ``fixed_maps`` (see :class:`TokenLayout`).

    Attributes:
        hierarchical: whether the tokens change between stages (Swin's patch merging).
        refused_combines: ``combine`` kinds of methods this layout cannot serve, with the reason.
    """

    hierarchical: ClassVar[bool] = False
    refused_combines: ClassVar[dict] = {}

    def method_refusal(self, spec, layer: int) -> str | None:
        """Why method ``spec`` (at ``layer`` for the raw-attention method) cannot run on this layout;
        ``None``: it can."""
        return None

    def ratio_for(self, request) -> float:
        """The discard ratio in effect for ``request`` (the request's own here)."""
        return request.ratio

    def full_attention(self, layer: int, attention: torch.Tensor) -> torch.Tensor:
        """Layer ``layer``'s attention as ``(B, heads, N, N)`` over this layout's tokens (as recorded here)."""
        return attention


class OneStepPerLayer(Layout):
    """The chain of a layout whose every attention layer is one step and that knows no map before the
    forward pass: the part of the stages' questions that global-attention layouts answer alike."""

    def step(self, layer: int) -> int:
        """Chain step of attention layer ``layer`` (every layer is one step)."""
        return layer

    def num_steps(self, num_layers: int) -> int:
        return num_layers

    def fixed_maps(self, batch: int, device=None) -> dict[int, torch.Tensor]:
        """Maps known before the forward pass (none)."""
        return {}


@dataclass(frozen=True)
class TokenLayout(OneStepPerLayer):
    """Where the patches are in the token sequence.

    Attributes:
        num_prefix_tokens: tokens before the patches (class, distillation, registers).
        grid_size: ``(grid_h, grid_w)`` patches.
        cls_index: index of the class token, or ``None`` for models without one.
        pooling: ``"cls"`` or ``"mean"``: which output tokens the prediction is read from.
    """

    num_prefix_tokens: int
    grid_size: tuple[int, int]
    cls_index: int | None
    pooling: str

    @property
    def num_tokens(self) -> int:
        return self.num_prefix_tokens + self.grid_size[0] * self.grid_size[1]

    @classmethod
    def from_config(cls, config, image_size: tuple[int, int]) -> TokenLayout:
        """Layout of a global-attention ViT (ViT, DeiT, DINOv2, ...) for an input of ``image_size =
        (height, width)`` pixels, as its family (:mod:`hf_vit_rollout.families`) declares it.

        Raises:
            ValueError: for a ``model_type`` whose layout is unknown, unsupported, or not a global grid.
        """
        from . import family_for, unknown_model_type

        vision = _vision_config(config)
        family = family_for(vision)
        if family is None:
            raise ValueError(unknown_model_type(getattr(vision, "model_type", None)))
        layout = family.layout(vision, image_size)
        if not isinstance(layout, cls):
            raise ValueError(f"{vision.model_type!r} models have a {type(layout).__name__}, not a global patch grid")
        return layout

    @classmethod
    def of_grid(cls, config, image_size: tuple[int, int], has_cls: bool = True, extra: int = 0, pooling: str = "cls") -> TokenLayout:
        """``[class token] + extra tokens + registers + patches`` for an ``image_size`` input: the patch
        size and ``num_register_tokens`` from ``config``, what comes before them from the family.

        Raises:
            ValueError: the config has no ``patch_size``.
        """
        registers = int(getattr(config, "num_register_tokens", 0) or 0)
        patch_size = getattr(config, "patch_size", None)
        if patch_size is None:
            raise ValueError(f"the {getattr(config, 'model_type', None)!r} config has no patch_size, so its patch grid is unknown")
        patch_h, patch_w = _pair(patch_size)
        height, width = image_size
        return cls(
            num_prefix_tokens=int(has_cls) + extra + registers,
            grid_size=(height // patch_h, width // patch_w),
            cls_index=0 if has_cls else None,
            pooling=pooling,
        )

    def output_weights(self, dtype=torch.float32, device=None) -> torch.Tensor:
        """``(N,)`` weights of the output tokens whose relevance is explained.

        One-hot on the class token for ``"cls"`` pooling; uniform over patch tokens for ``"mean"``.
        """
        weights = torch.zeros(self.num_tokens, dtype=dtype, device=device)
        if self.pooling == "cls" and self.cls_index is not None:
            weights[self.cls_index] = 1.0
        else:
            weights[self.num_prefix_tokens :] = 1.0 / (self.num_tokens - self.num_prefix_tokens)
        return weights

    def patch_relevance(self, relevance: torch.Tensor) -> torch.Tensor:
        """``(B, N)`` token relevance → ``(B, grid_h, grid_w)`` patch relevance."""
        return relevance[:, self.num_prefix_tokens :].reshape(-1, *self.grid_size)

    # The questions the stages ask every layout (a windowed layout answers them for its blocks).
    def attention_mismatch(self, layer: int, attention: torch.Tensor) -> str | None:
        """Why layer ``layer``'s ``(B, H, N, N)`` attention does not fit this layout, or ``None``."""
        if attention.shape[-1] == self.num_tokens:
            return None
        return (
            f"layer {layer} attends over {attention.shape[-1]} tokens, but the config describes "
            f"{self.num_prefix_tokens} prefix tokens + {self.grid_size[0]}×{self.grid_size[1]} patches "
            f"= {self.num_tokens}; the model's token layout is not supported"
        )

    def layer_map(self, method_map: Callable, layer: int, attention: torch.Tensor, grad, settings: tuple) -> torch.Tensor:
        """Layer ``layer``'s ``(B, N, N)`` factor: ``method_map(attention, grad, *settings, cls_index)``."""
        return method_map(attention, grad, *settings, self.cls_index)

