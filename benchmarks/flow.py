"""Attention Flow: our implementation vs the networkx reference, at ViT scale.

For each shape (DeiT-tiny: 12 layers × 3 heads × 197 tokens; ViT-B: 12 × 12 × 197; ViT-B/16 at
384 px: 12 × 12 × 577) on block-structured ("clustered") attention, and on the shipped demo
model's real attention, prints the time per image of ``attention_flow`` (flow from every token), and
of the reference: one ``networkx.maximum_flow_value`` per source token on the same layered graph, as
the paper authors' code does. The reference is far too slow to run for every token, so it is timed
on ``--ref-sources`` tokens and extrapolated to all of them (marked ``*``); the values it computed
are checked against ours.

    python benchmarks/flow.py                      # all shapes
    python benchmarks/flow.py --quick              # small shapes only (a smoke run)
"""

from __future__ import annotations

import argparse
import time

import networkx as nx
import numpy as np
import torch
from PIL import Image

from hf_vit_rollout.methods import attention_flow, flow_error_bound, rollout_layer
from hf_vit_rollout.testing import clustered_attention


def reference_flows(attentions, sources, flow_func, discard_ratio):
    """networkx max-flow from each token in ``sources`` (one sample), float capacities."""
    layers = [rollout_layer(a, discard_ratio=discard_ratio)[0].double().numpy() for a in attentions]
    n = layers[0].shape[0]
    graph = nx.DiGraph()
    for layer, a in enumerate(layers):
        ii, jj = np.nonzero(a > 0)
        graph.add_edges_from(
            ((layer, int(j)), (layer + 1, int(i)), {"capacity": float(a[i, j])}) for i, j in zip(ii, jj)
        )
    graph.add_edge((len(layers), 0), "sink", capacity=1.0)
    started = time.perf_counter()
    values = [nx.maximum_flow_value(graph, (0, j), "sink", flow_func=flow_func) for j in sources]
    per_source = (time.perf_counter() - started) / len(sources)
    num_edges = sum(int((a > 0).sum()) for a in layers) + 1
    return np.array(values), per_source * n, num_edges


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ref-sources", type=int, default=2, help="tokens the networkx reference is timed on")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--discard-ratios", type=float, nargs="+", default=[0.9, 0.0], help="0.9 is the default of method='flow'")
    parser.add_argument("--edmonds-karp", action="store_true", help="also time networkx Edmonds-Karp (the authors' choice; very slow)")
    args = parser.parse_args()
    torch.set_num_threads(2)

    cases = [("demo model, real attention (6 × 4 × 65)", demo_attention)]
    shapes = [("DeiT-tiny clustered (12 × 3 × 197)", 12, 3, 197), ("ViT-B clustered (12 × 12 × 197)", 12, 12, 197)]
    if not args.quick:
        shapes.append(("ViT-B/16 384px clustered (12 × 12 × 577)", 12, 12, 577))
    for name, layers, heads, tokens in shapes:
        cases.append((name, lambda l=layers, h=heads, n=tokens: clustered_attention(1, h, n, l, groups=8, strength=8.0, sharpness=2.0, seed=0)))

    flow_funcs = [("preflow_push", nx.algorithms.flow.preflow_push)]
    if args.edmonds_karp:
        flow_funcs.append(("edmonds_karp", nx.algorithms.flow.edmonds_karp))
    header = (f"{'case':44s} {'discard':>7s} {'ours s/img':>11s} {'reference':>13s} {'ref s/img':>11s} "
              f"{'speed-up':>9s} {'max |diff|':>11s} {'bound':>8s}")
    print(header)
    print("-" * len(header))
    for name, make in cases:
        attentions = make()
        n = attentions[0].shape[-1]
        for discard_ratio in args.discard_ratios:
            ours, seconds = time_ours(attentions, args.repeats, discard_ratio)
            dense = discard_ratio == 0 and n > 400
            sources = np.linspace(0, n - 1, 1 if dense else min(args.ref_sources, n)).astype(int)
            for ref_name, func in flow_funcs:
                values, ref_seconds, num_edges = reference_flows(attentions, sources, func, discard_ratio)
                diff = float(np.abs(values - ours[sources]).max())
                extrapolated = "*" if len(sources) < n else " "
                print(
                    f"{name:44s} {discard_ratio:7g} {seconds:11.3f} {ref_name:>13s} {ref_seconds:10.1f}{extrapolated} "
                    f"{ref_seconds / seconds:8.0f}× {diff:11.1e} {flow_error_bound(num_edges):8.0e}",
                    flush=True,
                )
    print("\n* reference timed on --ref-sources tokens and extrapolated to all tokens.")
    print("bound: largest shortfall the integer capacity scaling can cause (num_edges / FLOW_SCALE).")


if __name__ == "__main__":
    main()
