"""The one place that touches the model: attention capture as a context manager, per thread.

A capture records only the forward passes that its own thread runs. Other threads that use the same
model at the same time — the explainer's ``predict``, another app request, a user's own
``model(...)`` calls — get their usual outputs and never reach the capture's callback.

How, for models whose attention modules dispatch through ``transformers``' ``AttentionInterface``
(every supported family except data2vec-vision):

* The vision tower's configs are pointed at one attention function registered by this package,
  :data:`ATTENTION_NAME`. In a thread with an active capture it runs the module's own eager attention
  (the code ``attn_implementation="eager"`` runs) and hands the ``(B, H, N, N)`` probabilities to the
  capture; in every other thread it calls the implementation the config had before (SDPA, eager,
  flash, ...), so their outputs are exactly what they were and nothing is recorded.
* That switch is reference-counted per model: the first capture to enter makes it, the last to
  exit restores the saved implementations. Concurrent captures share it.

Modules that do not dispatch through the interface fall back to a forward hook that acts only for
the capturing thread, with the model's configs set to ``"eager"`` for as long as a capture is
active. The hook either reads the attention from the module's output (``output_index``: Swin V2,
which returns it under ``output_attentions=True``) or, where a family gives a function instead of
an index (:mod:`hf_vit_rollout.families`), replaces the module's output in the capturing thread by
that function's recomputation, which returns the probabilities it used (Data2Vec-Vision, whose
SDPA module chose its kernel when it was built, re-runs its eager parent class; ViTDet, which
returns only a reshaped copy, records its own softmax). Other threads keep the module's output.

Eval mode: a model with modules in training mode is put in eval mode for as long as any capture is
active (reference-counted likewise) and restored afterwards; other threads see eval mode in that
window. A model already in eval mode (``from_pretrained`` returns one) is never changed.

Nothing else is changed: no parameter, ``requires_grad`` flag or ``.grad``. Gradients with respect
to attention are taken by the caller with ``torch.autograd.grad``.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
from collections.abc import Callable, Iterator

import torch
from torch import nn

logger = logging.getLogger(__name__)

#: Name of the attention function this package registers with ``transformers.AttentionInterface``.
ATTENTION_NAME = "hf_vit_rollout_capture"


class CaptureError(RuntimeError):
    """The model produced no usable attention maps."""


def _recorder_specs(model: nn.Module) -> list[tuple[type | None, str | None, int, str | None]]:
    """``(class, class_name, output_index, layer_name)`` of every module kind that records attention."""
    specs = []
    for module in model.modules():
        table = getattr(type(module), "_can_record_outputs", None) or {}
        entries = table.get("attentions")
        if entries is None:
            continue
        if not isinstance(entries, (list, tuple)):
            entries = [entries]
        for entry in entries:
            if isinstance(entry, type):
                specs.append((entry, None, 1, None))
            elif isinstance(entry, str):
                specs.append((None, entry, 1, None))
            else:  # transformers' OutputRecorder
                specs.append(
                    (
                        getattr(entry, "target_class", None),
                        getattr(entry, "class_name", None),
                        getattr(entry, "index", 1),
                        getattr(entry, "layer_name", None),
                    )
                )
    return specs


def find_attention_modules(model: nn.Module) -> list[tuple[str, nn.Module, int]]:
    """Self-attention modules of a ``transformers`` model, as ``(name, module, output_index)``.

    They are read from the ``_can_record_outputs["attentions"]`` tables that ``transformers`` models
    declare (the same mechanism ``output_attentions=True`` uses).
    """
    specs = _recorder_specs(model)
    found = []
    for name, module in model.named_modules():
        for target_class, class_name, index, layer_name in specs:
            if target_class is not None and not isinstance(module, target_class):
                continue
            if class_name is not None and not type(module).__name__.endswith(class_name):
                continue
            if layer_name is not None and layer_name not in name + ".":
                continue
            found.append((name, module, index))
            break
    return found


def _all_configs(modules: list[nn.Module]) -> list:
    """Every config object reachable from the modules (their own, nested sub-configs)."""
    seen: dict[int, object] = {}
    stack = [getattr(m, "config", None) for m in modules]
    while stack:
        config = stack.pop()
        if config is None or id(config) in seen or not hasattr(config, "_attn_implementation_internal"):
            continue
        seen[id(config)] = config
        for key in getattr(config, "sub_configs", {}) or {}:
            stack.append(getattr(config, key, None))
    return list(seen.values())


def _eager_function(module: nn.Module) -> Callable | None:
    """The module's own eager attention function, if its modelling file dispatches through the interface."""
    source = sys.modules.get(type(module).__module__)
    if source is None or not hasattr(source, "ALL_ATTENTION_FUNCTIONS"):
        return None
    return getattr(source, "eager_attention_forward", None)


# ---------------------------------------------------------------------------------------- per thread
_local = threading.local()


def _active_recorders() -> list:
    return getattr(_local, "recorders", None) or []


def set_attention_function(function: Callable | None) -> Callable | None:
    """Make ``function`` compute this thread's recorded attention instead of the module's eager code.

    For relevance propagation (:mod:`hf_vit_rollout.lrp`), whose attention function attaches LRP
    rules; ``None`` restores the module's own eager attention. Thread-local. Returns the previous one.
    """
    previous = getattr(_local, "attention_function", None)
    _local.attention_function = function
    return previous


@contextlib.contextmanager
def running_target() -> Iterator[None]:
    """While a callable target runs in this thread: forward passes of the captured model are refused
    (:func:`refuse_inside_target`), since they would be recorded into the call that asked for the target."""
    _local.target_depth = getattr(_local, "target_depth", 0) + 1
    try:
        yield
    finally:
        _local.target_depth -= 1


def refuse_inside_target(what: str) -> None:
    """Raise :class:`~hf_vit_rollout.TargetError` if this thread is inside a callable target."""
    if getattr(_local, "target_depth", 0):
        from .errors import TargetError

        raise TargetError(
            f"the callable target ran {what} while it was being explained; that pass would be mixed into the "
            "explanation. A target must compute its scores from the outputs it is given; call the model or "
            "predict() before or after the explainer call"
        )


def _dispatch_attention(module, query, key, value, attention_mask, **kwargs):
    """The registered attention function: eager and recorded for a capturing thread, else the original."""
    for recorder in reversed(_active_recorders()):
        if id(module) in recorder.module_ids:
            refuse_inside_target("the model again")
            function = getattr(_local, "attention_function", None) or _eager_function(module)
            outputs, weights = function(module, query, key, value, attention_mask, **kwargs)
            recorder.record(module, weights)
            return outputs, weights
    original = _SWITCHES.original_implementation(module.config)
    if original in (None, "eager", ATTENTION_NAME):  # ATTENTION_NAME: a copy made during a capture
        return _eager_function(module)(module, query, key, value, attention_mask, **kwargs)
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    return ALL_ATTENTION_FUNCTIONS[original](module, query, key, value, attention_mask, **kwargs)


def _dispatch_mask(*args, config=None, **kwargs):
    """The attention mask for a switched config: the eager (additive) mask in a capturing thread,
    else the mask of the implementation the config had before (so masked models, SigLIP 2's
    padding, stay masked: an unregistered name would make ``transformers`` build no mask at all)."""
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

    original = "eager" if _active_recorders() else _SWITCHES.original_implementation(config)
    if original in (None, ATTENTION_NAME) or original not in ALL_MASK_ATTENTION_FUNCTIONS:
        original = "eager"
    return ALL_MASK_ATTENTION_FUNCTIONS[original](*args, config=config, **kwargs)


def _register_attention_function() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(ATTENTION_NAME, _dispatch_attention)
    AttentionMaskInterface.register(ATTENTION_NAME, _dispatch_mask)


# ---------------------------------------------------------------------------------------- per model
class _Switches:
    """The model state changed for captures, reference-counted per config and per module.

    Counting per object, not per model, keeps overlapping captures of a model and of one of its
    submodules (``clf`` and ``clf.vit`` share a config) consistent: a config is switched by the
    first capture that needs it and restored by the last one that used it, and a module's
    ``training`` flag likewise.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._configs: dict[int, list] = {}  # id(config) -> [count, config, implementation before]
        self._modules: dict[int, list] = {}  # id(module) -> [count, module, training before]

    def original_implementation(self, config):
        """The implementation ``config`` had before any capture switched it."""
        entry = self._configs.get(id(config))
        return entry[2] if entry is not None else getattr(config, "_attn_implementation_internal", None)

    def acquire(self, model: nn.Module, configs: list, implementation: str) -> None:
        with self._lock:
            for config in configs:
                entry = self._configs.setdefault(id(config), [0, config, config._attn_implementation_internal])
                entry[0] += 1
                config._attn_implementation_internal = implementation
            for module in model.modules():
                entry = self._modules.setdefault(id(module), [0, module, module.training])
                entry[0] += 1
                if module.training:
                    module.training = False

    def release(self, model: nn.Module, configs: list) -> None:
        with self._lock:
            for config in configs:
                entry = self._configs[id(config)]
                entry[0] -= 1
                if entry[0] == 0:
                    config._attn_implementation_internal = entry[2]
                    del self._configs[id(config)]
            for module in model.modules():
                entry = self._modules[id(module)]
                entry[0] -= 1
                if entry[0] == 0:
                    if module.training != entry[2]:
                        module.training = entry[2]
                    del self._modules[id(module)]


_SWITCHES = _Switches()


class AttentionCapture:
    """Context manager that streams this thread's attention maps to ``on_attention(layer, attn)``.

    Args:
        model: a ``transformers`` vision model (all its configs and modules are restored on exit).
        on_attention: called once per self-attention layer per forward pass run *by the thread that
            entered the capture*, with the layer's forward index (0 = first layer) and its
            ``(B, H, N, N)`` attention probabilities (attached to the autograd graph when gradients
            are enabled).
        modules_root: capture only attention modules inside this submodule (e.g. the vision tower
            of a CLIP model, whose text tower has attention modules too); default the whole model.
        attention_modules: the result of :func:`find_attention_modules` for ``modules_root``, if
            the caller already has it (saves searching the model on every call); an entry's
            ``output_index`` may instead be a function ``(module, args, kwargs) -> (output,
            weights)`` that recomputes the module for the capturing thread (see above).

    Raises:
        CaptureError: on enter, if the model has no self-attention modules; during the forward pass,
            if a layer returns no attention weights (its implementation could not be switched).
    """

    def __init__(
        self,
        model: nn.Module,
        on_attention: Callable[[int, torch.Tensor], None],
        modules_root: nn.Module | None = None,
        attention_modules: list[tuple[str, nn.Module, int]] | None = None,
    ):
        self.model = model
        self.on_attention = on_attention
        self.num_layers = 0
        self._handles: list = []
        if attention_modules is None:
            attention_modules = find_attention_modules(model if modules_root is None else modules_root)
        self._modules = attention_modules
        if not self._modules:
            raise CaptureError(
                f"{type(model).__name__} has no global self-attention modules that expose attention "
                "maps; attention rollout needs a ViT-family transformer"
            )
        self.module_ids = {id(m) for _, m, _ in self._modules}
        self._names = {id(m): name for name, m, _ in self._modules}
        self._dispatched = all(_eager_function(m) is not None for _, m, _ in self._modules)
        self._configs = _all_configs([m for _, m, _ in self._modules])
        self._thread = None
        self._acquired = False

    def record(self, module: nn.Module, weights) -> None:
        """One layer's attention, from the dispatcher or the fallback hook (capturing thread only)."""
        if not isinstance(weights, torch.Tensor) or weights.dim() != 4:
            config = getattr(module, "config", None) or getattr(self.model, "config", None)
            raise CaptureError(
                f"attention module {self._names.get(id(module))!r} ({type(module).__name__}) returned no attention "
                f"maps: its attention implementation ({getattr(config, '_attn_implementation', None)!r}) does not "
                "expose them and could not be switched to 'eager'. Load the model with attn_implementation='eager'."
            )
        layer = self.num_layers
        self.num_layers += 1
        self.on_attention(layer, weights)

    def _hook(self, index):
        if callable(index):  # a family's own recomputation: (module, args, kwargs) -> (output, weights)

            def replace(module, args, kwargs, output):
                if threading.get_ident() != self._thread:
                    return None
                refuse_inside_target("the model again")
                output, weights = index(module, args, kwargs)
                self.record(module, weights)
                return output

            return replace

        def hook(module, args, output):
            if threading.get_ident() != self._thread:
                return
            refuse_inside_target("the model again")
            weights = output[index] if isinstance(output, (tuple, list)) and len(output) > index else None
            self.record(module, weights)

        return hook

    def __enter__(self) -> AttentionCapture:
        if self._acquired:
            raise RuntimeError("this AttentionCapture is already entered; make a new one for a nested capture")
        self.num_layers = 0
        self._thread = threading.get_ident()
        if self._dispatched:
            _register_attention_function()
        _SWITCHES.acquire(self.model, self._configs, ATTENTION_NAME if self._dispatched else "eager")
        self._acquired = True
        try:
            if not self._dispatched:
                for _, module, index in self._modules:
                    self._handles.append(module.register_forward_hook(self._hook(index), with_kwargs=callable(index)))
            _local.recorders = [*_active_recorders(), self]
        except BaseException:
            self._exit()
            raise
        return self

    def _exit(self) -> None:
        """Undo ``__enter__``; safe to call twice (the shared switch is released once)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        _local.recorders = [r for r in _active_recorders() if r is not self]
        if self._acquired:
            self._acquired = False
            _SWITCHES.release(self.model, self._configs)

    def __exit__(self, exc_type, exc, tb) -> None:
        self._exit()
