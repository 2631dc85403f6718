"""TimeSformer: divided space-time attention, each of its two attentions folded into token space.

``TimesformerForVideoClassification`` and ``TimesformerModel`` (``attention_type =
"divided_space_time"``, the default) cut each of a clip's ``T`` frames into an ``h × w`` grid of
patches (one ``Conv2d``, so a "tubelet" is one frame) and keep, in every layer, the hidden states of

    N = 1 + h·w·T tokens: the class token, then the patches **space-major**,
    token ``1 + i·T + t`` = patch ``i = row·w + col`` of frame ``t``.

That is the model's own order (``TimesformerEmbeddings`` reshapes ``(B·T, h·w)`` patches to ``(B,
h·w, T)``; every layer's ``reshape(B, h, w, T, D)`` reads it so); the token-space maps below, the
relevance rows and ``token_relevance`` use it, and ``mask`` is its ``(T, h, w)`` reshape.

Each ``TimesformerLayer`` runs (``transformers`` 5, ``modeling_timesformer.py``)::

    p  ← p + temporal_dense(Attn_T(LN_T(p)))                  patches only; the class token is not touched
    x  ← [cls, p]
    x  ← x + Attn_S(LN(x))    per frame over [cls, frame t's patches]; the class token's T outputs averaged
    x  ← x + MLP(LN(x))

so a layer is two residual attention blocks, temporal then spatial, each with its own skip
connection (the spatial block's skip is the state *after* the temporal block: ``init_cls_token``
and ``temporal_embedding`` in the model's code). ``temporal_dense`` is a linear map applied to the
temporal branch after the attention's own output projection, like any value/output projection part
of the branch, which no attention method models. The MLP is token-wise. So the chain has **two
steps per layer**, temporal (step ``2l``) then spatial (step ``2l + 1``), and every chain method
(rollout, grad_rollout, gae, flow) runs unchanged on ``2L`` steps of ``(B, N, N)`` maps. The
``layer=`` of method ``"attention"`` and ``start_layer=`` count these steps.

**The folded maps** are exactly how each attention mixes the value vectors of the ``N`` tokens
(attention output row ``= Σ_k M[row, k]·v_k``):

* **Temporal step** (``Attn_T``: ``(B·h·w, heads, T, T)``, row ``b·h·w + i``): ``M[1+i·T+t,
  1+i·T+t'] = A_i[t, t']`` (each patch position attends across the frames at that position); zero
  between different positions. The class token takes no part: its row and column are **zero**
  (it has no temporal branch; its residual identity carries it unchanged).
* **Spatial step** (``Attn_S``: ``(B·T, heads, 1+h·w, 1+h·w)``, row ``b·T + t``, the class token
  copied into every frame): patch rows ``M[1+i·T+t, 1+j·T+t] = A_t[1+i, 1+j]`` and ``M[1+i·T+t, 0]
  = A_t[1+i, 0]`` (within its frame, and the class token); zero across frames. The class token's
  row is **the average of its per-frame rows**, the way the model averages its ``T`` outputs:
  ``M[0, 0] = mean_t A_t[0, 0]``, ``M[0, 1+j·T+t] = A_t[0, 1+j] / T``. Every copy of the class
  token has the same value vector, so this row is exact and sums to one.
* **Gradients** are folded as the gradient with respect to ``M`` (the block's output depends on its
  per-frame maps only through ``M``, so this is the chain rule, not a choice): one-to-one where an
  entry of ``M`` is one entry of ``A`` (every temporal entry, every spatial patch row); on the class
  row ``∂s/∂M[0, 1+j·T+t] = T·∂s/∂A_t[0, 1+j]`` and ``∂s/∂M[0, 0] = Σ_t ∂s/∂A_t[0, 0]``. Hence
  ``M ⊙ ∂s/∂M`` is, entry by entry, the sum of the per-frame ``A ⊙ ∂s/∂A`` it gathers (the
  class token's ``T`` per-frame gradients on itself are equal, so clamping before or after the sum
  agrees). The temporal map's class row and column get zero gradient.

**What the methods multiply**, per step, on the folded map ``Ā`` (heads fused): rollout
``norm(0.5·Ā + 0.5·I)`` (the class token's temporal row is then ``e_cls``: it maps to itself),
gradient rollout ``norm(0.5·max(Ā⊙∇, 0) + 0.5·I)``, GAE ``I + mean_h max(∇A ⊙ A, 0)``, the
identity being the step's own skip connection; the product runs over the ``2L`` steps, last step
leftmost, and the explained row is the class token's (the classifier reads it). ``discard_ratio``
counts all ``N²`` entries of a folded map, most of which are structural zeros (a temporal row has
``T`` nonzeros, a spatial patch row ``1 + h·w``), as for Swin's folded windows
(:mod:`hf_vit_rollout.windows`); a ratio below the structural-zero share discards nothing.
Above it, the first entries to go are the class token's spatial row: it spreads the class token's
attention over all ``T·h·w`` patches (each entry ``1/T`` of a per-frame one), so rollout's usual
``discard_ratio = 0.9`` leaves the class token attending only to itself and the map empty. Rollout's
default here is therefore ``discard_ratio = 0`` (recorded in ``params``); a ratio given explicitly is
used as given. Gradient rollout keeps its default: in ``A ⊙ ∇A`` the ``1/T`` and the gradient's ``T``
cancel, so the class row is on the scale of the others.

Refused, with the reason: the LRP methods (``transformer_attribution``, ``attnlrp``, ``cp_lrp``,
``libragrad``: the attention is computed inline, not through ``transformers``' attention interface),
``legrad`` (its layer readout pairs each encoder layer with one attention map; a TimeSformer layer
has two), method ``"attention"`` on a temporal step (the class token takes no part in it), and the
other ``attention_type`` values.

Capture: ``TimesformerSelfAttention`` computes ``softmax(q·kᵀ)`` inline and returns the
probabilities only with ``output_attentions=True``, which the temporal attention is never called
with, so the capture re-runs the module's forward for its own thread with ``output_attentions=True``
and uses that output and its probabilities (the Data2Vec-Vision pattern of
:mod:`hf_vit_rollout.families.grid`); other threads keep the module's own output.

Input: a clip of exactly ``num_frames`` frames at the config's ``image_size`` (the layers read the
patch grid's width from the config), as the checkpoint's ``VideoMAEImageProcessor`` makes it; the
result is a :class:`~hf_vit_rollout.families.video.VideoExplanation` with ``mask (T, h, w)``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch

from ..errors import InputError, UnsupportedModelError
from ..tokens import OneStepPerLayer, _pair
from .video import VideoFamily


def fold_temporal(attention: torch.Tensor, positions: int, frames: int) -> torch.Tensor:
    """A temporal attention (or its gradient) as a ``(B, heads, N, N)`` token-space map.

    Args:
        attention: ``(B·h·w, heads, T, T)``; row ``b·h·w + i`` is patch position ``i`` of clip ``b``.
        positions: ``h·w``; frames: ``T``.

    Returns:
        ``(B, heads, N, N)``, ``N = 1 + h·w·T``: ``out[b, :, 1+i·T+t, 1+i·T+u] = attention[b·h·w+i, :, t, u]``,
        zero elsewhere (the class token's row and column included).
    """
    heads = attention.shape[1]
    per_clip = attention.reshape(-1, positions, heads, frames, frames).permute(0, 2, 1, 3, 4)  # (B, H, hw, T, T)
    eye = torch.eye(positions, dtype=attention.dtype, device=attention.device)
    patches = torch.einsum("bhitu,ij->bhitju", per_clip, eye).reshape(-1, heads, positions * frames, positions * frames)
    return torch.nn.functional.pad(patches, (1, 0, 1, 0))


def fold_spatial(attention: torch.Tensor, positions: int, frames: int, gradient: bool = False) -> torch.Tensor:
    """A spatial attention (or, with ``gradient``, its gradient) as a ``(B, heads, N, N)`` map.

    Args:
        attention: ``(B·T, heads, 1+h·w, 1+h·w)``; row ``b·T + t`` is frame ``t`` of clip ``b``, with
            the class token first.
        positions: ``h·w``; frames: ``T``.
        gradient: fold a gradient (the class row summed and scaled by ``T``, see the module
            docstring) instead of probabilities (the class row averaged over frames).

    Returns:
        ``(B, heads, N, N)``, ``N = 1 + h·w·T``, zero across frames.
    """
    heads = attention.shape[1]
    per_clip = attention.reshape(-1, frames, heads, 1 + positions, 1 + positions).transpose(1, 2)  # (B, H, T, 1+hw, 1+hw)
    batch, tokens = per_clip.shape[0], positions * frames
    eye = torch.eye(frames, dtype=attention.dtype, device=attention.device)
    out = attention.new_zeros(batch, heads, 1 + tokens, 1 + tokens)
    out[:, :, 1:, 1:] = torch.einsum("bhtij,tu->bhitju", per_clip[..., 1:, 1:], eye).reshape(batch, heads, tokens, tokens)
    out[:, :, 1:, 0] = per_clip[..., 1:, 0].transpose(2, 3).reshape(batch, heads, tokens)
    cls_to_patches = per_clip[..., 0, 1:].transpose(2, 3).reshape(batch, heads, tokens)  # (B, H, hw·T), space-major
    if gradient:
        out[:, :, 0, 0] = per_clip[..., 0, 0].sum(-1)
        out[:, :, 0, 1:] = cls_to_patches * frames
    else:
        out[:, :, 0, 0] = per_clip[..., 0, 0].mean(-1)
        out[:, :, 0, 1:] = cls_to_patches / frames
    return out


_LRP = (
    "TimeSformer's attention modules compute q·kᵀ, the softmax and A·v inline in their own forward (not "
    "through transformers' attention interface), so no LRP rule can be attached to them; use rollout, "
    "grad_rollout, gae or flow"
)
_LEGRAD = (
    "LeGrad is not supported for TimeSformer yet: its layer readout pairs each encoder layer with one "
    "attention map, and a TimeSformer layer has two (temporal, then spatial); use rollout, grad_rollout, gae or flow"
)


@dataclass(frozen=True)
class TimesformerLayout(OneStepPerLayer):
    """``[class token, h·w·T patches]``, space-major (token ``1 + i·T + t``); two chain steps per layer.

    Attributes:
        time: ``T`` frames; grid_size: ``(h, w)`` patches per frame.
    """

    time: int
    grid_size: tuple[int, int]
    num_prefix_tokens: int = 1
    cls_index: int | None = 0
    pooling: str = "cls"
    hierarchical: ClassVar[bool] = False

    @property
    def positions(self) -> int:
        return self.grid_size[0] * self.grid_size[1]

    @property
    def num_tokens(self) -> int:
        return 1 + self.positions * self.time

    def output_weights(self, dtype=torch.float32, device=None) -> torch.Tensor:
        """One-hot on the class token (the classifier reads it)."""
        weights = torch.zeros(self.num_tokens, dtype=dtype, device=device)
        weights[0] = 1.0
        return weights

    def patch_relevance(self, relevance: torch.Tensor) -> torch.Tensor:
        """``(B, N)`` → ``(B, T, h, w)`` (the space-major tokens put in frame order)."""
        return relevance[:, 1:].reshape(-1, *self.grid_size, self.time).permute(0, 3, 1, 2)

    def _expected(self, layer: int) -> tuple[int, int, str]:
        if layer % 2 == 0:
            return self.time, self.positions, f"temporal attention of layer {layer // 2}"
        return 1 + self.positions, self.time, f"spatial attention of layer {layer // 2}"

    def attention_mismatch(self, layer: int, attention: torch.Tensor) -> str | None:
        size, per_clip, what = self._expected(layer)
        if attention.dim() == 4 and attention.shape[-2:] == (size, size) and attention.shape[0] % per_clip == 0:
            return None
        return (
            f"attention step {layer} ({what}) has shape {tuple(attention.shape)}, but the config describes "
            f"{self.time} frames of {self.grid_size[0]}×{self.grid_size[1]} patches: {per_clip} maps of {size}×{size} per clip"
        )

    def full_attention(self, layer: int, attention: torch.Tensor, gradient: bool = False) -> torch.Tensor:
        """Step ``layer``'s attention (or gradient) folded to ``(B, heads, N, N)`` (module docstring)."""
        if layer % 2 == 0:
            return fold_temporal(attention, self.positions, self.time)
        return fold_spatial(attention, self.positions, self.time, gradient)

    def layer_map(self, method_map: Callable, layer: int, attention: torch.Tensor, grad, settings: tuple) -> torch.Tensor:
        """Step ``layer``'s ``(B, N, N)`` factor: ``method_map`` on the folded map, one clip at a time."""
        per_clip = self._expected(layer)[1]
        maps = []
        for start in range(0, attention.shape[0], per_clip):
            part = slice(start, start + per_clip)
            folded = self.full_attention(layer, attention[part])
            folded_grad = None if grad is None else self.full_attention(layer, grad[part], gradient=True)
            maps.append(method_map(folded, folded_grad, *settings, self.cls_index))
        return torch.cat(maps)

    def ratio_for(self, request) -> float:
        """The discard ratio in effect: the given one; else ``0`` for ``rollout`` (see the module
        docstring: its default ``0.9`` would discard the class token's spatial rows and leave no map),
        the method's default for the others."""
        if request.discard_ratio is None and request.method == "rollout":
            return 0.0
        return request.ratio

    def method_refusal(self, spec, layer: int) -> str | None:
        """Why ``spec`` (at attention step ``layer`` for method ``"attention"``) cannot run here, or ``None``."""
        if spec.rules is not None:
            return _LRP
        if "layer_readout" in spec.needs:
            return _LEGRAD
        if spec.combine == "layer" and layer % 2 == 0:
            return (
                f"attention step {layer} is the temporal attention of layer {layer // 2}, in which the class token "
                f"(the explained row) takes no part; pick a spatial step (an odd layer, e.g. layer={layer + 1})"
            )
        return None


def _timesformer_eager(module, args, kwargs):
    """Re-run a ``TimesformerSelfAttention`` with ``output_attentions=True``: ``(its output, (B', heads, n, n))``."""
    from transformers.models.timesformer.modeling_timesformer import TimesformerSelfAttention

    bound = inspect.signature(TimesformerSelfAttention.forward).bind(module, *args, **kwargs)
    asked = bound.arguments.get("output_attentions", False)
    bound.arguments["output_attentions"] = True
    context, probabilities = TimesformerSelfAttention.forward(*bound.args, **bound.kwargs)
    return ((context, probabilities) if asked else (context,)), probabilities


class TimesformerFamily(VideoFamily):
    """Clips of single-frame "tubelets"; the divided attention folded step by step (module docstring)."""

    model_types = ("timesformer",)

    def check(self, config) -> None:
        kind = getattr(config, "attention_type", "divided_space_time")
        if kind == "space_only":
            raise UnsupportedModelError(
                "this TimeSformer checkpoint has attention_type='space_only': every frame runs through the model on "
                "its own and the classifier gives one row per frame, not one per clip; only 'divided_space_time' "
                "(the default) is supported"
            )
        if kind != "divided_space_time":
            raise UnsupportedModelError(
                f"this TimeSformer checkpoint has attention_type={kind!r}; only 'divided_space_time' (the default, "
                "temporal then spatial attention in every layer) is supported yet"
            )

    @staticmethod
    def _tubelet(config) -> tuple[int, int, int]:
        return (1, *_pair(config.patch_size))

    def layout(self, config, image_size, held=None, inputs=None) -> TimesformerLayout:
        expected = _pair(config.image_size)
        if tuple(int(s) for s in image_size) != expected:
            raise InputError(
                f"a TimeSformer takes frames of exactly {expected[0]}×{expected[1]} pixels (image_size in its config: "
                f"its layers read the patch grid's width from it), got {int(image_size[0])}×{int(image_size[1])}; "
                "use the checkpoint's image processor, which resizes and crops to that size"
            )
        _, ph, pw = self._tubelet(config)
        return TimesformerLayout(int(config.num_frames), (expected[0] // ph, expected[1] // pw))

    def results(self, explainer, prepared, passed, request, index):
        """As for VideoMAE and ViViT, with the discard ratio that was in effect recorded in ``params``."""
        layout = self.layout(explainer.model.config, tuple(prepared.pixel_values.shape[-2:]))
        request = request.updated(discard_ratio=layout.ratio_for(request))
        return super().results(explainer, prepared, passed, request, index)

    def attention_setup(self, vision_root):
        """Every layer's temporal then spatial self-attention, recorded by re-running its forward."""
        from transformers.models.timesformer.modeling_timesformer import TimesformerLayer

        modules = []
        for name, layer in vision_root.named_modules():
            if isinstance(layer, TimesformerLayer) and hasattr(layer, "temporal_attention"):
                modules.append((f"{name}.temporal_attention.attention", layer.temporal_attention.attention, _timesformer_eager))
                modules.append((f"{name}.attention.attention", layer.attention.attention, _timesformer_eager))
        if not modules:
            raise UnsupportedModelError(
                f"{type(vision_root).__name__} has no TimeSformer layers with divided space-time attention"
            )
        return [], {}, modules


FAMILIES = (TimesformerFamily(),)
