"""Throughput and memory: our methods vs the model's own passes and vs the original tool's approach.

Speed (``python benchmarks/speed.py``): a random-weight DeiT-tiny-shaped model (12 layers, 3 heads,
198 tokens: class, distillation and 196 patch tokens), random inputs, batch sizes 1, 8, 32, all in one run. Rows:

* ``forward (eager)`` / ``forward (sdpa)``: the model alone, no grad (the floor for rollout and flow);
* ``forward+backward (eager)``: forward, then the gradient of one logit per image down to the input
  (the floor for the gradient methods);
* ``ours: <method>``: ``RolloutExplainer.relevance_maps`` on the same tensors (``rollout, product``:
  with ``rollout_buffer_mib=0``, the strict ``O(B·N²)``-memory running product);
* ``ours: attention / transformer_attribution / attnlrp / cp_lrp / libragrad / legrad``: the same
  call for raw attention (last layer, heads fused), Chefer et al.'s Transformer Attribution, AttnLRP,
  CP-LRP, LibraGrad and LeGrad;
* ``original: <method>``: the original tool's approach, re-implemented here: one image at a time,
  forward hooks on the attention modules copying every map to the CPU, gradients collected by
  hooks into a list, rollout computed afterwards from the stored maps.

Timing is interleaved: each round runs every row once, in turn, so a slower or faster stretch of a
shared machine hits all rows alike; a row's time is its median over the rounds, and its ratio to the
floor is the median of the per-round ratios. Each row then runs once more, untimed, for its peak
memory: on CUDA ``torch.cuda.max_memory_allocated``; on the CPU the resident set size sampled every
0.2 ms (after ``malloc_trim``), both minus the value before the call.

Memory (``python benchmarks/speed.py --memory``): peak memory of a fresh process that loads a
ViT-L/16-shaped model at 384 px (24 layers, 16 heads, 577 tokens) and runs one image with
(a) the forward pass only, (b) our capture, with and without the rollout buffer, (c) the
store-everything strategy (``output_attentions=True``, all maps and gradients kept, then the pure
functions).

Breakdown (``python benchmarks/speed.py --breakdown``): where rollout's own time goes inside real
explainer calls (data fresh from the model, not hot in cache): the time spent in ``rollout_layer``
per layer, next to the model's own time per layer, and the rest of the call.
``--breakdown transformer_attribution`` splits Transformer Attribution's calls instead into the
ordinary gradient pass, the LRP relevance pass and the rest (the forward pass under the capture and
the rules' gates, the per-layer maps and the final fold), next to the model's own eager
forward+backward.

``--methods m1 m2 ...`` restricts the speed table to the floors and those methods' rows.

``--device cuda --dtype float16`` runs them on a GPU (maps are computed in float32 regardless).

Speed and breakdown fix glibc's mmap and trim thresholds first (``--malloc fixed``, the default;
see :func:`fix_malloc_thresholds`); ``--malloc default`` leaves glibc's moving thresholds.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time

import torch

from hf_vit_rollout import METHODS, RolloutExplainer, attention_rollout, gae, gradient_rollout
from hf_vit_rollout.capture import find_attention_modules

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def deit_tiny(device="cpu", dtype=torch.float32, num_labels=1000):
    from transformers import DeiTConfig, DeiTForImageClassification, DeiTImageProcessorPil

    torch.manual_seed(0)
    config = DeiTConfig(hidden_size=192, num_hidden_layers=12, num_attention_heads=3, intermediate_size=768,
                        image_size=224, patch_size=16, num_labels=num_labels)
    return DeiTForImageClassification(config).eval().to(device=device, dtype=dtype), DeiTImageProcessorPil()


def vit_large_384(device="cpu", dtype=torch.float32):
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessorPil

    torch.manual_seed(0)
    config = ViTConfig(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                       image_size=384, patch_size=16, num_labels=1000)
    model = ViTForImageClassification(config).eval().to(device=device, dtype=dtype)
    return model, ViTImageProcessorPil(size={"height": 384, "width": 384})


def fix_malloc_thresholds() -> bool:
    """Fix glibc's mmap and trim thresholds at 1 GiB (``mallopt``), as ``MALLOC_MMAP_THRESHOLD_`` /
    ``MALLOC_TRIM_THRESHOLD_`` would; ``False`` where the C library is not glibc.

    By default glibc moves both thresholds as the process frees large blocks, so whether a call's
    multi-MB temporaries come back as fresh pages depends on what ran before it (measured: the same
    DeiT-tiny forward pass at batch 32 with 0-117 thousand minor page faults and up to 40% more
    time): the floor and the rows measured against it would then differ by allocation history, not
    by work done.
    """
    libc = _glibc()
    if libc is None:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    return bool(libc.mallopt(m_mmap_threshold, 2**30)) and bool(libc.mallopt(m_trim_threshold, 2**30))


def forward_backward(model, x: torch.Tensor, target: torch.Tensor) -> None:
    """The floor of the gradient methods: eager forward, then the gradient of one logit per image
    down to the input (then back to SDPA)."""
    model.set_attn_implementation("eager")
    pixels = x.clone().requires_grad_(True)
    logits = model(pixel_values=pixels).logits
    torch.autograd.grad(logits.gather(1, target[:, None]).sum(), pixels)
    model.set_attn_implementation("sdpa")


def forward_pass(model, x: torch.Tensor, impl: str) -> None:
    """The model alone on ``x``, no grad, with attention implementation ``impl`` (then back to SDPA)."""
    model.set_attn_implementation(impl)
    with torch.no_grad():
        model(pixel_values=x)
    model.set_attn_implementation("sdpa")


def _glibc():
    """The C library as a ``ctypes`` handle if it is glibc (has ``mallopt``), else ``None``."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _release_freed_memory() -> None:
    gc.collect()
    libc = _glibc()
    if libc is not None:  # without glibc, the baseline may include freed memory
        libc.malloc_trim(0)


def peak_extra_mib(fn, device: str) -> float:
    """Peak memory of ``fn()`` above what was in use before it, in MiB (see the module docstring)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - before) / 2**20
    _release_freed_memory()
    before = _rss_mib()
    peak = [before]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _rss_mib())
            time.sleep(0.0002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        fn()
    finally:
        done.set()
        sampler.join()
    return max(peak[0], _rss_mib()) - before


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


def interleaved(rows: dict, floors: dict, rounds: int, sync) -> dict:
    """Run every row once per round, in turn. Returns ``{name: (median s, median ratio to its floor)}``."""
    times = {name: [] for name in rows}
    for name, fn in rows.items():  # warm-up
        fn()
    for _ in range(rounds):
        for name, fn in rows.items():
            sync()
            started = time.perf_counter()
            fn()
            sync()
            times[name].append(time.perf_counter() - started)
    result = {}
    for name, samples in times.items():
        floor = floors.get(name)
        ratios = [t / f for t, f in zip(samples, times[floor])] if floor else []
        result[name] = (statistics.median(samples), statistics.median(ratios) if ratios else None)
    return result


def speed(args):
    device, dtype = args.device, DTYPES[args.dtype]
    model, processor = deit_tiny(device, dtype)
    explainer = RolloutExplainer(model, processor)
    product = RolloutExplainer(model, processor, rollout_buffer_mib=0)
    original = OriginalApproach(model)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    where = torch.cuda.get_device_name() if device.startswith("cuda") else f"CPU, {torch.get_num_threads()} threads"
    print(f"DeiT-tiny shape (12 layers × 3 heads × 198 tokens), random weights, {args.dtype}, torch {torch.__version__}, "
          f"{where}, malloc thresholds {args.malloc}; {args.rounds} interleaved rounds (median); "
          "× floor = time / floor time of the same round; "
          f"peak = extra peak memory of one call; load average {os.getloadavg()[0]:.1f} at the start\n")
    header = f"{'batch':>5s}  {'row':32s} {'img/s':>8s} {'× floor':>8s} {'vs original':>12s} {'peak MiB':>9s}"
    print(header)
    print("-" * len(header))
    eager, fb = "forward (eager)", "forward+backward (eager)"
    for batch in args.batches:
        x = torch.randn(batch, 3, 224, 224, device=device, dtype=dtype)
        target = torch.zeros(batch, dtype=torch.long, device=device)

        def ours(method, ratio=None, which=explainer, x=x):
            gradient = METHODS[method].needs_gradient
            return lambda: which.relevance_maps(x, target=0 if gradient else None, method=method, discard_ratio=ratio)

        rows = {
            eager: lambda x=x: forward_pass(model, x, "eager"),
            "forward (sdpa)": lambda x=x: forward_pass(model, x, "sdpa"),
            fb: lambda x=x, target=target: forward_backward(model, x, target),
            "ours: rollout": ours("rollout"),
            "ours: rollout (discard 0)": ours("rollout", 0.0),
            "ours: rollout, product": ours("rollout", which=product),
            "ours: grad_rollout": ours("grad_rollout"),
            "ours: gae": ours("gae"),
            "ours: flow": ours("flow"),
            "ours: attention": ours("attention"),
            "ours: transformer_attribution": ours("transformer_attribution"),
            "ours: attnlrp": ours("attnlrp"),
            "ours: cp_lrp": ours("cp_lrp"),
            "ours: libragrad": ours("libragrad"),
            "ours: legrad": ours("legrad"),
        }
        if batch <= args.original_max_batch:
            rows["original: rollout"] = lambda x=x: original(x, "rollout")
            rows["original: grad_rollout"] = lambda x=x: original(x, "grad_rollout")
        if args.methods:
            rows = {name: fn for name, fn in rows.items()
                    if not name.startswith(("ours", "original")) or name.split(": ")[-1] in args.methods}
        backward = [m for m, spec in METHODS.items() if spec.needs_gradient]  # floor: forward+backward
        floors = {name: fb if any(m in name for m in backward) else eager for name in rows if name not in (eager, fb)}
        floors["forward (sdpa)"] = eager
        timings = interleaved(rows, floors, args.rounds, sync)
        for name, fn in rows.items():
            seconds, ratio = timings[name]
            method = name.split(": ")[-1]
            versus = ""
            if name.startswith("ours") and "original: " + method in timings:
                versus = f"{timings['original: ' + method][0] / seconds:11.1f}×"
            peak = peak_extra_mib(fn, device)
            ratio_text = f"{ratio:8.2f}" if ratio is not None else " " * 8
            print(f"{batch:5d}  {name:32s} {batch / seconds:8.1f} {ratio_text} {versus:>12s} {peak:9.0f}", flush=True)
        print()


def breakdown_attribution(args):
    """Split Transformer Attribution's explainer calls into their passes (see the module docstring)."""
    from hf_vit_rollout.lrp.context import RelevanceContext

    device, dtype = args.device, DTYPES[args.dtype]
    model, processor = deit_tiny(device, dtype)
    explainer = RolloutExplainer(model, processor)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    spent = {"gradient": 0.0, "relevance": 0.0}
    plain_grad, relevance_grad = torch.autograd.grad, RelevanceContext.relevance_grad
    inside = [False]

    def timed_grad(*a, **k):
        if inside[0]:
            return plain_grad(*a, **k)
        sync()
        started = time.perf_counter()
        out = plain_grad(*a, **k)
        sync()
        spent["gradient"] += time.perf_counter() - started
        return out

    def timed_relevance(self, *a, **k):
        inside[0] = True
        sync()
        started = time.perf_counter()
        try:
            return relevance_grad(self, *a, **k)
        finally:
            sync()
            spent["relevance"] += time.perf_counter() - started
            inside[0] = False

    for batch in args.batches:
        x = torch.randn(batch, 3, 224, 224, device=device, dtype=dtype)
        target = torch.zeros(batch, dtype=torch.long, device=device)

        def floor(x=x, target=target):
            inside[0] = True  # the floor's own gradient is not Transformer Attribution's
            try:
                forward_backward(model, x, target)
            finally:
                inside[0] = False

        def call(x=x):
            explainer.relevance_maps(x, target=0, method="transformer_attribution")

        floor(), call()  # warm-up
        samples = {"floor": [], "call": [], "gradient": [], "relevance": []}
        torch.autograd.grad, RelevanceContext.relevance_grad = timed_grad, timed_relevance
        try:
            for _ in range(args.rounds):
                for name, fn in (("floor", floor), ("call", call)):
                    spent.update(gradient=0.0, relevance=0.0)
                    sync()
                    started = time.perf_counter()
                    fn()
                    sync()
                    samples[name].append(time.perf_counter() - started)
                samples["gradient"].append(spent["gradient"])
                samples["relevance"].append(spent["relevance"])
        finally:
            torch.autograd.grad, RelevanceContext.relevance_grad = plain_grad, relevance_grad
        fb, total, gradient, relevance = (statistics.median(samples[k]) * 1e3 for k in ("floor", "call", "gradient", "relevance"))
        ratio = statistics.median(c / f for c, f in zip(samples["call"], samples["floor"]))
        rest = total - gradient - relevance
        print(f"batch {batch}: eager forward+backward {fb:.1f} ms; transformer_attribution call {total:.1f} ms "
              f"({ratio:.2f}× forward+backward): gradient pass {gradient:.1f} ms ({gradient / fb:.2f}×), "
              f"relevance pass {relevance:.1f} ms ({relevance / fb:.2f}×), forward pass, maps and fold {rest:.1f} ms "
              f"({rest / fb:.2f}×); load {os.getloadavg()[0]:.1f}", flush=True)


def breakdown(args):
    """Time rollout's per-layer map inside explainer calls (see the module docstring)."""
    import hf_vit_rollout.methods as methods

    device, dtype = args.device, DTYPES[args.dtype]
    model, processor = deit_tiny(device, dtype)
    explainer = RolloutExplainer(model, processor)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    original_layer = methods.rollout_layer
    spent = [0.0]

    def timed_layer(*a, **k):
        sync()
        started = time.perf_counter()
        out = original_layer(*a, **k)
        sync()
        spent[0] += time.perf_counter() - started
        return out

    layers = len(find_attention_modules(model))
    for batch in args.batches:
        x = torch.randn(batch, 3, 224, 224, device=device, dtype=dtype)

        def forward(x=x):
            forward_pass(model, x, "eager")

        forward()
        explainer.relevance_maps(x)  # warm-up
        forward_s, call_s, layer_s = [], [], []
        methods.rollout_layer = timed_layer
        try:
            for _ in range(args.rounds):
                for samples, fn in ((forward_s, forward), (call_s, lambda x=x: explainer.relevance_maps(x))):
                    spent[0] = 0.0
                    sync()
                    started = time.perf_counter()
                    fn()
                    sync()
                    samples.append(time.perf_counter() - started)
                layer_s.append(spent[0])
        finally:
            methods.rollout_layer = original_layer
        fwd, call, maps = (statistics.median(v) * 1e3 for v in (forward_s, call_s, layer_s))
        print(f"batch {batch}: forward {fwd:.1f} ms ({fwd / layers:.2f} ms per layer); explainer call {call:.1f} ms, "
              f"of which rollout_layer {maps:.1f} ms ({maps / layers:.2f} ms per layer, "
              f"{maps / fwd:.1%} of the forward pass); the rest (capture, final fold, a slower forward) "
              f"{call - fwd - maps:.1f} ms")


def memory_child(strategy: str, device: str, dtype: torch.dtype) -> None:
    """Run one strategy in this (fresh) process; print its extra peak memory in MiB as JSON.

    CPU: peak RSS (``ru_maxrss``) minus the RSS after loading the model. CUDA: peak allocated
    minus allocated after loading.
    """
    torch.set_num_threads(2)
    model, processor = vit_large_384(device, dtype)
    x = torch.randn(1, 3, 384, 384, device=device, dtype=dtype)
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated() / 2**20
    else:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kind, _, method = strategy.partition(":")
    if strategy == "forward":
        with torch.no_grad():
            model(pixel_values=x)
    elif strategy.startswith("forward+backward"):
        model.set_attn_implementation("eager" if "eager" in strategy else "sdpa")
        pixels = x.clone().requires_grad_(True)
        torch.autograd.grad(model(pixel_values=pixels).logits[0, 0], pixels)
    elif kind == "ours":
        method, _, variant = method.partition(":")
        buffer = 0 if variant == "product" else 256
        explainer = RolloutExplainer(model, processor, rollout_buffer_mib=buffer)
        explainer.relevance_maps(x, target=0 if method != "rollout" else None, method=method)
    elif kind == "store-all":
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
    else:
        raise ValueError(f"unknown strategy {strategy!r}")
    if cuda:
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"strategy": strategy, "before_mib": before, "peak_mib": peak}))


STRATEGIES = {
    "forward": "forward only (no grad)",
    "ours:rollout": "ours: rollout (default, maps held for the final fold)",
    "ours:rollout:product": "ours: rollout, rollout_buffer_mib=0 (running product)",
    "store-all:rollout": "store-all rollout (output_attentions=True, then attention_rollout)",
    "forward+backward (sdpa)": "forward+backward, SDPA attention",
    "forward+backward (eager)": "forward+backward, eager attention",
    "ours:gae": "ours: GAE (gradients folded last layer first)",
    "store-all:gae": "store-all GAE (all maps and gradients kept, then gae)",
}


def memory(args):
    print(f"ViT-L/16 shape at 384 px (24 layers × 16 heads × 577 tokens), batch 1, random weights, {args.dtype} "
          f"on {args.device}; extra peak memory of a fresh process over the loaded model\n")
    print(f"{'strategy':70s} {'extra peak MiB':>15s}")
    for strategy, label in STRATEGIES.items():
        command = [sys.executable, __file__, "--memory-child", strategy, "--device", args.device, "--dtype", args.dtype]
        out = subprocess.run(command, capture_output=True, text=True, check=True)
        row = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{label:70s} {row['peak_mib'] - row['before_mib']:15.0f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    parser.add_argument("--original-max-batch", type=int, default=32)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (the CI machine has 2 cores)")
    parser.add_argument("--memory", action="store_true", help="run the ViT-L/384 memory comparison instead")
    parser.add_argument("--breakdown", nargs="?", const="rollout", choices=["rollout", "transformer_attribution"],
                        help="time rollout's steps (or Transformer Attribution's passes) inside explainer calls instead")
    parser.add_argument("--methods", nargs="+", default=None, help="speed table: only these methods' rows (and the floors)")
    parser.add_argument("--malloc", choices=["fixed", "default"], default="fixed",
                        help="fixed: glibc's mmap/trim thresholds fixed at 1 GiB for the timing (see "
                             "fix_malloc_thresholds); default: glibc's moving thresholds")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.malloc == "fixed" and not (args.memory or args.memory_child) and not fix_malloc_thresholds():
        print("note: not glibc; malloc thresholds left as they are", file=sys.stderr)
    if args.memory_child:
        memory_child(args.memory_child, args.device, DTYPES[args.dtype])
    elif args.memory:
        memory(args)
    elif args.breakdown == "transformer_attribution":
        breakdown_attribution(args)
    elif args.breakdown:
        breakdown(args)
    else:
        speed(args)


if __name__ == "__main__":
    main()
