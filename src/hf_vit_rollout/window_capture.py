"""Capture of windowed blocks (Swin family): each block's window attention and where its windows lay.

Windowed models do not fit :class:`~hf_vit_rollout.capture.AttentionCapture`'s per-attention-module
hooks: ``transformers`` records Swin's attention once per *stage* (the last block's), and the
window attention means nothing without the block's grid, window and shift, which only the block
knows (Swin clamps them at every call, from the actual grid). So :class:`WindowBlockCapture` hooks
the blocks themselves (``SwinLayer``, ``Swinv2Layer``, ...): a forward hook reads the block's
``(B·nW, heads, w², w²)`` attention (output 1), its input grid (argument ``input_dimensions``) and
its ``window_size`` / ``shift_size`` *after* the call, and hands them on.

Like the attention capture it switches the model to eager attention and eval mode, and on exit
(normal or by exception) removes its hooks and restores every config's attention implementation,
every ``training`` flag and every block's ``window_size`` / ``shift_size`` (Swin overwrites them
when a grid is smaller than a window, which would otherwise outlive the call). Hooks act only for
forward passes run by the thread that entered the capture.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import torch
from torch import nn

from .capture import CaptureError, _all_configs

#: model_type -> class name of its windowed block.
BLOCK_CLASSES: dict[str, str] = {
    "swin": "SwinLayer",
    "swinv2": "Swinv2Layer",
    "donut-swin": "DonutSwinLayer",
    "maskformer-swin": "MaskFormerSwinLayer",
}

#: Keyword arguments the model call needs for the blocks to return attention (the V2-style
#: blocks return it only when asked; Swin's eager attention always does). MaskFormer-Swin's encoder
#: (transformers 5.24) fails on ``output_attentions=True`` alone, but runs with hidden states too.
FORWARD_KWARGS: dict[str, dict] = {
    "swin": {"output_attentions": True},
    "swinv2": {"output_attentions": True},
    "donut-swin": {"output_attentions": True},
    "maskformer-swin": {"output_attentions": True, "output_hidden_states": True},
}


def find_window_blocks(model: nn.Module, model_type: str) -> list[tuple[str, nn.Module]]:
    """``(name, block)`` of every windowed block of ``model``, in module (= forward) order."""
    wanted = BLOCK_CLASSES.get(model_type)
    return [(name, module) for name, module in model.named_modules() if type(module).__name__ == wanted]


class WindowBlockCapture:
    """Context manager that streams every block's window attention to ``on_block``.

    Args:
        model: the ``transformers`` model (all its configs and modules are restored on exit).
        blocks: :func:`find_window_blocks` of it.
        on_block: ``on_block(index, attention, (grid, window, shift))`` once per block per forward
            pass, ``index`` counting blocks in the order they ran; ``attention`` is
            ``(B·nW, heads, w², w²)``, still attached to the autograd graph when gradients are on.

    Raises:
        CaptureError: if a block returns no attention (its implementation could not be switched).
    """

    def __init__(self, model: nn.Module, blocks: list[tuple[str, nn.Module]], on_block: Callable):
        if not blocks:
            raise CaptureError(f"{type(model).__name__} has no windowed blocks to capture")
        self.model = model
        self.blocks = blocks
        self.on_block = on_block
        self.num_blocks = 0
        self._owner: int | None = None
        self._handles: list = []
        self._saved: list[tuple[object, str, object]] = []

    def _hook(self, name: str):
        def hook(module, args, kwargs, output):
            if threading.get_ident() != self._owner:
                return
            dims = kwargs.get("input_dimensions", args[1] if len(args) > 1 else None)
            attention = output[1] if isinstance(output, (tuple, list)) and len(output) > 1 else None
            if not isinstance(attention, torch.Tensor) or attention.dim() != 4 or dims is None:
                raise CaptureError(
                    f"windowed block {name!r} ({type(module).__name__}) returned no attention maps; "
                    "load the model with attn_implementation='eager'"
                )
            index = self.num_blocks
            self.num_blocks += 1
            geometry = ((int(dims[0]), int(dims[1])), int(module.window_size), int(module.shift_size))
            self.on_block(index, attention, geometry)

        return hook

    def __enter__(self) -> WindowBlockCapture:
        self.num_blocks = 0
        self._owner = threading.get_ident()
        modules = list(self.model.modules())
        self._saved = [(c, "_attn_implementation_internal", c._attn_implementation_internal) for c in _all_configs(modules)]
        self._saved += [(m, "training", m.training) for m in modules]
        for _, block in self.blocks:
            self._saved += [(block, "window_size", block.window_size), (block, "shift_size", block.shift_size)]
        try:
            setter = getattr(self.model, "set_attn_implementation", None)
            if setter is not None and any(c._attn_implementation_internal != "eager" for c in _all_configs(modules)):
                setter("eager")
            self.model.eval()
            for name, block in self.blocks:
                self._handles.append(block.register_forward_hook(self._hook(name), with_kwargs=True))
        except BaseException:
            self._restore()
            raise
        return self

    def _restore(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for owner, attribute, value in self._saved:
            setattr(owner, attribute, value)

    def __exit__(self, exc_type, exc, tb) -> None:
        self._restore()


def windowed_relevance(
    model, pixel_values: torch.Tensor, spec, method_args: tuple, score_fn=None, *, forward_kwargs=None, buffer_bytes=2**28
):
    """One forward (and backward) pass of a windowed model, folded into first-stage token relevance.

    The method is used only through its registry entry: ``spec.layer_map`` turns every block's
    folded attention (and gradient) into a ``(B, N_s, N_s)`` factor, the patch mergings add their
    ``(B, N_{s+1}, N_s)`` factors, and a :class:`~hf_vit_rollout.methods.chain.ChainFold` multiplies
    them in arrival order, forward for attention-only methods and backward for gradient methods.

    Args:
        model: a Swin-family ``transformers`` model (the vision model itself).
        pixel_values: ``(B, C, H, W)`` inputs on the model's device.
        spec: a :class:`~hf_vit_rollout.methods.MethodSpec` with ``combine == "product"``.
        method_args: ``(head_fusion, discard_ratio, keep_index)`` for ``spec.layer_map``.
        score_fn: ``outputs -> (B,)`` scores to explain; required when ``spec.needs_gradient``.
        forward_kwargs: extra model keyword arguments (e.g. ``interpolate_pos_encoding``).
        buffer_bytes: :class:`~hf_vit_rollout.methods.chain.ChainFold`'s buffer for attention-only
            methods (default 256 MiB: Swin-T's maps at 224 px, 1 image, fit, so the output row is
            folded through them at ``O(N²)`` per map instead of ``N³`` products).

    Returns:
        ``(layout, relevance, outputs)``: the :class:`~hf_vit_rollout.windows.WindowedLayout`,
        ``(B, N_0)`` relevance over the first stage's tokens, and the model's outputs.
    """
    from .methods.chain import ChainFold
    from .windows import BlockGeometry, WindowedLayout, fold_layer_map

    if spec.combine != "product":
        raise ValueError(
            f"method {spec.name!r} combines layers by {spec.combine!r}; windowed models change their token set "
            "between stages, so only methods that multiply per-layer maps (rollout, grad_rollout, gae) apply"
        )
    config = model.config
    layout = WindowedLayout.from_config(config, tuple(pixel_values.shape[-2:]))
    batch = pixel_values.shape[0]
    steps = layout.block_steps()
    direction = "backward" if spec.needs_gradient else "forward"
    fold = ChainFold(layout.output_weights(device=pixel_values.device), direction, buffer_bytes=buffer_bytes)
    for step, merge in layout.merge_maps(batch, device=pixel_values.device).items():
        fold.add(step, merge)
    first: list[torch.Tensor] = []

    def on_block(index, attention, geometry):
        if index >= len(steps) or geometry[0] != layout.blocks[index].grid:
            raise CaptureError(
                f"block {index} ran on a {geometry[0]} grid, but the config describes {len(steps)} blocks on "
                f"{', '.join(str(g) for g in layout.stage_grids)}; the model's token layout is not supported"
            )
        block = BlockGeometry(layout.blocks[index].stage, *geometry)
        frozen = attention.detach()
        if spec.needs_gradient:
            attention.register_hook(lambda grad: fold.add(steps[index], fold_layer_map(spec.layer_map, frozen, grad, block, *method_args)))
            if index == 0:
                first.append(attention)
        else:
            fold.add(steps[index], fold_layer_map(spec.layer_map, frozen, None, block, *method_args))

    kwargs = {**FORWARD_KWARGS[config.model_type], **(forward_kwargs or {})}
    with WindowBlockCapture(model, find_window_blocks(model, config.model_type), on_block) as capture:
        with torch.enable_grad() if spec.needs_gradient else torch.no_grad():
            outputs = model(pixel_values=pixel_values, **kwargs)
            if spec.needs_gradient:
                fold.start_backward(len(layout.chain_steps()))
                torch.autograd.grad(score_fn(outputs).sum(), first)
        if capture.num_blocks != len(steps):
            raise CaptureError(f"{capture.num_blocks} windowed blocks ran, the config describes {len(steps)}")
    return layout, fold.relevance(len(layout.chain_steps())).detach().float(), outputs
