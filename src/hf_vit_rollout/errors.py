"""Exceptions raised at the package boundary. All subclass ``ValueError`` (bad input) except where noted."""

from __future__ import annotations


class InputError(ValueError):
    """An image (path, array, tensor, PIL image) that cannot be explained, and why."""


class TargetError(ValueError):
    """A target class that the model does not have, or a target given to a class-agnostic method."""


class UnsupportedModelError(ValueError):
    """A checkpoint whose architecture has no global self-attention to explain."""


class NonFiniteError(ValueError):
    """The model's forward pass (or the relevance computed from it) produced NaN or infinite numbers,
    so there is no map to show. ``images``: the positions, in the call's input order, affected."""

    def __init__(self, message: str, images: list[int] | None = None):
        super().__init__(message)
        self.images = list(images or [])
