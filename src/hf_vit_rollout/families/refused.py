"""Checkpoints that are refused, with the reason a user can act on."""

from __future__ import annotations

from ..errors import UnsupportedModelError
from .base import Family


class _Refused(Family):
    """``model_types`` refused with ``reason``: :meth:`check` raises it, and so does :meth:`layout`."""

    refused = True

    def __init__(self, model_types: tuple[str, ...], reason: str):
        self.model_types = model_types
        self.reason = reason

    def check(self, config) -> None:
        raise UnsupportedModelError(self.reason)

    def layout(self, config, image_size, held=None, inputs=None):
        raise ValueError(self.reason)


FAMILIES = (
    _Refused(
        ("hiera",),
        "'hiera' models are not supported: Hiera pools the queries inside its attention (mask-unit attention, "
        "each stage's queries a max-pool of the previous tokens) and reorders tokens into mask units, so one "
        "layer's attention rows are not the next layer's tokens and the maps do not chain token by token",
    ),
    _Refused(
        ("timm_wrapper",),
        "'timm_wrapper' checkpoints (TimmWrapperModel / TimmWrapperForImageClassification) are not supported: "
        "they run timm's own modules, whose attention does not go through transformers' attention interface, "
        "and they cannot be tested here (timm needs torchvision). Load the same weights through a native "
        "transformers class where one exists (ViTForImageClassification, ...)",
    ),
    *(
        _Refused((model_type,), f"{model_type!r} models are not supported: {why}")
        for model_type, why in {
            "swin2sr": "Swin2SR restores images (its output is an image, not a prediction over classes or tokens)",
            "dinat": "DiNAT uses neighborhood attention (a sliding window per token, natten kernels), not windows that fold",
            "focalnet": "FocalNet mixes tokens by focal modulation, not attention",
            "pvt": "PVT uses spatial-reduction attention whose keys are a pooled grid, not the tokens",
            "pvt_v2": "PVT v2 uses spatial-reduction attention whose keys are a pooled grid, not the tokens",
            "levit": "LeViT shrinks the token grid between stages, so attention maps of different layers do not chain",
            "mobilevit": "MobileViT attends within unfolded local patches, not globally over tokens",
            "mobilevitv2": "MobileViT V2 uses separable linear attention with no token-to-token map",
            **dict.fromkeys(
                ("resnet", "convnext", "convnextv2", "efficientnet", "regnet", "mobilenet_v2"),
                "it is a convolutional network and has no attention at all",
            ),
        }.items()
    ),
)
