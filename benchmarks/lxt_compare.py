"""Our AttnLRP against the reference implementation's rules (the ``lxt`` package), family by family.

``lxt`` is not a dependency. Run with an ``lxt`` source tree on the path, e.g.::

    pip download --no-deps -d /tmp/lxt lxt && tar xzf /tmp/lxt/lxt-*.tar.gz -C /tmp/lxt
    PYTHONPATH=src:/tmp/lxt/lxt-2.1 python benchmarks/lxt_compare.py

What it shows (measured with lxt 2.1 and transformers 5.24):

* whether ``import lxt.efficient`` (lxt's documented entry point) works with this transformers;
* whether lxt's own attention patch (``patch_attention``) leaves the model runnable;
* lxt's efficient AttnLRP rules applied by hand the way transformers 5 allows (its LayerNorm and
  activation ``forward`` patches on the classes, its attention wrapper registered through
  ``AttentionInterface``), versus :func:`hf_vit_rollout.lrp.attnlrp_relevance`, on small random
  checkpoints of every family: the largest absolute difference of the token relevance, relative to
  its largest magnitude, with our default ε = 1e-6 and with ε = 0: lxt's efficient mode uses the
  plain gradient for linear layers (LRP-0, which passes gradient through outputs whose
  pre-activation is exactly 0, e.g. zero-initialised class tokens of random checkpoints, where
  the ε-rule passes none), and a 1e-10 stabiliser in the identity rule.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import subprocess
import sys

import torch
import transformers as T

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32, patch_size=8)
FAMILIES = {
    "vit": (T.ViTConfig, T.ViTForImageClassification, {}),
    "deit": (T.DeiTConfig, T.DeiTForImageClassificationWithTeacher, {}),
    "beit (relative position bias)": (T.BeitConfig, T.BeitForImageClassification, {"use_relative_position_bias": True}),
    "dinov2": (T.Dinov2Config, T.Dinov2ForImageClassification, {}),
    "clip vision": (T.CLIPVisionConfig, T.CLIPVisionModel, {}),
    "siglip vision": (T.SiglipVisionConfig, T.SiglipVisionModel, {}),
    "ijepa": (T.IJepaConfig, T.IJepaForImageClassification, {}),
}


_PATCH_CHECK = """
import importlib, torch, transformers as T
try:
    importlib.import_module("lxt.efficient")
except Exception:
    pass
patches = importlib.import_module("lxt.efficient.patches")
from transformers.models.vit import modeling_vit
patches.patch_attention(modeling_vit)
torch.manual_seed(0)
config = T.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, image_size=32, patch_size=8)
model = T.ViTForImageClassification(config).eval()
model.set_attn_implementation("eager")
try:
    model(pixel_values=torch.randn(1, 3, 32, 32))
    print("fresh process, lxt patch_attention(modeling_vit), then a ViT forward: ok")
except Exception as exc:
    print(f"fresh process, lxt patch_attention(modeling_vit), then a ViT forward: {type(exc).__name__}: {exc}")
"""


def _try(what, fn):
    try:
        fn()
        print(f"{what}: ok")
        return True
    except Exception as exc:  # report, do not stop
        print(f"{what}: {type(exc).__name__}: {exc}")
        return False


def _score(out):
    if getattr(out, "logits", None) is not None:
        return out.logits[:, 1]
    return out.last_hidden_state[:, :, :4].mean(dim=(1, 2))


def _lxt_relevance(model, pixels):
    """Gradient × input at the first encoder layer's input, with lxt's patches active."""
    from hf_vit_rollout.lrp import encoder_layers

    layer = encoder_layers(model)[0]
    seen = {}

    def leaf(module, args):
        seen["x"] = args[0].detach().requires_grad_(True)
        return (seen["x"], *args[1:])

    handle = layer.register_forward_pre_hook(leaf)
    try:
        score = _score(model(pixel_values=pixels))
        (grad,) = torch.autograd.grad(score.sum(), seen["x"])
    finally:
        handle.remove()
    return (seen["x"] * grad).sum(-1)


def main() -> None:
    from hf_vit_rollout.lrp import ATTNLRP, attnlrp_relevance

    print(f"transformers {T.__version__}, torch {torch.__version__}")
    try:
        import lxt
    except ImportError:
        print("lxt is not importable: put an lxt source tree on PYTHONPATH (see the docstring)")
        return
    print(f"lxt from {os.path.dirname(lxt.__file__)}")
    _try("import lxt.efficient (documented entry point)", lambda: importlib.import_module("lxt.efficient"))
    patches = importlib.import_module("lxt.efficient.patches")
    from transformers.activations import ACT2CLS
    from transformers.models.vit import modeling_vit

    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))

    # Our relevance first (before lxt's class-level patches change every LayerNorm in the process).
    ours, ours_lrp0, models = {}, {}, {}
    for name, (config_class, model_class, extra) in FAMILIES.items():
        torch.manual_seed(0)
        config = config_class(**SMALL, **extra)
        if "Classification" in model_class.__name__:
            config.num_labels = 3
        models[name] = model_class(config).eval()
        ours[name] = attnlrp_relevance(models[name], pixels, target=_score).token_relevance
        lrp0 = dataclasses.replace(ATTNLRP, epsilon=0.0)
        ours_lrp0[name] = attnlrp_relevance(models[name], pixels, target=_score, rules=lrp0).token_relevance

    patches.patch_method(patches.layer_norm_forward, torch.nn.LayerNorm)
    classes = {entry[0] if isinstance(entry, tuple) else entry for entry in ACT2CLS.values()}
    for cls in classes:
        if isinstance(cls, type):
            patches.patch_method(patches.non_linear_forward, cls, keep_original=True)
    T.AttentionInterface.register("lxt_eager", patches.wrap_attention_forward(modeling_vit.eager_attention_forward))
    print(f"\nmax |ours - lxt| / max |lxt| over the token relevance of 2 images")
    print(f"{'family':32s} {'ours, ε = 1e-6':>16s} {'ours, ε = 0':>14s}")
    for name, model in models.items():
        model.set_attn_implementation("lxt_eager")
        theirs = _lxt_relevance(model, pixels).detach()
        scale = theirs.abs().max()
        diff = float((ours[name] - theirs).abs().max() / scale)
        diff0 = float((ours_lrp0[name] - theirs).abs().max() / scale)
        print(f"{name:32s} {diff:16.2e} {diff0:14.2e}")
    print()
    # lxt's own attention patch, in a fresh process (it rewrites transformers' attention registry).
    out = subprocess.run([sys.executable, "-c", _PATCH_CHECK], capture_output=True, text=True)
    print(out.stdout.strip() or out.stderr.strip().splitlines()[-1])


if __name__ == "__main__":
    main()
