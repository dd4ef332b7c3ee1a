"""A batch job against the same texts sent interactively, and what a running batch costs interactive callers,
measured in one run (a row of `make bench`, or alone against a running mesh):

    make start && .venv/bin/python -m bench.batches [GATEWAY_URL]

1. a batch of 20,000 one-text embedding lines on the idle mesh, created to `completed` (upload and its check
   timed apart);
2. the same 20,000 texts as interactive C=8 x 8 requests (wrk, `Cache-Control: no-cache`);
3. interactive C=1 (one text a request) on the idle mesh, then again while a second batch (of other texts) runs.
Each batch is of texts the mesh has not seen, so no phase is answered by the response cache.
"""

import json
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx

from bench.corpus import build_corpus

ROOT = Path(__file__).resolve().parents[1]
LINES = 20_000
INTERACTIVE_S = 10
FINISHED = ("completed", "failed", "expired", "cancelled")


def texts() -> list[str]:
    run = uuid.uuid4().hex[:6]  # texts no earlier run of the bench left in a cache
    return [f"{run} {text}" for text in build_corpus(LINES, seed=23)]


def wrk(url: str, bodies: list[dict], concurrency: int, seconds: float) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as file:
        file.write("".join(json.dumps(body) + "\n" for body in bodies))
    output = subprocess.run(["wrk", "-t1", f"-c{concurrency}", f"-d{round(seconds)}s", "--timeout", "60s", "-s",
                             str(ROOT / "bench/wrk.lua"), url, "--", file.name, "/v1/embeddings",
                             "Cache-Control: no-cache"], capture_output=True, text=True, check=True).stdout
    line = [line for line in output.splitlines() if line.startswith("WRK_JSON ")][-1]
    return json.loads(line.removeprefix("WRK_JSON "))


def run_batch(url: str, sent: list[str], during) -> dict:
    """Upload, create, poll to the end; `during()`, if given, runs in a thread once the batch is in progress."""
    content = "".join(json.dumps({"custom_id": f"t{i}", "method": "POST", "url": "/v1/embeddings",
                                  "body": {"input": text}}) + "\n" for i, text in enumerate(sent)).encode()
    with httpx.Client(base_url=url, timeout=600) as client:
        started = time.perf_counter()
        file = client.post("/v1/files", files={"file": ("bench.jsonl", content)}, data={"purpose": "batch"})
        file.raise_for_status()
        uploaded_s = time.perf_counter() - started
        started = time.perf_counter()
        batch = client.post("/v1/batches", json={"input_file_id": file.json()["id"], "endpoint": "/v1/embeddings",
                                                 "completion_window": "24h"}).json()
        measured: dict = {}
        worker = None
        while batch["status"] not in FINISHED:
            if during is not None and worker is None and batch["request_counts"]["completed"] > LINES // 20:
                worker = threading.Thread(target=lambda: measured.update(during()))
                worker.start()
            time.sleep(0.1)
            batch = client.get(f"/v1/batches/{batch['id']}").json()
        elapsed = time.perf_counter() - started
        # Whether the interactive load ran wholly while the batch did (else part of it saw an idle mesh).
        throughout = worker is not None and not worker.is_alive()
        if worker is not None:
            worker.join()
    return {"lines": LINES, "upload_s": uploaded_s, "file_bytes": len(content), "batch_s": elapsed,
            "status": batch["status"], "failed": batch["request_counts"]["failed"],
            "texts_per_s": LINES / elapsed, "interactive_during": measured, "batch_ran_throughout": throughout}


def measure(url: str) -> dict:
    sent = texts()
    batch = run_batch(url, sent, None)
    grouped = [{"input": sent[i:i + 8]} for i in range(0, LINES, 8)]
    interactive = wrk(url, grouped, 8, max(INTERACTIVE_S, batch["batch_s"] / 2))
    interactive_rate = interactive["requests"] * 8 / interactive["duration_s"]
    singles = [{"input": [text]} for text in sent[:2000]]
    idle = wrk(url, singles, 1, INTERACTIVE_S)
    busy = run_batch(url, texts(), lambda: wrk(url, singles, 1, INTERACTIVE_S))
    during = busy["interactive_during"]
    return {"batch": batch, "batch_with_interactive": busy, "idle_c1": idle,
            "interactive_c8x8": {**interactive, "texts_per_s": interactive_rate},
            "throughput_ratio": batch["texts_per_s"] / interactive_rate,
            "p99_ratio": during["p99_ms"] / idle["p99_ms"] if during else None}


def print_report(result: dict) -> None:
    batch, idle, busy = result["batch"], result["idle_c1"], result["batch_with_interactive"]
    during = busy["interactive_during"]
    print(f"batch of {batch['lines']} embedding lines: {batch['texts_per_s']:.0f} texts/s ({batch['batch_s']:.1f} s, "
          f"{batch['status']}, {batch['failed']} failed; upload and check of {batch['file_bytes'] / 1e6:.1f} MB "
          f"{batch['upload_s']:.1f} s) vs interactive C=8 x 8 {result['interactive_c8x8']['texts_per_s']:.0f} "
          f"texts/s: {result['throughput_ratio']:.2f}x")
    if during:
        print(f"interactive C=1 while the batch runs: p50 {during['p50_ms']:.1f} ms, p99 {during['p99_ms']:.1f} ms vs "
              f"idle p50 {idle['p50_ms']:.1f} ms, p99 {idle['p99_ms']:.1f} ms: p99 {result['p99_ratio']:.2f}x"
              + ("" if busy["batch_ran_throughout"] else " (the batch ended before the interactive load)"))


def main() -> None:
    print_report(measure(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8000"))


if __name__ == "__main__":
    main()
