"""What the capture needs from a windowed model (Swin family): its blocks and their attention modules.

``transformers`` records Swin's attention once per *stage* (the last block's), so the attention
modules are found here, block by block, instead of from ``_can_record_outputs``: Swin's
``SwinAttention`` dispatches through ``AttentionInterface`` (so the per-thread capture of
:mod:`hf_vit_rollout.capture` records it like a ViT's), while Swin V2, Donut-Swin and
MaskFormer-Swin compute attention themselves and return it (output 1 of the block's
``attention.self``) only when the model is called with ``output_attentions=True``
(:data:`FORWARD_KWARGS`); the capture's thread-owned hooks take it from there.

Swin and Donut-Swin overwrite a block's ``window_size`` / ``shift_size`` inside its forward when
the grid is no larger than a window, and keep the new values afterwards, which would change later
calls. :func:`kept_window_geometry` puts them back after an explainer call.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Iterator

from torch import nn

#: model_type -> class name of its windowed block.
BLOCK_CLASSES: dict[str, str] = {
    "swin": "SwinLayer",
    "swinv2": "Swinv2Layer",
    "donut-swin": "DonutSwinLayer",
    "maskformer-swin": "MaskFormerSwinLayer",
}

#: Model keyword arguments under which each family's blocks return their attention. Swin's eager
#: attention always returns it; MaskFormer-Swin's encoder (transformers 5.24) fails on
#: ``output_attentions=True`` alone but runs with hidden states too.
FORWARD_KWARGS: dict[str, dict] = {
    "swin": {},
    "swinv2": {"output_attentions": True},
    "donut-swin": {"output_attentions": True},
    "maskformer-swin": {"output_attentions": True, "output_hidden_states": True},
}


def find_window_blocks(model: nn.Module, model_type: str | None) -> list[nn.Module]:
    """Every windowed block of ``model`` in module (= forward) order; empty for other families."""
    wanted = BLOCK_CLASSES.get(model_type)
    return [module for module in model.modules() if wanted is not None and type(module).__name__ == wanted]


def window_attention_modules(model: nn.Module, blocks: list[nn.Module]) -> list[tuple[str, nn.Module, int]]:
    """``(name, module, output_index)`` of every block's attention, as the capture takes them."""
    names = {id(module): name for name, module in model.named_modules()}
    found = []
    for block in blocks:
        attention = getattr(block.attention, "self", block.attention)
        found.append((names.get(id(attention), type(attention).__name__), attention, 1))
    return found


def block_windows(blocks: list[nn.Module]) -> list[tuple[int, int]]:
    """``(window_size, shift_size)`` every block holds now."""
    return [(int(block.window_size), int(block.shift_size)) for block in blocks]


_kept_lock = threading.Lock()
_kept: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # first block -> [count, saved values]


@contextlib.contextmanager
def kept_window_geometry(blocks: list[nn.Module]) -> Iterator[None]:
    """Restore every block's ``window_size`` / ``shift_size`` on exit if a forward pass changed them.

    Reference-counted per model like the capture's switches: the first call to enter saves the
    values, the last to exit restores them, so overlapping calls from several threads leave the
    model as the first found it. (Swin's own clamping inside concurrent forward passes of different
    input sizes is a race in ``transformers`` itself.)
    """
    if not blocks:
        yield
        return
    key = blocks[0]
    with _kept_lock:
        entry = _kept.get(key)
        if entry is None:
            entry = _kept[key] = [0, [(block, block.window_size, block.shift_size) for block in blocks]]
        entry[0] += 1
    try:
        yield
    finally:
        with _kept_lock:
            entry[0] -= 1
            if entry[0] == 0:
                del _kept[key]
                for block, window, shift in entry[1]:
                    if block.window_size != window or block.shift_size != shift:
                        block.window_size, block.shift_size = window, shift


def attention_setup(vision_root: nn.Module, model_type: str | None) -> tuple[list[nn.Module], dict, list]:
    """What a capture of this model needs: ``(window blocks, forward kwargs, attention modules)``.

    Windowed models (Swin family) give their blocks, the keyword arguments that make them return
    attention, and the blocks' attention modules; global-attention ViTs give no blocks, no extra
    keyword arguments and their self-attention modules.

    Raises:
        UnsupportedModelError: a windowed family whose blocks are missing, or no attention modules.
    """
    from .capture import find_attention_modules
    from .errors import UnsupportedModelError

    name = type(vision_root).__name__
    blocks = find_window_blocks(vision_root, model_type)
    if model_type in FORWARD_KWARGS and not blocks:
        raise UnsupportedModelError(f"{name} is a {model_type!r} model without its windowed blocks")
    modules = window_attention_modules(vision_root, blocks) if blocks else find_attention_modules(vision_root)
    if not modules:
        raise UnsupportedModelError(
            f"{name} has no global self-attention modules exposing attention maps, so attention rollout cannot explain it"
        )
    return blocks, dict(FORWARD_KWARGS.get(model_type, {})), modules
