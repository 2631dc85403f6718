"""Attention Flow: ours vs scipy's Dinic vs networkx, per case and discard ratio.

For each case (the shipped demo model's real attention; block-structured "clustered" attention of
DeiT-tiny, ViT-B and ViT-L shapes at 224 px, and of ViT-B/16 and ViT-L/16 at 384 px) and each
discard ratio, prints the seconds per image of

* ``ours``: ``attention_flow`` (flow from every input token; best of ``--repeats``);
* ``scipy``: ``scipy.sparse.csgraph.maximum_flow`` (Dinic, compiled) solved from scratch for each
  source on the same graph (``solver="dinic"``, the previous implementation);
* ``networkx``: ``networkx.maximum_flow_value`` (preflow-push) for each source on the same graph,
  as the paper authors' code does (they used Edmonds–Karp, slower still).

The references are timed on ``--ref-sources`` tokens and extrapolated to all tokens (marked ``*``)
where running them on every token would take too long; the values they computed are compared with
ours ("max |diff|", next to the bound that integer capacity scaling allows). Rows with
``discard > 0`` are an approximation of the paper's flow (``discard = 0``): "ρ vs exact" is the
Spearman correlation of their map with the exact one.

    python benchmarks/flow.py              # every case (the 577-token ones take minutes)
    python benchmarks/flow.py --quick      # the demo model and the DeiT-tiny shape only
    python benchmarks/flow.py --first-call # cost of the first flow call in a fresh process
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import networkx as nx
import numpy as np
import torch
from PIL import Image
from scipy.stats import spearmanr

from hf_vit_rollout.methods import SCIPY_FLOW_SCALE, attention_flow, flow_error_bound, rollout_layer
from hf_vit_rollout.methods.flow import FLOW_SCALE, layered_graph
from hf_vit_rollout.testing import clustered_attention


def demo_attention():
    """The shipped demo model's real attention on one held-out image."""
    from hf_vit_rollout import RolloutExplainer
    from hf_vit_rollout.capture import AttentionCapture
    from hf_vit_rollout.demo import example_images

    explainer = RolloutExplainer.from_pretrained("demo")
    image = Image.open(example_images()[-1]).convert("RGB")
    pixels = explainer.image_processor(images=[image], return_tensors="pt")["pixel_values"]
    maps = []
    with AttentionCapture(explainer.model, lambda layer, a: maps.append(a.detach())), torch.no_grad():
        explainer.model(pixel_values=pixels)
    return maps


def time_ours(attentions, repeats, discard_ratio):
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        flows = attention_flow(attentions, discard_ratio=discard_ratio)
        best = min(best, time.perf_counter() - started)
    return flows[0].double().numpy(), best


def scipy_flows(layers, sources):
    """scipy's Dinic, one solve per source; values and seconds per source."""
    from scipy.sparse.csgraph import maximum_flow

    graph, sink = layered_graph(layers, np.eye(layers[0].shape[0])[0])
    started = time.perf_counter()
    values = [maximum_flow(graph, int(j), sink, method="dinic").flow_value / SCIPY_FLOW_SCALE for j in sources]
    return np.array(values), (time.perf_counter() - started) / len(sources)


def networkx_flows(layers, sources):
    """networkx preflow-push on float capacities, one solve per source; values and seconds per source."""
    graph = nx.DiGraph()
    for layer, a in enumerate(layers):
        ii, jj = np.nonzero(a > 0)
        graph.add_edges_from(((layer, int(j)), (layer + 1, int(i)), {"capacity": float(a[i, j])}) for i, j in zip(ii, jj))
    graph.add_edge((len(layers), 0), "sink", capacity=1.0)
    started = time.perf_counter()
    flow_func = nx.algorithms.flow.preflow_push
    values = [nx.maximum_flow_value(graph, (0, int(j)), "sink", flow_func=flow_func) for j in sources]
    return np.array(values), (time.perf_counter() - started) / len(sources)


def first_call() -> None:
    """Time the first and second flow call of fresh processes (numba import and kernel cache load)."""
    code = (
        "import time; t0 = time.perf_counter(); import torch; from hf_vit_rollout.methods import attention_flow;"
        "from hf_vit_rollout.testing import clustered_attention; a = clustered_attention(1, 3, 197, 12, groups=8, "
        "strength=8.0, sharpness=2.0); t1 = time.perf_counter(); attention_flow(a); t2 = time.perf_counter(); "
        "attention_flow(a); t3 = time.perf_counter(); print(f'{t2 - t1:.3f} {t3 - t2:.3f}')"
    )
    for run in range(3):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
        first, second = (float(x) for x in out)
        print(f"fresh process {run + 1}: first call {first:.3f} s, second call {second:.3f} s, "
              f"difference (numba import + kernel load) {first - second:.3f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ref-sources", type=int, default=4, help="tokens the references are timed on when not all")
    parser.add_argument("--scipy-all-below", type=int, default=200, help="run scipy on every token up to this many tokens")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="demo model and DeiT-tiny shape only")
    parser.add_argument("--first-call", action="store_true", help="only time the first call in fresh processes")
    parser.add_argument("--discard-ratios", type=float, nargs="+", default=[0.0, 0.9],
                        help="0 is the paper's flow (method='flow' default); 0.9 the previous default")
    args = parser.parse_args()
    if args.first_call:
        first_call()
        return
    torch.set_num_threads(2)

    cases = [("demo model, real attention", demo_attention)]
    shapes = [("DeiT-tiny clustered (12 × 3 × 197)", 12, 3, 197)]
    if not args.quick:
        shapes += [
            ("ViT-B clustered (12 × 12 × 197)", 12, 12, 197),
            ("ViT-L clustered (24 × 16 × 197)", 24, 16, 197),
            ("ViT-B/16 384px clustered (12 × 12 × 577)", 12, 12, 577),
            ("ViT-L/16 384px clustered (24 × 16 × 577)", 24, 16, 577),
        ]
    for name, layers, heads, tokens in shapes:
        cases.append((name, lambda l=layers, h=heads, n=tokens: clustered_attention(1, h, n, l, groups=8, strength=8.0, sharpness=2.0, seed=0)))

    print("ours: warm-started push-relabel kernel, one thread; references: one solve per source")
    header = (f"{'case':42s} {'discard':>7s} {'ours s/img':>10s} {'scipy s/img':>12s} {'networkx s/img':>15s} "
              f"{'max |diff|':>10s} {'bound':>7s} {'ρ vs exact':>10s}")
    print(header)
    print("-" * len(header))
    for name, make in cases:
        attentions = make()
        n = attentions[0].shape[-1]
        if "(" not in name:
            name += f" ({len(attentions)} × {attentions[0].shape[1]} × {n})"
        exact = None
        for discard_ratio in args.discard_ratios:
            repeats = args.repeats if n < 400 else 1
            ours, seconds = time_ours(attentions, repeats, discard_ratio)
            if discard_ratio == 0:
                exact = ours
            layers = [rollout_layer(a, discard_ratio=discard_ratio)[0].double().numpy() for a in attentions]
            few = np.linspace(0, n - 1, min(args.ref_sources, n)).astype(int)
            scipy_sources = np.arange(n) if n <= args.scipy_all_below else few
            scipy_values, scipy_per_source = scipy_flows(layers, scipy_sources)
            diffs = [np.abs(scipy_values - ours[scipy_sources]).max()]
            scipy_text = f"{scipy_per_source * n:11.2f}{'*' if len(scipy_sources) < n else ' '}"
            if n < 400:
                nx_values, nx_per_source = networkx_flows(layers, few[: max(1, args.ref_sources // 2)])
                diffs.append(np.abs(nx_values - ours[few[: len(nx_values)]]).max())
                nx_text = f"{nx_per_source * n:14.1f}*"
            else:
                nx_text = f"{'not run':>15s}"
            num_edges = sum(int((a > 0).sum()) for a in layers) + 1
            bound = flow_error_bound(num_edges, SCIPY_FLOW_SCALE) + flow_error_bound(num_edges, FLOW_SCALE)
            rho = "" if discard_ratio == 0 or exact is None else f"{spearmanr(ours, exact).statistic:10.2f}"
            print(
                f"{name:42s} {discard_ratio:7g} {seconds:10.3f} {scipy_text} {nx_text} "
                f"{max(diffs):10.1e} {bound:7.0e} {rho:>10s}",
                flush=True,
            )
    print("\n* timed on --ref-sources tokens and extrapolated to all tokens.")
    print("max |diff|: largest difference between a reference's values and ours; bound: what integer scaling allows")
    print("(num_edges / 2**30 for scipy plus num_edges / 2**50 for ours; networkx uses float capacities).")
    print("networkx is not run at 577 tokens (its graph alone has 4-8 million edges).")


if __name__ == "__main__":
    main()
