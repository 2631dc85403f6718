"""SigLIP 2: variable-resolution patch sequences with an attention mask, each image on its own grid.

The SigLIP 2 image processor resizes every image, aspect kept, to the largest size of whole
``patch × patch`` tiles with at most ``max_num_patches`` patches, flattens the tiles in row-major
order and pads the sequence to ``max_num_patches`` with zero patches. The model gets
``pixel_values (B, P, C·p·p)``, ``pixel_attention_mask (B, P)`` (1 on real patches) and
``spatial_shapes (B, 2)`` (each image's ``h × w`` grid). Token ``k < h·w`` of image ``b`` is patch
``(k // w, k % w)`` of *its own* grid; tokens from ``h·w`` on are padding.

* **Masked keys**: padding keys get the mask's minimum logit, so their attention is exactly zero
  and no real token reads them; padding queries still attend to real tokens, but their rows are
  never reached from the explained row, so they carry no relevance.
* **What the map explains**: there is no class token. As for SigLIP (v1), the explained output is
  the mean of the image's real patch tokens (``1/(h·w)`` on each, zero on padding). The vision
  tower's pooling head (a learned probe attending over those tokens) is not part of the chain;
  to explain the pooled embedding itself, give a callable target such as
  ``lambda out: out.pooler_output.sum(-1)``, whose gradient reaches every token through the
  probe's attention (gradient methods weigh the chain by it).
* **Batch independence**: an image's grid, mask and padding depend only on that image (the
  processor pads to ``max_num_patches``, not to the longest image of a batch).
* Methods: the product methods (``rollout``, ``grad_rollout``, ``gae``, ``transformer_attribution``)
  and the input-relevance ones; ``flow`` and ``attention`` take one weight row for the whole batch,
  and LeGrad normalises over the padded sequence, so those three are refused for SigLIP 2.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch

from ..images import PreparedImage, load_image
from ..placement import Placement
from .base import Family
from .tokens import OneStepPerLayer, _pair


@dataclass(frozen=True)
class PaddedPatchLayout(OneStepPerLayer):
    """A padded patch sequence; image ``b``'s first ``h_b·w_b`` tokens are its grid, row-major.

    Attributes:
        num_tokens: ``P``, the padded sequence length (``max_num_patches``).
        grids: ``(h_b, w_b)`` of every image of the batch.
    """

    num_tokens: int
    grids: tuple[tuple[int, int], ...]
    num_prefix_tokens: int = 0
    cls_index: int | None = None
    pooling: str = "mean"
    #: combine kinds this layout cannot serve, with the reason (checked by the stages).
    refused_combines: ClassVar[dict] = {
        "flow": "SigLIP 2's images each have their own grid and padding, and attention flow takes one sink row "
        "for the whole batch; use rollout, grad_rollout, gae or transformer_attribution",
        "layer": "SigLIP 2's images each have their own grid and padding, and the raw-attention method takes one "
        "output row for the whole batch; use rollout, grad_rollout, gae or transformer_attribution",
        "sum": "LeGrad's min-max normalisation runs over every token of the padded sequence, padding included; "
        "use rollout, grad_rollout, gae or transformer_attribution",
    }

    @property
    def grid_size(self) -> tuple[int, int]:
        """The grid of a one-image layout (postprocess builds one per image)."""
        if len(set(self.grids)) != 1:
            raise ValueError(f"the images of this batch have different patch grids {self.grids}")
        return self.grids[0]

    def output_weights(self, dtype=torch.float32, device=None) -> torch.Tensor:
        """``(B, P)``: ``1/(h_b·w_b)`` on image ``b``'s real patches, zero on its padding."""
        weights = torch.zeros(len(self.grids), self.num_tokens, dtype=dtype, device=device)
        for b, (h, w) in enumerate(self.grids):
            weights[b, : h * w] = 1.0 / (h * w)
        return weights

    def patch_relevance(self, relevance: torch.Tensor) -> torch.Tensor:
        """``(k, P)`` relevance of one image → ``(k, h, w)`` on that image's grid."""
        h, w = self.grid_size
        return relevance[:, : h * w].reshape(-1, h, w)

    def attention_mismatch(self, layer: int, attention: torch.Tensor) -> str | None:
        if attention.shape[-1] == self.num_tokens:
            return None
        return f"layer {layer} attends over {attention.shape[-1]} tokens, the patch sequence has {self.num_tokens}"

    def layer_map(self, method_map: Callable, layer: int, attention: torch.Tensor, grad, settings: tuple) -> torch.Tensor:
        return method_map(attention, grad, *settings, None)



class Siglip2Family(Family):
    model_types = ("siglip2_vision_model", "siglip2")
    #: per-image model inputs besides ``pixel_values``
    input_names = ("pixel_attention_mask", "spatial_shapes")

    def layout(self, config, image_size, held=None, inputs=None) -> PaddedPatchLayout:
        if inputs is None or "spatial_shapes" not in inputs:
            raise ValueError(
                "SigLIP 2 takes patch sequences with pixel_attention_mask and spatial_shapes; explain images with "
                "the explainer's __call__ (relevance_maps takes (B, C, H, W) pixels of fixed-grid models only)"
            )
        shapes = inputs["spatial_shapes"].reshape(-1, 2).tolist()
        return PaddedPatchLayout(int(image_size[0]), tuple((int(h), int(w)) for h, w in shapes))

    def prepare(self, explainer, source, target, where):
        """One image → a :class:`~hf_vit_rollout.images.PreparedImage` with ``pixel_values (P, C·p·p)``
        and ``inputs = {pixel_attention_mask (P,), spatial_shapes (2,)}``."""
        image = load_image(source, where)
        processor = explainer.image_processor
        try:
            out = processor(images=image, return_tensors="pt")
        except Exception as exc:  # processors raise many types for odd images
            raise ValueError(f"the image processor could not prepare {where}: {exc}") from exc
        h, w = (int(v) for v in out["spatial_shapes"][0])
        patch = _pair(explainer.patch_size)
        resized = (h * patch[0], w * patch[1]) if getattr(processor, "do_resize", True) else (image.height, image.width)
        placement = Placement((image.width, image.height), resized, (0, 0), patch, (h, w))
        inputs = {name: out[name][0] for name in self.input_names}
        return PreparedImage(image, out["pixel_values"][0], placement, target, inputs)


FAMILIES = (Siglip2Family(),)
