"""Global-attention ViTs: a class token (or none), extra prefix tokens, registers, then the patches.

Every family here keeps the ViT token layout (prefix tokens, then the patches in row-major order)
and records the model's own self-attention modules; each declares what comes before the patches
and which output tokens the prediction is read from (``"cls"``: the class token's row; ``"mean"``:
the mean of the patch tokens' rows). ``num_register_tokens`` and the patch size are read from the
config.

* **ViT, ViT-MSN, DINOv2 (with registers), DINOv3, CLIP's vision tower**: a class token, read out.
* **DeiT**: a class token and a distillation token; the class token is read out.
* **BEiT**: a class token; the mean of the patch tokens when the config says ``use_mean_pooling``.
* **I-JEPA, SigLIP's vision tower**: no class token; the mean of the patch tokens.
* **Data2Vec-Vision** (``Data2VecVisionModel``, ``...ForImageClassification``): BEiT's layout. Its
  attention module picks its kernel (SDPA or eager) when the model is built, so switching the config
  does not change it and the SDPA module returns no maps. The capture re-runs, for its own thread
  only, the eager parent class's forward on the same module (same weights, same relative position
  bias) and uses that output and its probabilities; other threads keep the SDPA output. The model
  is never rebuilt or reloaded.
* **ViT-MAE encoders** (``ViTMAEModel``; a ``ViTMAEForPreTraining`` checkpoint loads as its
  encoder): the embedding shuffles the patches by ``argsort(noise)`` and keeps the first
  ``(1 - mask_ratio)`` of them. With ``mask_ratio = 0`` every patch is kept; the explainer passes
  ``noise = 0, 1, ..., L-1`` so the order is the identity and token ``1 + k`` is patch ``k``.
  A checkpoint with ``mask_ratio > 0`` (the pre-training setting, 0.75) drops patches in every
  forward pass and is refused; load it with ``mask_ratio=0.0``. The explained output is the class
  token (``ViTMAEModel`` has no pooler; give a callable target to explain something else).
"""

from __future__ import annotations

import inspect

import torch

from ..errors import UnsupportedModelError
from .base import Family
from .tokens import TokenLayout


class GridFamily(Family):
    """A global-attention ViT whose tokens are ``[class] + extra + registers + patches``.

    Args:
        model_types: the ``model_type`` values it answers for.
        has_cls: whether a class token comes first.
        extra: prefix tokens besides the class token and the registers (DeiT's distillation token).
        pooling: ``"cls"`` or ``"mean"``: which output tokens the prediction is read from.
        mean_pooling_flag: read ``pooling`` from the config's ``use_mean_pooling`` (BEiT) instead.
    """

    def __init__(self, model_types=(), has_cls: bool = True, extra: int = 0, pooling: str = "cls", mean_pooling_flag: bool = False):
        self.model_types = tuple(model_types) or type(self).model_types
        self.has_cls, self.extra, self.pooling, self.mean_pooling_flag = has_cls, extra, pooling, mean_pooling_flag

    def check(self, config) -> None:
        """Refuse a config without a patch grid (no ``patch_size``)."""
        self._probe_layout(config)

    def layout(self, config, image_size, held=None, inputs=None) -> TokenLayout:
        pooling = self.pooling
        if self.mean_pooling_flag:
            pooling = "mean" if getattr(config, "use_mean_pooling", False) else "cls"
        return TokenLayout.of_grid(config, image_size, self.has_cls, self.extra, pooling)


# ------------------------------------------------------------------------------ Data2Vec-Vision
def _data2vec_eager(module, args, kwargs):
    """The eager forward of a Data2Vec-Vision self-attention module, with its probabilities."""
    from transformers.models.data2vec.modeling_data2vec_vision import Data2VecVisionSelfAttention

    bound = inspect.signature(Data2VecVisionSelfAttention.forward).bind(module, *args, **kwargs)
    bound.arguments["output_attentions"] = True
    output = Data2VecVisionSelfAttention.forward(*bound.args, **bound.kwargs)
    return output, output[1]


class Data2VecVisionFamily(GridFamily):
    model_types = ("data2vec-vision",)

    def __init__(self):
        super().__init__(mean_pooling_flag=True)

    def attention_setup(self, vision_root):
        """Every self-attention module, recorded by re-running its eager forward (see the module docstring)."""
        from transformers.models.data2vec.modeling_data2vec_vision import Data2VecVisionSelfAttention

        modules = [
            (name, module, _data2vec_eager)
            for name, module in vision_root.named_modules()
            if isinstance(module, Data2VecVisionSelfAttention)
        ]
        if not modules:
            raise UnsupportedModelError(f"{type(vision_root).__name__} has no Data2Vec-Vision self-attention modules")
        return [], {}, modules


# ------------------------------------------------------------------------------ ViT-MAE
class ViTMAEFamily(GridFamily):
    model_types = ("vit_mae",)  # the ViT layout: a class token, read out

    def check(self, config) -> None:
        ratio = float(getattr(config, "mask_ratio", 0.0) or 0.0)
        if ratio > 0:
            raise UnsupportedModelError(
                f"this ViT-MAE checkpoint has mask_ratio={ratio}: its forward pass drops {ratio:.0%} of the patches "
                "at random (the masked pre-training forward), so there is no whole image to explain. Load its "
                "encoder without masking: RolloutExplainer.from_pretrained(path, mask_ratio=0.0)"
            )

    def attention_setup(self, vision_root):
        if hasattr(vision_root, "decoder"):  # ViTMAEForPreTraining passed as a loaded model
            raise UnsupportedModelError(
                f"{type(vision_root).__name__} runs the masked pre-training forward (encoder, then a decoder that "
                "reconstructs the masked patches); explain its encoder instead: RolloutExplainer(model.vit, processor)"
                " with model.config.mask_ratio = 0.0"
            )
        return super().attention_setup(vision_root)

    def call_kwargs(self, vision_root, pixel_values: torch.Tensor) -> dict:
        """``noise = 0 ... L-1`` for every image: the patch shuffle becomes the identity."""
        layout = self.layout(vision_root.config, tuple(pixel_values.shape[-2:]))
        count = layout.grid_size[0] * layout.grid_size[1]
        noise = torch.arange(count, device=pixel_values.device, dtype=torch.float32)
        return {"noise": noise.expand(pixel_values.shape[0], -1)}


FAMILIES = (
    GridFamily(("vit", "vit_msn", "dinov2", "dinov2_with_registers", "dinov3_vit", "clip_vision_model", "clip")),
    GridFamily(("deit",), extra=1),  # + the distillation token
    GridFamily(("beit",), mean_pooling_flag=True),
    GridFamily(("ijepa", "siglip_vision_model", "siglip"), has_cls=False, pooling="mean"),
    Data2VecVisionFamily(),
    ViTMAEFamily(),
)
