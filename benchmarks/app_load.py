"""The Gradio app under load: N concurrent gradio_client users, each asking for the top-5
predictions and an explanation of an image at once, round after round.

    python benchmarks/app_load.py                      # 8 users × 6 rounds on the demo model
    python benchmarks/app_load.py --users 16 --rounds 4 --method flow --concurrency 2

Prints every request's outcome count, throughput (requests per second over the whole run) and
latency percentiles (per request, as the client sees it: queueing included). Every response is
checked against the explainer called directly; ``tests/test_app_load.py`` runs the same driver.
Only loopback traffic: the app is started on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import socket
import sys
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(concurrency: int, max_queue: int):
    """The app on a free loopback port: ``(app, url)``."""
    from hf_vit_rollout.app import build_app, launch_kwargs

    app = build_app(("demo",), concurrency=concurrency, max_queue=max_queue)
    port = free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **launch_kwargs())
    return app, f"http://127.0.0.1:{port}/"


def expected_outputs(images: list[str], method: str) -> dict:
    """What the app must answer for each image, computed with the explainer directly."""
    from hf_vit_rollout import RolloutExplainer
    from hf_vit_rollout.app import ModelChoice, display_overlay, top_predictions

    choice = ModelChoice(("demo",))
    explainer = RolloutExplainer.from_pretrained("demo")
    out = {}
    for path in images:
        explanation = explainer(path, method=method, discard_ratio=0.9)
        out[path] = (top_predictions(choice, Image.open(path), "demo"), np.asarray(display_overlay(explanation)), explanation.title)
    return out


def drive(url: str, images: list[str], users: int, rounds: int, method: str) -> dict:
    """Every user predicts and explains ``rounds`` times, all starting together.

    Returns:
        ``{"responses": [(image, predictions, overlay array, caption)], "errors": [...],
        "latencies": [seconds per request], "wall": seconds}``.
    """
    from gradio_client import Client, handle_file

    clients = [Client(url, verbose=False) for _ in range(users)]
    start = threading.Barrier(users + 1)
    lock = threading.Lock()
    record: dict = {"responses": [], "errors": [], "latencies": []}

    def timed(call):
        began = time.perf_counter()
        result = call()
        with lock:
            record["latencies"].append(time.perf_counter() - began)
        return result

    def user(index: int) -> None:
        client = clients[index]
        start.wait()
        for r in range(rounds):
            image = images[(index + r) % len(images)]
            try:
                predictions = timed(lambda: client.predict(handle_file(image), "demo", api_name="/predict"))
                overlay, caption = timed(
                    lambda: client.predict(handle_file(image), "demo", method, "mean", 0.9, "predicted class", api_name="/explain")
                )
                with lock:
                    record["responses"].append((image, predictions, np.asarray(Image.open(overlay).convert("RGB")), caption))
            except Exception as exc:  # noqa: BLE001 - counted and reported
                with lock:
                    record["errors"].append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=user, args=(i,)) for i in range(users)]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    record["wall"] = time.perf_counter() - began
    return record


def wrong_responses(record: dict, expected: dict) -> list[str]:
    """Every response that differs from the direct explainer's (empty when all are correct)."""
    wrong = []
    for image, predictions, overlay, caption in record["responses"]:
        want_top, want_overlay, want_caption = expected[image]
        got_top = {c["label"]: c["confidence"] for c in predictions.get("confidences", [])}
        if set(got_top) != set(want_top) or any(abs(got_top[k] - want_top[k]) > 1e-5 for k in want_top):
            wrong.append(f"{image}: predictions {got_top} != {want_top}")
        if overlay.shape != want_overlay.shape or not np.array_equal(overlay, want_overlay):
            wrong.append(f"{image}: overlay differs")
        if caption != want_caption:
            wrong.append(f"{image}: caption {caption!r} != {want_caption!r}")
    return wrong


def summary(record: dict) -> dict:
    latencies = np.array(record["latencies"])
    return {
        "requests": len(latencies),
        "errors": len(record["errors"]),
        "throughput": len(latencies) / record["wall"],
        "p50": float(np.percentile(latencies, 50)),
        "p95": float(np.percentile(latencies, 95)),
        "max": float(latencies.max()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--method", default="gae")
    parser.add_argument("--concurrency", type=int, default=2, help="the app's queue concurrency")
    parser.add_argument("--max-queue", type=int, default=64)
    args = parser.parse_args()
    from hf_vit_rollout.demo import example_images

    images = [str(p) for p in example_images()]
    expected = expected_outputs(images, args.method)
    app, url = start_app(args.concurrency, args.max_queue)
    try:
        record = drive(url, images, args.users, args.rounds, args.method)
    finally:
        app.close()
    stats = summary(record)
    wrong = wrong_responses(record, expected)
    print(f"{args.users} users × {args.rounds} rounds (predict + explain, method={args.method}), "
          f"app concurrency {args.concurrency}, demo model, {len(images)} example images")
    print(f"requests {stats['requests']}, errors {stats['errors']}, wrong {len(wrong)}")
    print(f"throughput {stats['throughput']:.1f} requests/s over {record['wall']:.1f} s")
    print(f"latency p50 {stats['p50'] * 1000:.0f} ms, p95 {stats['p95'] * 1000:.0f} ms, max {stats['max'] * 1000:.0f} ms")
    for line in (record["errors"] + wrong)[:10]:
        print("  ", line)


if __name__ == "__main__":
    main()
