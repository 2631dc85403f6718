"""Soak the Gradio app: concurrent gradio_client users asking for mixed models, methods and image sizes,
with bad uploads among them, every answer checked against the explainer called directly.

    python benchmarks/app_soak.py                          # 6 users × 12 requests
    python benchmarks/app_soak.py --users 12 --requests 30 --concurrency 4 --seed 1

The app serves the demo ViT, the demo Swin and a small random Swin behind a processor that does not
resize (so the image sizes reach it and its windows change with them: 16 and 32 px run with other
windows, 8 px is smaller than a window and must be refused). Each request draws a model, a method,
an image size and sometimes a text file as the upload. A request's outcome is one of:

* ``right``: the overlay is pixel-equal to the explainer's own, and the caption is the same;
* ``refused``: a message from the app where the explainer refuses too (same message);
* ``WRONG``: anything else (another picture, a message where the explainer answers, Gradio's generic
  error, a refusal the explainer does not make).

Prints the counts, throughput and latency percentiles, then up to ten wrong answers; exit code 1 if
any. Only loopback traffic: the app is started on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from app_load import free_port  # noqa: E402

METHODS = ["rollout", "gae", "attnlrp", "legrad", "transformer_attribution", "attention", "flow"]
SIZES = [(8, 8), (16, 16), (32, 32), (24, 40), (64, 64), (50, 90)]


def any_size_swin(folder: Path) -> str:
    """A random two-stage Swin (2-px patches, 4-token windows) whose processor does not resize."""
    import transformers as T

    torch.manual_seed(0)
    config = T.SwinConfig(image_size=32, patch_size=2, embed_dim=16, depths=[2, 2], num_heads=[2, 2], window_size=4,
                          num_labels=3, id2label={0: "cat", 1: "dog", 2: "bird"}, label2id={"cat": 0, "dog": 1, "bird": 2})
    model = T.SwinForImageClassification(config)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    model.save_pretrained(folder)
    T.ViTImageProcessorPil(do_resize=False).save_pretrained(folder)
    return str(folder)


def make_requests(count: int, models: list[str], folder: Path, rng) -> list[dict]:
    """The requests of one user: model, method, image file (or a text file posing as one)."""
    requests = []
    for i in range(count):
        h, w = SIZES[rng.integers(len(SIZES))]
        path = folder / f"r{rng.integers(10**9)}_{h}x{w}.png"
        if rng.random() < 0.1:
            path.write_bytes(b"this is not a picture")
        else:
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
        requests.append({"model": models[rng.integers(len(models))], "method": METHODS[rng.integers(len(METHODS))],
                         "image": str(path)})
    return requests


def expected(choice, request: dict):
    """``("right", overlay array, caption)`` or ``("refused", message)`` from the app's code in-process."""
    import gradio as gr

    from hf_vit_rollout.app import PREDICTED, explain, image_input

    try:
        from gradio.data_classes import ImageData

        image = image_input().preprocess(ImageData(path=request["image"], orig_name=Path(request["image"]).name))
        settings = {"method": request["method"], "head_fusion": "mean", "discard_ratio": 0.9, "target": PREDICTED}
        path, caption = explain(choice, image, request["model"], settings)
    except gr.Error as exc:
        return "refused", exc.message
    return "right", np.asarray(Image.open(path).convert("RGB")), caption


def drive(url: str, plans: list[list[dict]]) -> dict:
    """Every user sends its requests one after another, all users at once."""
    from gradio_client import Client, handle_file

    clients = [Client(url, verbose=False) for _ in plans]
    start = threading.Barrier(len(plans) + 1)
    lock = threading.Lock()
    record: dict = {"answers": [], "latencies": []}

    def user(index: int) -> None:
        start.wait()
        for request in plans[index]:
            began = time.perf_counter()
            try:
                overlay, caption = clients[index].predict(handle_file(request["image"]), request["model"], request["method"],
                                                          "mean", 0.9, "predicted class", api_name="/explain")
                answer = ("right", np.asarray(Image.open(overlay).convert("RGB")), caption)
            except Exception as exc:  # noqa: BLE001 - compared below
                answer = ("refused", str(exc))
            with lock:
                record["latencies"].append(time.perf_counter() - began)
                record["answers"].append((request, answer))

    threads = [threading.Thread(target=user, args=(i,)) for i in range(len(plans))]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    record["wall"] = time.perf_counter() - began
    return record


def judge(record: dict, choice) -> tuple[Counter, list[str]]:
    counts, wrong = Counter(), []
    for request, answer in record["answers"]:
        want = expected(choice, request)
        name = f"{Path(request['model']).name} {request['method']} {Path(request['image']).name}"
        if answer[0] != want[0]:
            wrong.append(f"{name}: the app {answer[0]} ({str(answer[-1])[:120]}), the explainer {want[0]} ({str(want[-1])[:120]})")
        elif answer[0] == "refused" and want[1] not in answer[1]:
            wrong.append(f"{name}: message {answer[1][:150]!r}, expected {want[1][:150]!r}")
        elif answer[0] == "right" and (answer[1].shape != want[1].shape or not np.array_equal(answer[1], want[1]) or answer[2] != want[2]):
            wrong.append(f"{name}: overlay or caption differs from the explainer's")
        else:
            counts[answer[0]] += 1
            continue
        counts["WRONG"] += 1
    return counts, wrong


def soak(users: int, requests: int, concurrency: int, seed: int) -> tuple[Counter, list[str], dict]:
    from hf_vit_rollout.app import ModelChoice, build_app, launch_kwargs

    rng = np.random.default_rng(seed)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        models = ["demo", "demo-swin", any_size_swin(folder / "swin_any_size")]
        plans = [make_requests(requests, models, folder, rng) for _ in range(users)]
        app = build_app(tuple(models), concurrency=concurrency)
        port = free_port()
        app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **launch_kwargs())
        try:
            record = drive(f"http://127.0.0.1:{port}/", plans)
        finally:
            app.close()
        counts, wrong = judge(record, ModelChoice(tuple(models)))
    return counts, wrong, record


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=6)
    parser.add_argument("--requests", type=int, default=12, help="requests per user")
    parser.add_argument("--concurrency", type=int, default=2, help="the app's queue concurrency")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    counts, wrong, record = soak(args.users, args.requests, args.concurrency, args.seed)
    latencies = np.array(record["latencies"])
    print(f"{args.users} users × {args.requests} requests, app concurrency {args.concurrency}, models demo, demo-swin, "
          f"swin_any_size; methods {', '.join(METHODS)}; sizes {', '.join(f'{h}x{w}' for h, w in SIZES)}")
    print(f"requests {len(latencies)}: right {counts['right']}, refused {counts['refused']}, wrong {counts['WRONG']}")
    print(f"throughput {len(latencies) / record['wall']:.1f} requests/s over {record['wall']:.1f} s; latency p50 "
          f"{np.percentile(latencies, 50) * 1000:.0f} ms, p95 {np.percentile(latencies, 95) * 1000:.0f} ms")
    for line in wrong[:10]:
        print("  WRONG", line)
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
