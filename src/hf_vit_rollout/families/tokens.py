"""Token layout of a ViT-family model: prefix tokens (class, distillation, registers) and patch grid.

Everything is read from the model config and the input size, never guessed from a square root:
a 16 × 20 patch grid with 5 prefix tokens is as valid as 14 × 14 with one. Windowed, hierarchical
models (Swin) have a layout of their own (:mod:`hf_vit_rollout.families.window_layout`);
:func:`layout_from_config` returns the right one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch

from .window_layout import WindowedLayout
from .windows import WINDOWED_FAMILIES

# model_type -> (has a class token, extra prefix tokens besides class + registers, output pooling)
# output pooling: "cls" reads the class token's row; "mean" averages the patch tokens' rows.
_FAMILIES: dict[str, tuple[bool, int, str]] = {
    "vit": (True, 0, "cls"),
    "vit_msn": (True, 0, "cls"),
    "deit": (True, 1, "cls"),  # + distillation token
    "dinov2": (True, 0, "cls"),
    "dinov2_with_registers": (True, 0, "cls"),
    "dinov3_vit": (True, 0, "cls"),
    "beit": (True, 0, "cls"),
    "data2vec-vision": (True, 0, "cls"),
    "clip_vision_model": (True, 0, "cls"),
    "clip": (True, 0, "cls"),
    "ijepa": (False, 0, "mean"),
    "siglip_vision_model": (False, 0, "mean"),
    "siglip": (False, 0, "mean"),
}

#: Families that are refused, with the reason.
UNSUPPORTED_FAMILIES: dict[str, str] = {
    "swin2sr": "Swin2SR restores images (its output is an image, not a prediction over classes or tokens)",
    "dinat": "DiNAT uses neighborhood attention (a sliding window per token, natten kernels), not windows that fold",
    "focalnet": "FocalNet mixes tokens by focal modulation, not attention",
    "pvt": "PVT uses spatial-reduction attention whose keys are a pooled grid, not the tokens",
    "pvt_v2": "PVT v2 uses spatial-reduction attention whose keys are a pooled grid, not the tokens",
    "levit": "LeViT shrinks the token grid between stages, so attention maps of different layers do not chain",
    "mobilevit": "MobileViT attends within unfolded local patches, not globally over tokens",
    "mobilevitv2": "MobileViT V2 uses separable linear attention with no token-to-token map",
    "resnet": "it is a convolutional network and has no attention at all",
    "convnext": "it is a convolutional network and has no attention at all",
    "convnextv2": "it is a convolutional network and has no attention at all",
    "efficientnet": "it is a convolutional network and has no attention at all",
    "regnet": "it is a convolutional network and has no attention at all",
    "mobilenet_v2": "it is a convolutional network and has no attention at all",
}


def supported_model_types() -> list[str]:
    """``model_type`` values the explainer knows the token layout of."""
    from . import registered_model_types

    return sorted({*_FAMILIES, *WINDOWED_FAMILIES, *registered_model_types()})


def layout_from_config(config, image_size: tuple[int, int], held: list[tuple[int, int]] | None = None, inputs: dict | None = None):
    """The token layout of any supported family: a :class:`TokenLayout`, or a
    :class:`~hf_vit_rollout.families.window_layout.WindowedLayout` for windowed, hierarchical models (Swin).

    Args:
        held: for windowed models, the ``(window_size, shift_size)`` their blocks hold now.
        inputs: per-image model inputs besides ``pixel_values`` (SigLIP 2), batched.

    Raises:
        ValueError: for a ``model_type`` whose layout is unknown or unsupported.
    """
    from . import family_for

    vision = _vision_config(config)
    family = family_for(vision)
    if family is not None:  # the families package (hf_vit_rollout.families) knows this one
        return family.layout(vision, image_size, held, inputs)
    if getattr(vision, "model_type", None) in WINDOWED_FAMILIES:
        return WindowedLayout.from_config(vision, image_size, held)
    return TokenLayout.from_config(config, image_size)


def _vision_config(config):
    return getattr(config, "vision_config", None) or config


def _pair(value) -> tuple[int, int]:
    if isinstance(value, (list, tuple)):
        return int(value[0]), int(value[1])
    return int(value), int(value)


class OneStepPerLayer:
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
    hierarchical: ClassVar[bool] = False

    @property
    def num_tokens(self) -> int:
        return self.num_prefix_tokens + self.grid_size[0] * self.grid_size[1]

    @classmethod
    def from_config(cls, config, image_size: tuple[int, int]) -> TokenLayout:
        """Layout for an input of ``image_size = (height, width)`` pixels.

        Raises:
            ValueError: for a ``model_type`` whose layout is unknown or unsupported.
        """
        vision = _vision_config(config)
        model_type = getattr(vision, "model_type", None)
        if model_type in UNSUPPORTED_FAMILIES:
            raise ValueError(f"{model_type!r} models are not supported: {UNSUPPORTED_FAMILIES[model_type]}")
        if model_type not in _FAMILIES:
            raise ValueError(
                f"unknown model type {model_type!r}: attention rollout supports {', '.join(supported_model_types())}"
            )
        has_cls, extra, pooling = _FAMILIES[model_type]
        if model_type == "beit" or model_type == "data2vec-vision":
            pooling = "mean" if getattr(vision, "use_mean_pooling", False) else "cls"
        registers = int(getattr(vision, "num_register_tokens", 0) or 0)
        patch_size = getattr(vision, "patch_size", None)
        if patch_size is None:
            raise ValueError(f"the {model_type!r} config has no patch_size, so its patch grid is unknown")
        patch_h, patch_w = _pair(patch_size)
        height, width = image_size
        grid = (height // patch_h, width // patch_w)
        return cls(
            num_prefix_tokens=int(has_cls) + extra + registers,
            grid_size=grid,
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

