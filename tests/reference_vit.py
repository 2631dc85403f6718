"""Independent references: a ViT/DeiT forward in plain torch from a checkpoint's weights, and the
explanation methods computed from it as their papers define them.

Nothing here imports ``hf_vit_rollout`` or ``transformers``' modelling code: the weights are read
from the checkpoint's ``model.safetensors`` and ``config.json``, the forward pass is written out
(pre-LN blocks, exact GELU, one class token, plus DeiT's distillation token), and every relevance
rule is an explicit message-passing step ``R_out → R_in`` over the saved activations (no
gradient × input shortcut, no hooks). Autograd is used only where a method asks for an ordinary
gradient (GAE, Transformer Attribution's ``∇A``, LeGrad, LibraGrad).

Methods, for one image (``(3, H, W)`` pixel values) and one class ``c``:

* :func:`attention_rollout`: Abnar & Zuidema (2020), ``Â = norm(0.5·mean_h A + 0.5·I)`` multiplied
  from the first layer up; optionally the original tool's ``discard_ratio`` (the smallest entries of
  the fused map zeroed, except the class token's self-attention).
* :func:`gae`: Chefer, Gur & Wolf (ICCV 2021): ``R ← R + mean_h((∇A ⊙ A)⁺)·R`` from ``R = I``.
* :func:`transformer_attribution`: Chefer, Gur & Wolf (CVPR 2021), their published
  ``ViT_LRP.py``/``layers_ours.py`` rules: LRP-αβ (α=1, β=0, bias ignored) for linear layers,
  identity for LayerNorm, GELU and softmax, ``R_x = x ⊙ ∂Z/∂x · R/Z`` halved per operand for the two
  attention products, the normalised addition for the residuals, relevance summed at fan-outs;
  one unit of relevance on the class's logit. Then ``mean_h((∇A ⊙ R_A)⁺)`` rolled out with the
  identity from ``start_layer``.
* :func:`attnlrp`: Achtibat et al. (ICML 2024): LRP-ε for linear layers (bias absorbs),
  LayerNorm with its std held constant and LRP-0 on the remaining affine map, identity for GELU,
  the softmax rule ``R_s = s ⊙ (R_A − A·Σ_j R_A)``, the uniform rule (half to each operand) for
  ``q·kᵀ`` and ``A·v``, LRP-0 for the residual additions; the logit's value as starting relevance,
  read at the first block's input and summed over the embedding axis.
* :func:`cp_lrp`: Ali et al. (ICML 2022): the same, except that ``A·v`` is linear in ``v`` with
  ``A`` held constant: all of its relevance goes to ``v``, none to ``q`` and ``k``.
* :func:`legrad`: Bousselham et al. (2025): each layer's output read out through the final
  LayerNorm and classifier; ``mean_i mean_h max(∂s^l/∂A^l, 0)`` summed over the layers from
  ``start_layer``, minus its minimum over the patch tokens.
* :func:`libragrad`: Mehri et al. (CVPR 2025) as the package documents it: input × gradient of the
  class's softmax probability through a forward whose LayerNorm std, GELU gate ``Φ(x)`` and
  attention weights are held constant.

Every result is the ``(N,)`` relevance of all tokens (class token, [distillation token], patches).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

DTYPE = torch.float64


@dataclass
class Block:
    ln1_w: torch.Tensor
    ln1_b: torch.Tensor
    q_w: torch.Tensor
    q_b: torch.Tensor
    k_w: torch.Tensor
    k_b: torch.Tensor
    v_w: torch.Tensor
    v_b: torch.Tensor
    o_w: torch.Tensor
    o_b: torch.Tensor
    ln2_w: torch.Tensor
    ln2_b: torch.Tensor
    fc1_w: torch.Tensor
    fc1_b: torch.Tensor
    fc2_w: torch.Tensor
    fc2_b: torch.Tensor


@dataclass
class Weights:
    """A ViT or DeiT image classifier's parameters, in float64."""

    patch_w: torch.Tensor
    patch_b: torch.Tensor
    prefix: torch.Tensor  # (P, D): class token [, distillation token]
    position: torch.Tensor  # (N, D)
    blocks: list[Block]
    ln_w: torch.Tensor
    ln_b: torch.Tensor
    head_w: torch.Tensor
    head_b: torch.Tensor
    heads: int
    eps: float
    patch_size: int

    @property
    def num_prefix(self) -> int:
        return self.prefix.shape[0]


def load_weights(folder) -> Weights:
    """Read a saved ``ViTForImageClassification`` or ``DeiTForImageClassification`` checkpoint."""
    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    state = {k: v.to(DTYPE) for k, v in load_file(str(folder / "model.safetensors")).items()}
    kind = config["model_type"]
    if kind not in ("vit", "deit"):
        raise ValueError(f"reference ViT reads vit and deit checkpoints, not {kind}")
    root = f"{kind}."
    emb = root + "embeddings."
    prefix = [state[emb + "cls_token"][0, 0]]
    if kind == "deit":
        prefix.append(state[emb + "distillation_token"][0, 0])
    blocks = []
    for i in range(config["num_hidden_layers"]):
        p = f"{root}encoder.layer.{i}."
        blocks.append(
            Block(
                *(state[p + name] for name in (
                    "layernorm_before.weight", "layernorm_before.bias",
                    "attention.attention.query.weight", "attention.attention.query.bias",
                    "attention.attention.key.weight", "attention.attention.key.bias",
                    "attention.attention.value.weight", "attention.attention.value.bias",
                    "attention.output.dense.weight", "attention.output.dense.bias",
                    "layernorm_after.weight", "layernorm_after.bias",
                    "intermediate.dense.weight", "intermediate.dense.bias",
                    "output.dense.weight", "output.dense.bias",
                ))
            )
        )
    if config.get("hidden_act", "gelu") != "gelu":
        raise ValueError("the reference implements the exact GELU only")
    return Weights(
        patch_w=state[emb + "patch_embeddings.projection.weight"],
        patch_b=state[emb + "patch_embeddings.projection.bias"],
        prefix=torch.stack(prefix),
        position=state[emb + "position_embeddings"][0],
        blocks=blocks,
        ln_w=state[root + "layernorm.weight"],
        ln_b=state[root + "layernorm.bias"],
        head_w=state["classifier.weight"],
        head_b=state["classifier.bias"],
        heads=config["num_attention_heads"],
        eps=config["layer_norm_eps"],
        patch_size=config["patch_size"],
    )


# ------------------------------------------------------------------------------------- forward
def layer_norm(x, w, b, eps, std_constant=False):
    mean = x.mean(-1, keepdim=True)
    std = torch.sqrt(((x - mean) ** 2).mean(-1, keepdim=True) + eps)
    if std_constant:
        std = std.detach()
    return (x - mean) / std * w + b, std


def gelu(x, gate_constant=False):
    gate = 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))
    return x * (gate.detach() if gate_constant else gate)


@dataclass
class Saved:
    """One block's activations (one image): ``(N, D)`` tokens, ``(H, N, d)`` heads, ``(H, N, N)`` maps."""

    x: torch.Tensor  # block input
    u: torch.Tensor  # LayerNorm 1 output
    std1: torch.Tensor
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    s: torch.Tensor  # scaled scores (softmax input)
    A: torch.Tensor
    c: torch.Tensor  # A·v, (H, N, d)
    ctx: torch.Tensor  # (N, D) heads concatenated
    o: torch.Tensor  # attention output projection
    x1: torch.Tensor  # after the first residual
    u2: torch.Tensor
    std2: torch.Tensor
    f: torch.Tensor  # fc1 output
    a: torch.Tensor  # GELU output
    m: torch.Tensor  # fc2 output
    out: torch.Tensor  # block output


@dataclass
class Forward:
    embedded: torch.Tensor  # (N, D) first block's input (a leaf requiring grad)
    blocks: list[Saved] = field(default_factory=list)
    final: torch.Tensor | None = None  # (N, D) after the final LayerNorm
    std_final: torch.Tensor | None = None
    logits: torch.Tensor | None = None  # (C,)


def embed(w: Weights, pixels: torch.Tensor) -> torch.Tensor:
    """``(N, D)`` tokens entering the first block for ``(3, H, W)`` pixels."""
    patches = F.conv2d(pixels[None].to(DTYPE), w.patch_w, w.patch_b, stride=w.patch_size)[0]
    patches = patches.flatten(1).T  # (grid_h·grid_w, D), row by row
    return torch.cat([w.prefix, patches]) + w.position


def forward(w: Weights, pixels: torch.Tensor, std_constant=False, gate_constant=False, attention_constant=False,
            embedded: torch.Tensor | None = None) -> Forward:
    """The classifier's forward pass for one image, every activation kept (on the autograd graph)."""
    h = (embed(w, pixels) if embedded is None else embedded).detach().requires_grad_(True)
    run = Forward(embedded=h)
    x = h
    n, d = x.shape
    heads, hd = w.heads, d // w.heads
    for b in w.blocks:
        u, std1 = layer_norm(x, b.ln1_w, b.ln1_b, w.eps, std_constant)
        q = (u @ b.q_w.T + b.q_b).reshape(n, heads, hd).transpose(0, 1)
        k = (u @ b.k_w.T + b.k_b).reshape(n, heads, hd).transpose(0, 1)
        v = (u @ b.v_w.T + b.v_b).reshape(n, heads, hd).transpose(0, 1)
        s = q @ k.transpose(-1, -2) / math.sqrt(hd)
        A = torch.softmax(s, dim=-1)
        if attention_constant:
            A = A.detach()
        c = A @ v
        ctx = c.transpose(0, 1).reshape(n, d)
        o = ctx @ b.o_w.T + b.o_b
        x1 = o + x
        u2, std2 = layer_norm(x1, b.ln2_w, b.ln2_b, w.eps, std_constant)
        f = u2 @ b.fc1_w.T + b.fc1_b
        a = gelu(f, gate_constant)
        m = a @ b.fc2_w.T + b.fc2_b
        out = m + x1
        run.blocks.append(Saved(x, u, std1, q, k, v, s, A, c, ctx, o, x1, u2, std2, f, a, m, out))
        x = out
    run.final, run.std_final = layer_norm(x, w.ln_w, w.ln_b, w.eps, std_constant)
    run.logits = run.final[0] @ w.head_w.T + w.head_b
    return run


def readout(w: Weights, tokens: torch.Tensor) -> torch.Tensor:
    """``(C,)`` logits of a block's ``(N, D)`` output read through the final LayerNorm and classifier."""
    normed, _ = layer_norm(tokens, w.ln_w, w.ln_b, w.eps)
    return normed[0] @ w.head_w.T + w.head_b


# ------------------------------------------------------------------------------------- LRP steps
def _div(a, b):
    """``a / b``, 0 where ``b == 0``."""
    return torch.where(b == 0, torch.zeros_like(a), a / torch.where(b == 0, torch.ones_like(b), b))


def chefer_safe_divide(a, b):
    """``safe_divide`` of Chefer et al.'s ``layers_ours.py``."""
    den = b.clamp(min=1e-9) + b.clamp(max=1e-9)
    den = torch.where(den == 0, torch.full_like(den, 1e-9), den)
    return a / den * b.ne(0).to(b.dtype)


def lrp_alpha1_beta0(x, weight, relevance):
    """``layers_ours.Linear.relprop`` with α=1: ``x`` ``(..., I)``, ``weight`` ``(O, I)``, relevance ``(..., O)``."""
    pw, nw = weight.clamp(min=0), weight.clamp(max=0)
    px, nx = x.clamp(min=0), x.clamp(max=0)
    s = chefer_safe_divide(relevance, px @ pw.T + nx @ nw.T)
    return px * (s @ pw) + nx * (s @ nw)


def lrp_epsilon(x, weight, z, relevance, eps):
    """LRP-ε through ``z = x Wᵀ + b``: ``R_x = x ⊙ (R / (z + ε·sign z)) W``."""
    return x * (_div(relevance, z + eps * torch.sign(z)) @ weight)


def lrp_layer_norm_std_constant(x, weight, std, y, relevance):
    """LayerNorm with its std held constant is the affine map ``y_i = Σ_j M_ij x_j + b_i`` with
    ``M_ij = w_i/σ (δ_ij − 1/D)``; LRP-0 with the bias absorbing: ``R_x_j = Σ_i M_ij x_j R_i / y_i``."""
    dim = x.shape[-1]
    centring = torch.eye(dim, dtype=x.dtype) - 1.0 / dim
    contributions = (weight[:, None] * centring)[None] / std[..., None] * x[..., None, :]  # (N, i, j)
    return torch.einsum("nij,ni->nj", contributions, _div(relevance, y))


def lrp_add(a, b, relevance):
    """LRP-0 for ``a + b``: ``R_a = a / (a + b) · R``."""
    share = _div(relevance, a + b)
    return a * share, b * share


def chefer_add(a, b, relevance):
    """``layers_ours.Add.relprop``: proportional split, then each operand's total rescaled."""
    s = chefer_safe_divide(relevance, a + b)
    ra, rb = a * s, b * s
    sum_a, sum_b = ra.sum(), rb.sum()
    total = relevance.sum()
    fact_a = chefer_safe_divide(sum_a.abs(), sum_a.abs() + sum_b.abs()) * total
    fact_b = chefer_safe_divide(sum_b.abs(), sum_a.abs() + sum_b.abs()) * total
    return ra * chefer_safe_divide(fact_a, sum_a), rb * chefer_safe_divide(fact_b, sum_b)


def lrp_matmul(a, b, relevance, divide=_div):
    """``z = a @ b`` (batched over heads): ``R_a = a ⊙ (R/z) bᵀ``, ``R_b = b ⊙ aᵀ (R/z)`` (each gets all of ``R``)."""
    share = divide(relevance, a @ b)
    return a * (share @ b.transpose(-1, -2)), b * (a.transpose(-1, -2) @ share)


def _heads(t, heads):
    n, d = t.shape
    return t.reshape(n, heads, d // heads).transpose(0, 1)


def _tokens(t):
    heads, n, hd = t.shape
    return t.transpose(0, 1).reshape(n, heads * hd)


# ------------------------------------------------------------------------------------- methods
def _detached(run: Forward):
    for saved in run.blocks:
        for name, value in vars(saved).items():
            setattr(saved, name, value.detach())
    run.final, run.logits = run.final.detach(), run.logits.detach()


def attention_maps(w: Weights, pixels) -> list[torch.Tensor]:
    with torch.no_grad():
        return [saved.A for saved in forward(w, pixels).blocks]


def attention_grads(w: Weights, pixels, target: int) -> tuple[Forward, list[torch.Tensor]]:
    run = forward(w, pixels)
    grads = torch.autograd.grad(run.logits[target], [saved.A for saved in run.blocks])
    _detached(run)
    return run, list(grads)


def _discard(fused, ratio):
    """The original tool: zero the ``ratio`` smallest entries of the flattened map, never entry 0."""
    flat = fused.flatten().clone()
    count = int(flat.numel() * ratio)
    if count:
        indices = flat.topk(count, largest=False).indices
        flat[indices[indices != 0]] = 0
    return flat.reshape(fused.shape)


def attention_rollout(w: Weights, pixels, discard_ratio=0.0, start_layer=0) -> torch.Tensor:
    maps = attention_maps(w, pixels)
    n = maps[0].shape[-1]
    eye = torch.eye(n, dtype=DTYPE)
    result = eye
    for A in maps[start_layer:]:
        fused = _discard(A.mean(0), discard_ratio)
        step = 0.5 * fused + 0.5 * eye
        result = (step / step.sum(-1, keepdim=True)) @ result
    return result[0]


def gae(w: Weights, pixels, target: int, start_layer=0) -> torch.Tensor:
    run, grads = attention_grads(w, pixels, target)
    n = grads[0].shape[-1]
    R = torch.eye(n, dtype=DTYPE)
    for saved, grad in list(zip(run.blocks, grads))[start_layer:]:
        R = R + (grad * saved.A).clamp(min=0).mean(0) @ R
    return R[0]


def chefer_attention_relevance(w: Weights, run: Forward, target: int) -> list[torch.Tensor]:
    """``(H, N, N)`` relevance ``cam`` of every block's attention map (``attn.get_attn_cam()``)."""
    heads = w.heads
    one_hot = torch.zeros_like(run.logits)
    one_hot[target] = 1.0
    # head (α1β0), pool (the class token takes it all), final norm (identity)
    R = torch.zeros_like(run.final)
    R[0] = lrp_alpha1_beta0(run.final[0], w.head_w, one_hot)
    cams = []
    for b, saved in zip(reversed(w.blocks), reversed(run.blocks)):
        r_mlp, r_x1 = chefer_add(saved.m, saved.x1, R)
        r_a = lrp_alpha1_beta0(saved.a, b.fc2_w, r_mlp)
        r_u2 = lrp_alpha1_beta0(saved.u2, b.fc1_w, r_a)  # GELU: identity
        r_x1 = r_x1 + r_u2  # norm2: identity; clone: relevance added
        r_o, r_x = chefer_add(saved.o, saved.x, r_x1)
        r_ctx = _heads(lrp_alpha1_beta0(saved.ctx, b.o_w, r_o), heads)
        r_A, r_v = lrp_matmul(saved.A, saved.v, r_ctx, chefer_safe_divide)
        r_A, r_v = r_A / 2, r_v / 2
        cams.append(r_A)
        r_q, r_k = lrp_matmul(saved.q, saved.k.transpose(-1, -2), r_A, chefer_safe_divide)  # softmax: identity
        r_q, r_k = r_q / 2, r_k.transpose(-1, -2) / 2
        r_u = sum(
            lrp_alpha1_beta0(saved.u, weight, _tokens(part))
            for weight, part in ((b.q_w, r_q), (b.k_w, r_k), (b.v_w, r_v))
        )
        R = r_x + r_u  # norm1: identity; clone: relevance added
    return cams[::-1]


def transformer_attribution(w: Weights, pixels, target: int, start_layer=0) -> torch.Tensor:
    run, grads = attention_grads(w, pixels, target)
    cams = chefer_attention_relevance(w, run, target)
    n = grads[0].shape[-1]
    eye = torch.eye(n, dtype=DTYPE)
    layers = [(grad * cam).clamp(min=0).mean(0) + eye for grad, cam in zip(grads, cams)]
    joint = layers[start_layer]
    for layer in layers[start_layer + 1 :]:
        joint = layer @ joint
    return joint[0]


def _lrp_tokens(w: Weights, pixels, target: int, attention_constant: bool, eps: float) -> torch.Tensor:
    """AttnLRP (``attention_constant=False``) or CP-LRP token relevance at the first block's input."""
    with torch.no_grad():
        run = forward(w, pixels)
    heads = w.heads
    z = run.logits[target]
    R = torch.zeros_like(run.final)
    r_head = torch.zeros_like(run.logits)
    r_head[target] = z  # the logit's value is the relevance to explain
    R[0] = lrp_epsilon(run.final[0], w.head_w, run.logits, r_head, eps)
    last = run.blocks[-1].out
    R = lrp_layer_norm_std_constant(last, w.ln_w, run.std_final, run.final, R)
    for b, saved in zip(reversed(w.blocks), reversed(run.blocks)):
        r_mlp, r_x1 = lrp_add(saved.m, saved.x1, R)
        r_a = lrp_epsilon(saved.a, b.fc2_w, saved.m, r_mlp, eps)
        r_u2 = lrp_epsilon(saved.u2, b.fc1_w, saved.f, r_a, eps)  # GELU: identity
        r_x1 = r_x1 + lrp_layer_norm_std_constant(saved.x1, b.ln2_w, saved.std2, saved.u2, r_u2)
        r_o, r_x = lrp_add(saved.o, saved.x, r_x1)
        r_c = _heads(lrp_epsilon(saved.ctx, b.o_w, saved.o, r_o, eps), heads)
        r_A, r_v = lrp_matmul(saved.A, saved.v, r_c)
        if attention_constant:  # A·v is linear in v: v takes all, q and k nothing
            r_q = r_k = torch.zeros_like(saved.q)
        else:  # uniform rule: half to each operand
            r_A, r_v = r_A / 2, r_v / 2
            r_s = saved.s * (r_A - saved.A * r_A.sum(-1, keepdim=True))  # softmax rule (Prop. 3.1)
            r_q, r_k = lrp_matmul(saved.q, saved.k.transpose(-1, -2), r_s)
            r_q, r_k = r_q / 2, r_k.transpose(-1, -2) / 2
        r_u = sum(
            lrp_epsilon(saved.u, weight, _tokens(out), _tokens(part), eps)
            for weight, out, part in ((b.q_w, saved.q, r_q), (b.k_w, saved.k, r_k), (b.v_w, saved.v, r_v))
        )
        R = r_x + lrp_layer_norm_std_constant(saved.x, b.ln1_w, saved.std1, saved.u, r_u)
    return R.sum(-1)


def attnlrp(w: Weights, pixels, target: int, eps: float = 1e-6) -> torch.Tensor:
    return _lrp_tokens(w, pixels, target, attention_constant=False, eps=eps)


def cp_lrp(w: Weights, pixels, target: int, eps: float = 1e-6) -> torch.Tensor:
    return _lrp_tokens(w, pixels, target, attention_constant=True, eps=eps)


def legrad(w: Weights, pixels, target: int, start_layer=0) -> torch.Tensor:
    run = forward(w, pixels)
    rows = []
    for saved in run.blocks[start_layer:]:
        (grad,) = torch.autograd.grad(readout(w, saved.out)[target], [saved.A], retain_graph=True)
        rows.append(grad.clamp(min=0).mean(0).mean(0))
    total = torch.stack(rows).sum(0).detach()
    return total - total[w.num_prefix :].min()


def libragrad(w: Weights, pixels, target: int) -> torch.Tensor:
    run = forward(w, pixels, std_constant=True, gate_constant=True, attention_constant=True)
    probability = torch.softmax(run.logits, -1)[target]
    (grad,) = torch.autograd.grad(probability, [run.embedded])
    return (run.embedded * grad).sum(-1).detach()
