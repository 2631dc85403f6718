"""Our LeGrad against the authors' own code (WalBouss/LeGrad, ``LeWrapper.compute_legrad_clip``) on the
same CLIP weights and inputs.

The authors' code wraps OpenCLIP models and imports ``open_clip`` and ``torchvision`` at the top of
its modules; neither loads here. So this script reads the two functions that are the method,
``LeWrapper.compute_legrad_clip`` (``legrad/wrapper.py``) and ``min_max`` (``legrad/utils.py``), out
of the authors' source with :mod:`ast`, and runs them unchanged on a Hugging Face CLIP: the
OpenCLIP attributes they read are given from our model's own tensors (every block's output as
``feat_post_mlp``, ``[N, B, D]``; every layer's attention probabilities as ``attn.attention_maps``,
``[B·H, N, N]``, the very tensor the forward pass used; ``post_layernorm`` as ``ln_post``;
``visual_projection.weight.T`` as ``proj``). They need ``einops``::

    git clone https://github.com/WalBouss/LeGrad /tmp/LeGrad          # or any copy of the repository
    pip install --no-deps --target /tmp/refs/site einops
    PYTHONPATH=src:/tmp/refs/site python benchmarks/legrad_compare.py --legrad /tmp/LeGrad

What it prints, for random-weight CLIP models (seeded) and text prompts:

* the authors' map against ours with the authors' readout of every layer (``ln_post`` of the
  *mean of all tokens*, then the projection, as their CLIP code does), given to the explainer as a
  callable target: the largest absolute difference of the min-max normalised, upsampled maps;
* the same against ours with the model's own readout (the class token through ``post_layernorm``,
  what ``text=`` explains), which is what the package computes by default: how far the two
  readouts' maps are apart (largest difference and Spearman ρ);
* both for the authors' default layers (``layer_index=-2``: the last two) and for every layer.
"""

from __future__ import annotations

import argparse
import ast
import math
import os
import sys
import types

import torch
import torch.nn.functional as F
import transformers as T

from hf_vit_rollout import RolloutExplainer


def _source_function(path: str, name: str, owner: str | None = None):
    """The source of function ``name`` (a method of class ``owner``) in the file at ``path``."""
    tree = ast.parse(open(path).read())
    nodes = tree.body
    if owner is not None:
        nodes = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == owner).body
    node = next(n for n in nodes if isinstance(n, ast.FunctionDef) and n.name == name)
    return ast.get_source_segment(open(path).read(), node)


def authors_functions(root: str):
    """``compute_legrad_clip`` and ``min_max`` compiled from the authors' files (nothing else of them runs)."""
    from einops import rearrange

    namespace = {"torch": torch, "F": F, "math": math, "rearrange": rearrange}
    exec(_source_function(os.path.join(root, "legrad", "utils.py"), "min_max"), namespace)
    exec(_source_function(os.path.join(root, "legrad", "wrapper.py"), "compute_legrad_clip", "LeWrapper"), namespace)
    return namespace["compute_legrad_clip"]


def clip_model(seed: int, layers: int = 4):
    torch.manual_seed(seed)
    config = T.CLIPConfig(
        vision_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=layers, num_attention_heads=4,
                           image_size=64, patch_size=8),
        text_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, vocab_size=99,
                         bos_token_id=0, eos_token_id=1, pad_token_id=1),
        projection_dim=32,
    )
    return T.CLIPModel(config).eval()


class _FlatAttention:
    """An attention function computing the probabilities as ``[B·H, N, N]`` (OpenCLIP's layout), kept
    per layer; the forward pass uses exactly that tensor (viewed as ``[B, H, N, N]``)."""

    def __init__(self):
        self.maps: list[torch.Tensor] = []

    def __call__(self, module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
        b, h, n, d = query.shape
        scores = torch.matmul(query, key.transpose(-1, -2)) * scaling
        if attention_mask is not None:
            scores = scores + attention_mask
        flat = torch.softmax(scores.reshape(b * h, n, n), dim=-1)
        self.maps.append(flat)
        return torch.matmul(flat.view(b, h, n, n), value).transpose(1, 2).contiguous(), flat.view(b, h, n, n)


def authors_map(compute, model, pixel, text_embedding, starting_depth):
    """The authors' ``compute_legrad_clip`` on our model: ``[1, P, H, W]`` for one image and ``P`` prompts."""
    prompts = text_embedding.shape[0]
    attention = _FlatAttention()
    T.AttentionInterface.register("legrad_compare_flat", attention)
    vision = model.vision_model
    outputs = []
    handles = [layer.register_forward_hook(lambda m, a, out: outputs.append(out[0] if isinstance(out, tuple) else out))
               for layer in vision.encoder.layers]
    model.set_attn_implementation("legrad_compare_flat")
    try:
        with torch.enable_grad():
            vision(pixel_values=pixel.expand(prompts, -1, -1, -1).clone().requires_grad_(True))
    finally:
        model.set_attn_implementation("sdpa")
        for handle in handles:
            handle.remove()
    blocks = torch.nn.ModuleList()
    for out, flat in zip(outputs, attention.maps):
        block = torch.nn.Module()
        block.feat_post_mlp = out.permute(1, 0, 2)  # [N, B, D], as OpenCLIP's blocks keep it
        block.attn = torch.nn.Module()
        block.attn.attention_maps = flat
        blocks.append(block)
    visual = torch.nn.Module()
    visual.transformer = types.SimpleNamespace(resblocks=blocks)
    visual.ln_post = vision.post_layernorm
    visual.proj = model.visual_projection.weight.T
    wrapper = types.SimpleNamespace(visual=visual, starting_depth=starting_depth,
                                    patch_size=model.config.vision_config.patch_size)
    return compute(wrapper, text_embedding, image=None).detach()


def ours_map(explainer, pixel, text_embedding, prompt, start_layer, readout):
    """Our LeGrad for one prompt, min-max normalised and upsampled as the authors' code does."""
    model = explainer.model
    direction = text_embedding[prompt]
    if readout == "authors":  # ln_post(mean of all tokens) @ proj, normalised, · text embedding

        def target(out):
            image = model.visual_projection(model.vision_model.post_layernorm(out.last_hidden_state.mean(1)))
            return F.normalize(image, dim=-1) @ direction

    else:  # the model's own readout: the class token through post_layernorm and the projection

        def target(out):
            return F.normalize(model.visual_projection(out.pooler_output), dim=-1) @ direction

    grid = explainer.relevance_maps(pixel, target=target, method="legrad", start_layer=start_layer)
    up = F.interpolate(grid[:, None], scale_factor=model.config.vision_config.patch_size, mode="bilinear")
    flat = up.flatten(1)
    return ((flat - flat.amin(1, keepdim=True)) / (flat.amax(1, keepdim=True) - flat.amin(1, keepdim=True))).view_as(up)


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ra, rb = a.flatten().argsort().argsort().double(), b.flatten().argsort().argsort().double()
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float((ra * rb).sum() / (ra.norm() * rb.norm()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--legrad", required=True, help="path of a copy of the authors' repository (WalBouss/LeGrad)")
    parser.add_argument("--models", type=int, default=3, help="random-weight CLIP models (seeds 0, 1, ...)")
    parser.add_argument("--images", type=int, default=2, help="random images per model")
    args = parser.parse_args()
    torch.set_num_threads(2)
    compute = authors_functions(args.legrad)
    print(f"authors' compute_legrad_clip from {args.legrad}; transformers {T.__version__}, torch {torch.__version__}")
    print(f"{args.models} random CLIP vision towers (4 layers × 4 heads, 64 px, 8 px patches: 65 tokens), "
          f"{args.images} random images each, 2 random text directions per image\n")
    rows = {}
    for seed in range(args.models):
        model = clip_model(seed)
        processor = T.CLIPImageProcessorPil(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64})
        explainer = RolloutExplainer(model, processor)
        text = F.normalize(torch.randn(2, model.config.projection_dim, generator=torch.Generator().manual_seed(seed)), dim=-1)
        for index in range(args.images):
            pixel = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(100 * seed + index))
            for depth, name in ((-2, "authors' default layers (last 2)"), (0, "every layer")):
                theirs = authors_map(compute, model, pixel, text, depth % model.config.vision_config.num_hidden_layers)
                for prompt in range(2):
                    for readout in ("authors", "model"):
                        ours = ours_map(explainer, pixel, text, prompt, depth, readout)[0, 0]
                        diff = float((ours - theirs[0, prompt]).abs().max())
                        rows.setdefault((name, readout), []).append((diff, spearman(ours, theirs[0, prompt])))
    print(f"{'layers':34s} {'our readout':42s} {'max |ours - theirs|':>20s} {'Spearman ρ (min)':>17s}")
    labels = {"authors": "authors' (ln_post of the token mean)", "model": "the model's own (class token), default"}
    for (name, readout), values in rows.items():
        worst = max(d for d, _ in values)
        rho = min(r for _, r in values)
        print(f"{name:34s} {labels[readout]:42s} {worst:20.2e} {rho:17.4f}")
    print(f"\n({len(next(iter(rows.values())))} maps per row; maps are min-max normalised to [0, 1])")


if __name__ == "__main__":
    sys.exit(main())
