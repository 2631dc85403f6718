"""The one place that touches the model: attention capture as a context manager.

:class:`AttentionCapture` switches the model to eager attention (fused SDPA/flash kernels return no
attention maps), puts it in eval mode, and registers a forward hook on every self-attention module
that hands each layer's ``(B, H, N, N)`` attention probabilities to a callback, numbered by the
order in which the layers ran. On exit — normal or by exception — it removes its hooks and restores
the attention implementation of every config and the ``training`` flag of every module. It never
changes parameters, ``requires_grad`` flags or ``.grad``: gradients with respect to attention are
taken by the caller with ``torch.autograd.grad``, which does not accumulate into parameters.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch import nn

logger = logging.getLogger(__name__)


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


class AttentionCapture:
    """Context manager that streams every layer's attention map to ``on_attention(layer, attn)``.

    Args:
        model: a ``transformers`` vision model (all its configs and modules are restored on exit).
        on_attention: called once per self-attention layer per forward pass, with the layer's
            forward index (0 = first layer) and its ``(B, H, N, N)`` attention probabilities (still
            attached to the autograd graph when gradients are enabled).
        modules_root: capture only attention modules inside this submodule (e.g. the vision tower
            of a CLIP model, whose text tower has attention modules too); default the whole model.
        attention_modules: the result of :func:`find_attention_modules` for ``modules_root``, if
            the caller already has it (saves searching the model on every call).

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
        self._saved_impl: list[tuple[object, object]] = []
        self._saved_training: list[tuple[nn.Module, bool]] = []
        if attention_modules is None:
            attention_modules = find_attention_modules(model if modules_root is None else modules_root)
        self._modules = attention_modules
        if not self._modules:
            raise CaptureError(
                f"{type(model).__name__} has no global self-attention modules that expose attention "
                "maps; attention rollout needs a ViT-family transformer"
            )

    def _hook(self, name: str, index: int):
        def hook(module, args, output):
            weights = output[index] if isinstance(output, (tuple, list)) and len(output) > index else None
            if not isinstance(weights, torch.Tensor) or weights.dim() != 4:
                raise CaptureError(
                    f"attention module {name!r} ({type(module).__name__}) returned no attention maps: "
                    f"its attention implementation ({self._impl_of(module)!r}) does not expose them and "
                    "could not be switched to 'eager'. Load the model with attn_implementation='eager'."
                )
            layer = self.num_layers
            self.num_layers += 1
            self.on_attention(layer, weights)

        return hook

    def _impl_of(self, module: nn.Module):
        config = getattr(module, "config", None) or getattr(self.model, "config", None)
        return getattr(config, "_attn_implementation", None)

    def __enter__(self) -> AttentionCapture:
        self.num_layers = 0
        modules = list(self.model.modules())
        self._saved_impl = [(c, c._attn_implementation_internal) for c in _all_configs(modules)]
        self._saved_training = [(m, m.training) for m in modules]
        try:
            if any(impl != "eager" for _, impl in self._saved_impl):
                setter = getattr(self.model, "set_attn_implementation", None)
                if setter is not None:
                    setter("eager")
            if any(training for _, training in self._saved_training):
                self.model.eval()
            for name, module, index in self._modules:
                self._handles.append(module.register_forward_hook(self._hook(name, index)))
        except BaseException:
            self._restore()
            raise
        return self

    def _restore(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for config, impl in self._saved_impl:
            config._attn_implementation_internal = impl
        for module, training in self._saved_training:
            if module.training != training:
                module.training = training

    def __exit__(self, exc_type, exc, tb) -> None:
        self._restore()
