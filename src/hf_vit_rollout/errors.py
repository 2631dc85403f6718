"""Exceptions raised at the package boundary. All subclass ``ValueError`` (bad input) except where noted."""

from __future__ import annotations


class InputError(ValueError):
    """An image (path, array, tensor, PIL image) that cannot be explained, and why."""


class TargetError(ValueError):
    """A target class that the model does not have, or a target given to a class-agnostic method."""


class UnsupportedModelError(ValueError):
    """A checkpoint whose architecture has no global self-attention to explain."""
