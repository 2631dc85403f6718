"""Throughput and memory: our methods vs the model's own passes and vs the original tool's approach.

Speed (``python benchmarks/speed.py``): a random-weight DeiT-tiny-shaped model (12 layers, 3 heads,
197 tokens), random inputs, batch sizes 1, 8, 32, all in one run. Rows:

* ``forward (eager)`` / ``forward (sdpa)``: the model alone, no grad (the floor for rollout and flow);
* ``forward+backward (eager)``: forward, then the gradient of one logit per image down to the input
  (the floor for the gradient methods);
* ``ours: <method>``: ``RolloutExplainer.relevance_maps`` on the same tensors;
* ``original: <method>``: the original tool's approach, re-implemented here: one image at a time,
  forward hooks on the attention modules copying every map to the CPU, gradients collected by
  hooks into a list, rollout computed afterwards from the stored maps.

Memory (``python benchmarks/speed.py --memory``): peak resident memory of a fresh process that
loads a ViT-L/16-shaped model at 384 px (24 layers, 16 heads, 577 tokens) and runs one image with
(a) the forward pass only, (b) our streaming capture, (c) the store-everything strategy
(``output_attentions=True``, all maps and gradients kept, then the pure functions).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch

from hf_vit_rollout import RolloutExplainer, attention_rollout, gae, gradient_rollout
from hf_vit_rollout.capture import find_attention_modules


def deit_tiny(num_labels=1000):
    from transformers import DeiTConfig, DeiTForImageClassification, DeiTImageProcessorPil

    torch.manual_seed(0)
    config = DeiTConfig(hidden_size=192, num_hidden_layers=12, num_attention_heads=3, intermediate_size=768,
                        image_size=224, patch_size=16, num_labels=num_labels)
    return DeiTForImageClassification(config).eval(), DeiTImageProcessorPil()


def vit_large_384():
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessorPil

    torch.manual_seed(0)
    config = ViTConfig(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                       image_size=384, patch_size=16, num_labels=1000)
    return ViTForImageClassification(config).eval(), ViTImageProcessorPil(size={"height": 384, "width": 384})


class OriginalApproach:
    """The original tool's way, for comparison: per-image loop, hooks copying maps to the CPU."""

    def __init__(self, model, discard_ratio=0.9, head_fusion="mean"):
        self.model, self.discard_ratio, self.head_fusion = model, discard_ratio, head_fusion
        self.modules = [m for _, m, _ in find_attention_modules(model)]

    def _run(self, image, target):
        attentions, grads, handles = [], [], []

        def save(module, args, output):
            attentions.append(output[1].cpu())
            if target is not None:
                output[1].register_hook(lambda g: grads.append(g.cpu()))

        for module in self.modules:
            handles.append(module.register_forward_hook(save))
        try:
            self.model.set_attn_implementation("eager")
            if target is None:
                with torch.no_grad():
                    self.model(pixel_values=image)
            else:
                self.model.zero_grad()
                logits = self.model(pixel_values=image).logits
                logits[0, target].backward()
        finally:
            for handle in handles:
                handle.remove()
        return attentions, grads[::-1]

    def _chain(self, fused_maps, protect_cls):
        """The original's per-layer loop: discard via topk, residual, normalise, multiply."""
        result = None
        with torch.no_grad():
            for fused in fused_maps:
                flat = fused.view(fused.size(0), -1)
                _, indices = flat.topk(int(flat.size(-1) * self.discard_ratio), -1, False)
                if protect_cls:
                    indices = indices[indices != 0]
                flat[0, indices] = 0
                eye = torch.eye(fused.size(-1))
                a = (fused + 1.0 * eye) / 2
                a = a / a.sum(dim=-1, keepdim=True)
                result = a if result is None else torch.matmul(a, result)
        return result[0, 0, 1:]

    def rollout(self, image):
        attentions, _ = self._run(image, None)
        fuse = (lambda a: a.mean(axis=1)) if self.head_fusion == "mean" else (lambda a: a.max(axis=1)[0])
        return self._chain((fuse(a) for a in attentions), protect_cls=True)

    def grad_rollout(self, image, target):
        attentions, grads = self._run(image, target)
        return self._chain(((a * g).mean(axis=1).clamp(min=0) for a, g in zip(attentions, grads)), protect_cls=False)

    def __call__(self, batch, method):
        for i in range(batch.shape[0]):
            image = batch[i : i + 1]
            self.rollout(image) if method == "rollout" else self.grad_rollout(image, 0)


def timed(fn, repeats):
    fn()  # warm-up
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def speed(args):
    model, processor = deit_tiny()
    explainer = RolloutExplainer(model, processor)
    original = OriginalApproach(model)
    print(f"DeiT-tiny shape (12 layers × 3 heads × 197 tokens), random weights, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; images/s (median of {args.repeats}); ratio = time / floor\n")
    header = f"{'batch':>5s}  {'row':34s} {'img/s':>8s} {'× floor':>8s} {'vs original':>12s}"
    print(header)
    print("-" * len(header))
    for batch in args.batches:
        x = torch.randn(batch, 3, 224, 224)
        target = torch.zeros(batch, dtype=torch.long)

        def forward(impl):
            model.set_attn_implementation(impl)
            with torch.no_grad():
                model(pixel_values=x)

        def forward_backward():
            model.set_attn_implementation("eager")
            pixels = x.clone().requires_grad_(True)
            logits = model(pixel_values=pixels).logits
            torch.autograd.grad(logits.gather(1, target[:, None]).sum(), pixels)

        floors = {
            "forward (eager)": timed(lambda: forward("eager"), args.repeats),
            "forward (sdpa)": timed(lambda: forward("sdpa"), args.repeats),
            "forward+backward (eager)": timed(forward_backward, args.repeats),
        }
        model.set_attn_implementation("sdpa")
        for name, seconds in floors.items():
            print(f"{batch:5d}  {name:34s} {batch / seconds:8.1f}")
        originals = {}
        for method in ("rollout", "grad_rollout"):
            if batch <= args.original_max_batch:
                originals[method] = timed(lambda m=method: original(x, m), max(1, args.repeats // 2))
                model.set_attn_implementation("sdpa")
        rows = [("rollout", None), ("rollout", 0.0), ("grad_rollout", None), ("gae", None), ("flow", None)]
        for method, ratio in rows:
            gradient = method in ("grad_rollout", "gae")
            repeats = 1 if method == "flow" else args.repeats
            seconds = timed(
                lambda m=method, r=ratio: explainer.relevance_maps(x, target=0 if gradient else None, method=m, discard_ratio=r),
                repeats,
            )
            floor = floors["forward+backward (eager)" if gradient else "forward (eager)"]
            versus = f"{originals[method] / seconds:11.1f}×" if method in originals and ratio is None else ""
            label = f"ours: {method}" + (f" (discard {ratio:g})" if ratio is not None else "")
            print(f"{batch:5d}  {label:34s} {batch / seconds:8.1f} {seconds / floor:8.2f} {versus:>12s}")
        for method, seconds in originals.items():
            gradient = method != "rollout"
            floor = floors["forward+backward (eager)" if gradient else "forward (eager)"]
            print(f"{batch:5d}  {'original: ' + method:34s} {batch / seconds:8.1f} {seconds / floor:8.2f}")
        print()


def memory_child(strategy: str) -> None:
    """Run one strategy in this (fresh) process and print its peak RSS in MiB as JSON."""
    torch.set_num_threads(2)
    model, processor = vit_large_384()
    x = torch.randn(1, 3, 384, 384)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if strategy == "forward":
        with torch.no_grad():
            model(pixel_values=x)
    elif strategy.startswith("forward+backward"):
        model.set_attn_implementation("eager" if "eager" in strategy else "sdpa")
        pixels = x.clone().requires_grad_(True)
        torch.autograd.grad(model(pixel_values=pixels).logits[0, 0], pixels)
    elif strategy.startswith("ours:"):
        method = strategy.split(":")[1]
        RolloutExplainer(model, processor).relevance_maps(x, target=0 if method != "rollout" else None, method=method)
    elif strategy.startswith("store-all:"):
        method = strategy.split(":")[1]
        model.set_attn_implementation("eager")
        if method == "rollout":
            with torch.no_grad():
                attentions = model(pixel_values=x, output_attentions=True).attentions
            attention_rollout(list(attentions), discard_ratio=0.9)
        else:
            outputs = model(pixel_values=x, output_attentions=True)
            attentions = list(outputs.attentions)
            grads = torch.autograd.grad(outputs.logits[0, 0], attentions)
            (gae if method == "gae" else gradient_rollout)([a.detach() for a in attentions], list(grads))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"strategy": strategy, "loaded_mib": before, "peak_mib": peak}))


def memory(args):
    strategies = [
        "forward",
        "ours:rollout",
        "store-all:rollout",
        "forward+backward (sdpa)",
        "forward+backward (eager)",
        "ours:gae",
        "store-all:gae",
    ]
    print("ViT-L/16 shape at 384 px (24 layers × 16 heads × 577 tokens), batch 1, random weights;")
    print("peak RSS of a fresh process, minus the RSS after loading the model\n")
    print(f"{'strategy':26s} {'extra peak MiB':>15s}")
    for strategy in strategies:
        out = subprocess.run([sys.executable, __file__, "--memory-child", strategy], capture_output=True, text=True, check=True)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{strategy:26s} {row['peak_mib'] - row['loaded_mib']:15.0f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--original-max-batch", type=int, default=32)
    parser.add_argument("--memory", action="store_true", help="run the ViT-L/384 memory comparison instead")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child)
    elif args.memory:
        memory(args)
    else:
        torch.set_num_threads(2)
        speed(args)


if __name__ == "__main__":
    main()
