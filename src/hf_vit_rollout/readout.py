"""The head applied to intermediate states: every layer read out by the model's own final norm and head.

LeGrad explains layer ``l`` by the score the model would give if layer ``l``'s output tokens were
its last: the final norm, pooling and head applied to them. :class:`LayerReadout` makes one forward
pass of the unchanged model do that for every readout layer at once, without a copy of the model's
code:

* each readout layer after the first gets its input as a fresh leaf (detached from the layer
  below), so the gradient of a layer's readout reaches that layer's attention map only through
  the layer itself: ``∂s^l/∂A^l`` for every ``l`` from one backward pass of ``Σ_l s^l``;
* the last readout layer's output is replaced by the outputs of all readout layers stacked along
  the batch axis (layer-major: rows ``l·B ... (l+1)·B - 1`` hold layer ``l``), so everything the
  model runs after it (final norm, pooling, classifier or projection, the image-text similarity)
  runs on every layer's states. The model's outputs then have a batch of ``S·B``; the last ``B``
  rows are the ordinary outputs.

Which layers can be read out is family knowledge (:func:`readout_layers`): every encoder layer of
a global-attention ViT; for a windowed model (Swin) the blocks of the last stage, the only ones
whose tokens have the head's width and grid.

Thread safety: the hooks act only for the thread that entered the context; other threads running
the model meanwhile get their usual outputs. On exit (also on error) every hook is removed.
"""

from __future__ import annotations

import threading

import torch
from torch import nn


def _hidden(output):
    """The hidden states of a layer's output (a tensor, or a tuple/list whose first item is one)."""
    return output[0] if isinstance(output, (tuple, list)) else output


def _with_hidden(output, hidden: torch.Tensor):
    if isinstance(output, (tuple, list)):
        return type(output)((hidden, *output[1:]))
    return hidden


class LayerReadout:
    """Context manager: one forward pass reads every layer of ``layers`` out through the model's head.

    Args:
        layers: the readout layers in forward order (each takes the previous one's output).
        indices: their attention-layer indices (the capture's layer numbers), default ``0 ... S-1``.

    Attributes:
        count: number of readout layers ``S``; the model's outputs have ``S·B`` rows while active.
        indices: the attention layers whose maps get a readout gradient.
    """

    def __init__(self, layers: list[nn.Module], indices: list[int] | None = None):
        if not layers:
            raise ValueError("no layers to read out")
        self.layers = list(layers)
        self.count = len(self.layers)
        self.indices = list(range(self.count)) if indices is None else list(indices)
        self._states: list[torch.Tensor] = []
        self._handles: list = []
        self._owner: int | None = None

    def _owned(self) -> bool:
        return threading.get_ident() == self._owner

    def _detach_input(self, module, args, kwargs):
        if not self._owned():
            return None
        if args:
            fresh = args[0].detach().requires_grad_(True)
            return (fresh, *args[1:]), kwargs
        fresh = kwargs["hidden_states"].detach().requires_grad_(True)
        return args, {**kwargs, "hidden_states": fresh}

    def _keep_output(self, last: bool):
        def hook(module, args, output):
            if not self._owned():
                return None
            self._states.append(_hidden(output))
            if not last:
                return None
            stacked, self._states = torch.cat(self._states), []
            return _with_hidden(output, stacked)

        return hook

    def __enter__(self) -> LayerReadout:
        self._owner = threading.get_ident()
        self._states = []
        try:
            for index, layer in enumerate(self.layers):
                if index:
                    self._handles.append(layer.register_forward_pre_hook(self._detach_input, with_kwargs=True))
                self._handles.append(layer.register_forward_hook(self._keep_output(index == self.count - 1)))
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._states = []


def readout_layers(vision_root: nn.Module, attention_modules, window_blocks, layout) -> tuple[list[nn.Module], list[int]]:
    """The layers whose token states the model's head can read, and their attention-layer indices.

    Args:
        vision_root: the vision tower.
        attention_modules: its recorded attention modules (one per attention layer, forward order).
        window_blocks: the windowed blocks of a windowed model (Swin family), else empty.
        layout: the token layout of the input (a windowed layout knows each block's stage).

    Returns:
        ``(layers, indices)``: for a global-attention ViT every encoder layer and ``0 ... L-1``; for
        a windowed model the last stage's blocks and their block indices.
    """
    if window_blocks:
        last = layout.blocks[-1].stage
        indices = [i for i, block in enumerate(layout.blocks) if block.stage == last]
        return [window_blocks[i] for i in indices], indices
    from .lrp.context import encoder_layers

    layers = encoder_layers(vision_root, attention_modules)
    return layers, list(range(len(layers)))
