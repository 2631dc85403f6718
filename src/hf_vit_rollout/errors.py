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


class ExplanationWarning(UserWarning):
    """Something that changes a result without making it an error: an all-zero map, a mask that is
    skipped, a text that is truncated. Shown once per place by Python's default filter; turn it
    into an error with ``warnings.simplefilter("error", ExplanationWarning)``. Everything else the
    package has to say goes to the ``hf_vit_rollout`` logger."""
