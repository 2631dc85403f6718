"""Our LibraGrad against the authors' own gradient corrections (NightMachinery/pytorch-image-models-libragrad-v1,
``timm/night/decomposition.py``) on the same ViT weights and inputs.

The authors' corrections live in their fork of timm, a 5,500-line module that imports timm,
torchvision, kornia, IPython and their utility library at the top; none of that loads here. So this
script reads the pieces that are LibraGrad's backward pass for a ViT out of the authors' source with
:mod:`ast` and runs them unchanged:

* ``LayerNormDecomposed.forward`` (gradient mode ``"LineX_1"``: the variance detached),
* ``GELUDecomposed.forward`` (``"LineX_ZO"``: the gate ``Φ(x)`` detached),
* ``fair_qkv`` (``"LineX_1"``: queries and keys detached, so the attention weights are constants),
* ``NightSoftmax.forward`` (the attention softmax, and the head softmax of their ``S1`` mode: the
  explained score is the target's softmax probability),
* ``swap_backward`` from their utility library (``PyNight``, ``pynight/common_torch.py``),

with the settings of their ``"LibraGrad"`` preset (``decompv/x/gbrand.py``: ``LX1`` and ``S1``). A
pre-LN ViT forward pass over a Hugging Face ViT's weights strings them together (linear layers and
residual additions are not changed by LibraGrad), and Input × Gradient at the tokens entering the
first block, summed over the embedding (their ``blocks__0__CAT_s:sum``), is compared with
``RolloutExplainer(..., method="libragrad")``::

    git clone https://github.com/NightMachinery/pytorch-image-models-libragrad-v1 /tmp/timm-libragrad
    git clone https://github.com/NightMachinery/PyNight /tmp/PyNight
    PYTHONPATH=src python benchmarks/libragrad_compare.py --timm /tmp/timm-libragrad --pynight /tmp/PyNight

It prints, for the shipped demo ViT (its four example images) and seeded random ViTs with
perturbed biases, the largest absolute difference of the token maps relative to their largest
magnitude.
"""

from __future__ import annotations

import argparse
import ast
import math
import os
import types
from functools import partial

import torch
import torch.nn.functional as F
import transformers as T
from PIL import Image
from torch import nn

from hf_vit_rollout import RolloutExplainer
from hf_vit_rollout.demo import example_images


def _definitions(path: str, names: set[str]) -> str:
    """The source of the top-level functions and classes called ``names`` in the file at ``path``."""
    text = open(path).read()
    tree = ast.parse(text)
    found = [ast.get_source_segment(text, n) for n in tree.body
             if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name in names]
    if len(found) != len(names):
        raise SystemExit(f"{path} does not define all of {sorted(names)}")
    return "\n\n".join(found)


class _Dynamic(types.SimpleNamespace):
    """The authors' ``dynamic_obj`` settings object (attribute access plus ``get``)."""

    def get(self, name, default=None):
        return getattr(self, name, default)


def authors_rules(timm_root: str, pynight_root: str) -> dict:
    """The authors' rule code compiled into one namespace, with their LibraGrad preset's settings."""
    namespace = {
        "torch": torch, "nn": nn, "F": F, "math": math, "partial": partial,
        "dynamic_obj": _Dynamic(layer_norm_gradient_mode="LineX_1", gelu_gradient_mode="LineX_ZO",
                                attention_gradient_mode="LineX_1", softmax_gradient_mode=None,
                                softmax_competition_scale=1, layer_norm_attribute_bias_p=False,
                                gelu_attribute_bias_p=False, gbrand_forward_checks_p=False),
        "print_diag": lambda *a, **k: None,
        "decomposed_inputs_p": lambda inputs: False,
        "stacktrace_caller_line": lambda: "",
    }
    pynight = os.path.join(pynight_root, "pynight", "common_torch.py")
    exec(_definitions(pynight, {"swap_backward", "tensor_register_hook"}), namespace)
    exec(_definitions(os.path.join(pynight_root, "pynight", "common_obj.py"), {"delattr_force"}), namespace)
    decomposition = os.path.join(timm_root, "timm", "night", "decomposition.py")
    exec(_definitions(decomposition, {"phi", "normal_pdf", "gelu_deriv"}), namespace)
    exec(_definitions(decomposition, {"fair_qkv", "LayerNormDecomposed", "GELUDecomposed", "NightSoftmax"}), namespace)
    return namespace


def authors_libragrad(rules: dict, model, pixels: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
    """``(B, N)`` Input × Gradient of ``softmax(logits)[b, chosen[b]]`` with the authors' corrections."""

    def norm(module):
        layer = rules["LayerNormDecomposed"](module.normalized_shape, eps=module.eps)
        layer.load_state_dict(module.state_dict())
        return layer

    gelu, softmax = rules["GELUDecomposed"](), rules["NightSoftmax"](dim=-1)
    vit, heads = model.vit, model.config.num_attention_heads
    with torch.no_grad():
        tokens = vit.embeddings(pixels)
    x0 = tokens.clone().requires_grad_(True)
    x, (b, n, d) = x0, tokens.shape
    with torch.enable_grad():
        for layer in vit.layers:
            att = layer.attention
            h = norm(layer.layernorm_before)(x)
            q, k, v = (F.linear(h, p.weight, p.bias).view(b, n, heads, d // heads).transpose(1, 2)
                       for p in (att.q_proj, att.k_proj, att.v_proj))
            q, k, v = rules["fair_qkv"](q, k, v, gradient_mode="LineX_1")
            weights = softmax((q * (d // heads) ** -0.5) @ k.transpose(-2, -1), gradient_mode=None)
            x = x + F.linear((weights @ v).transpose(1, 2).reshape(b, n, d), att.o_proj.weight, att.o_proj.bias)
            h = gelu(F.linear(norm(layer.layernorm_after)(x), layer.mlp.fc1.weight, layer.mlp.fc1.bias))
            x = x + F.linear(h, layer.mlp.fc2.weight, layer.mlp.fc2.bias)
        logits = model.classifier(norm(vit.layernorm)(x)[:, 0])
        probability = softmax(logits, gradient_mode=None).gather(1, chosen[:, None])  # their S1 head softmax
        (grad,) = torch.autograd.grad(probability.sum(), x0)
    return (x0 * grad).sum(-1).detach()


def random_vit(seed: int):
    torch.manual_seed(seed)
    config = T.ViTConfig(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=128,
                         image_size=64, patch_size=8, num_labels=10)
    model = T.ViTForImageClassification(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timm", required=True, help="path of the authors' timm fork (pytorch-image-models-libragrad-v1)")
    parser.add_argument("--pynight", required=True, help="path of the authors' utility library (PyNight)")
    parser.add_argument("--models", type=int, default=3, help="random-weight ViTs (seeds 0, 1, ...)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    rules = authors_rules(args.timm, args.pynight)
    print(f"authors' rules from {args.timm} and {args.pynight}; transformers {T.__version__}, torch {torch.__version__}\n")
    demo = RolloutExplainer.from_pretrained("demo")
    images = [Image.open(p).convert("RGB") for p in example_images()]
    cases = [("demo ViT, its 4 example images, predicted classes", demo,
              demo.image_processor(images=images, return_tensors="pt")["pixel_values"], None)]
    for seed in range(args.models):
        model = random_vit(seed)
        explainer = RolloutExplainer(model, T.ViTImageProcessorPil(size={"height": 64, "width": 64}))
        pixels = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(seed))
        cases.append((f"random ViT seed {seed} (4 × 4 heads, 65 tokens), 4 images, classes 0-3", explainer, pixels, [0, 1, 2, 3]))
    print(f"{'case':64s} {'max |ours - theirs| / max |theirs|':>36s}")
    for name, explainer, pixels, targets in cases:
        ours = torch.stack([p.relevance[0] for p in _passes(explainer, pixels, targets)])
        with torch.no_grad():
            chosen = explainer.model(pixel_values=pixels).logits.argmax(-1) if targets is None else torch.tensor(targets)
        theirs = authors_libragrad(rules, explainer.model, pixels, chosen)
        print(f"{name:64s} {float((ours - theirs).abs().max() / theirs.abs().max()):36.2e}")


def _passes(explainer, pixels, targets):
    """Token relevance of every image (class token included) through the explainer's own stages."""
    from hf_vit_rollout import stages

    request = explainer.request(method="libragrad", target=targets)
    batch = [stages.PreparedImage(None, x, None, None if targets is None else targets[i]) for i, x in enumerate(pixels)]
    return stages.forward(explainer, batch, request)


if __name__ == "__main__":
    main()
