"""Checkpoints that are refused, with the reason a user can act on."""

from __future__ import annotations

from ..errors import UnsupportedModelError


class _Refused:
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
)
