"""What the capture needs from a windowed model (Swin family): its blocks and their attention modules.

``transformers`` records Swin's attention once per *stage* (the last block's), so the attention
modules are found here, block by block, instead of from ``_can_record_outputs``: Swin's
``SwinAttention`` dispatches through ``AttentionInterface`` (so the per-thread capture of
:mod:`hf_vit_rollout.capture` records it like a ViT's), while Swin V2, Donut-Swin and
MaskFormer-Swin compute attention themselves and return it (output 1 of the block's
``attention.self``) only when the model is called with ``output_attentions=True`` (each family's
``forward_kwargs`` in :mod:`hf_vit_rollout.families.windowed`); the capture's thread-owned hooks
take it from there.

Swin and Donut-Swin overwrite a block's ``window_size`` / ``shift_size`` inside its forward when
the grid is no larger than a window, and keep the new values afterwards, which would change later
calls and race with concurrent calls of other input sizes. :func:`kept_window_geometry` lets only
calls that clamp the blocks alike run at once and puts the values back after them.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Iterator

from torch import nn


def find_window_blocks(model: nn.Module, block_class: str) -> list[nn.Module]:
    """Every module of ``model`` whose class is named ``block_class`` (a windowed block), in module
    (= forward) order."""
    return [module for module in model.modules() if type(module).__name__ == block_class]


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


class _Gate:
    """The windowed blocks of one model, shared by calls that clamp them the same way.

    ``geometry``: the ``(window, shift)`` per block that the calls now inside run with; ``saved``:
    the values the blocks held before the first of them entered; ``owners``: thread id -> depth.
    """

    def __init__(self):
        self.condition = threading.Condition()
        self.geometry = None
        self.saved: list = []
        self.owners: dict[int, int] = {}
        self.waiting = 0


_gates_lock = threading.Lock()
_gates: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # first block -> _Gate


def _gate(blocks: list[nn.Module]) -> _Gate:
    with _gates_lock:
        gate = _gates.get(blocks[0])
        if gate is None:
            gate = _gates[blocks[0]] = _Gate()
        return gate


def held_windows(blocks: list[nn.Module]) -> list[tuple[int, int]]:
    """``(window_size, shift_size)`` every block holds outside the explainer's calls: the values saved
    when the calls now running entered, else the blocks' own (a concurrent call's clamping is not
    what the next call starts from)."""
    gate = _gate(blocks)
    with gate.condition:
        if gate.owners:
            return [(int(window), int(shift)) for _, window, shift in gate.saved]
        return block_windows(blocks)


@contextlib.contextmanager
def kept_window_geometry(blocks: list[nn.Module], geometry=None) -> Iterator[None]:
    """Let this thread's forward passes run with the window geometry ``geometry``; restore on exit.

    Swin and Donut-Swin clamp a block's ``window_size`` / ``shift_size`` to the input inside their
    forward and keep the values, so two threads with inputs that clamp differently would run with
    each other's windows. Calls whose ``geometry`` (the ``(window, shift)`` per block that their
    input size gives, from :meth:`~hf_vit_rollout.families.window_layout.WindowedLayout.geometry`) is the same
    share the blocks at once; a call with another geometry waits until they have all left. The first
    call to enter saves the blocks' values and the last to leave puts them back, so the model is
    left as the first found it. ``None`` joins whatever calls are inside (or starts a group).

    Raises:
        RuntimeError: this thread is already inside a call with another geometry (a callable target
            or a nested call explaining another input size), which could never go on.
    """
    if not blocks:
        yield
        return
    gate = _gate(blocks)
    me = threading.get_ident()
    with gate.condition:
        if me in gate.owners:
            if geometry is not None and gate.geometry is not None and geometry != gate.geometry:
                raise RuntimeError(
                    "this thread is already running the model with another input size's window geometry "
                    "(a nested call from inside a call, e.g. from a callable target); explain the other "
                    "input size after the call returns"
                )
        else:
            gate.waiting += 1
            try:
                while gate.owners and not (geometry in (None, gate.geometry) and gate.waiting == 1):
                    gate.condition.wait()
            finally:
                gate.waiting -= 1
            if not gate.owners:
                gate.saved = [(block, block.window_size, block.shift_size) for block in blocks]
                gate.geometry = geometry
        if gate.geometry is None:
            gate.geometry = geometry
        gate.owners[me] = gate.owners.get(me, 0) + 1
    try:
        yield
    finally:
        with gate.condition:
            gate.owners[me] -= 1
            if not gate.owners[me]:
                del gate.owners[me]
            if not gate.owners:
                for block, window, shift in gate.saved:
                    if block.window_size != window or block.shift_size != shift:
                        block.window_size, block.shift_size = window, shift
                gate.saved, gate.geometry = [], None
                gate.condition.notify_all()
