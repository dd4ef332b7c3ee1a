"""Which signal tells an autoscaler that the embedding worker needs help: its CPU, or its queue depth? Measured
against a running mesh (a row of the autoscaling section of docs/operations.md):

    make start && .venv/bin/python -m bench.autoscaling_signal [GATEWAY_URL [WORKER_METRICS_URL]]

For each concurrency (one text a request, `Cache-Control: no-cache`, wrk): requests/s and latency, the worker
process's CPU (cores busy, from its own process_cpu_seconds_total), its batcher's queue depth and its gRPC calls in
flight, sampled every 100 ms.
"""

import re
import sys
import threading
import time
import urllib.request

from bench.batches import wrk
from bench.corpus import build_corpus

CONCURRENCY = (1, 2, 4, 8, 16, 32, 64)
SECONDS = 8


def scrape(url: str) -> tuple[float, float, float]:
    """The worker's CPU seconds so far, its queue depth now (summed over models) and its calls in flight."""
    text = urllib.request.urlopen(url, timeout=5).read().decode()

    def total(name: str) -> float:
        return sum(float(value) for value in re.findall(rf"^{name}\{{[^}}]*\}} (\S+)$", text, re.M))

    cpu = float(re.search(r"^process_cpu_seconds_total (\S+)$", text, re.M).group(1))
    return cpu, total("torchgate_batcher_queue_depth"), total("torchgate_worker_requests_in_flight")


def sampled(metrics_url: str, done: threading.Event) -> tuple[list[float], list[float]]:
    """Queue depths and calls in flight, every 100 ms until `done` (filled from a thread)."""
    depths: list[float] = []
    in_flight: list[float] = []

    def sample() -> None:
        while not done.is_set():
            _, depth, calls = scrape(metrics_url)
            depths.append(depth)
            in_flight.append(calls)
            time.sleep(0.1)

    threading.Thread(target=sample, daemon=True).start()
    return depths, in_flight


def mean(values: list[float]) -> float:
    return sum(values) / max(len(values), 1)


def measure(url: str, metrics_url: str) -> list[dict]:
    bodies = [{"input": text} for text in build_corpus(4000, seed=31)]
    rows = []
    for concurrency in CONCURRENCY:
        done = threading.Event()
        cpu_before, started = scrape(metrics_url)[0], time.monotonic()
        depths, in_flight = sampled(metrics_url, done)
        load = wrk(url, bodies, concurrency, SECONDS)
        done.set()
        cpu_cores = (scrape(metrics_url)[0] - cpu_before) / (time.monotonic() - started)
        rows.append({"concurrency": concurrency, "rps": load["requests"] / load["duration_s"],
                     "p50_ms": load["p50_ms"], "p99_ms": load["p99_ms"], "cpu_cores": cpu_cores,
                     "queue_depth": mean(depths), "in_flight": mean(in_flight)})
    return rows


COLUMNS = ("C", "req/s", "p50 ms", "p99 ms", "worker CPU (cores)", "mean queue depth", "calls in flight")


def print_rows(rows: list[dict]) -> None:
    print(" | ".join(COLUMNS))
    for row in rows:
        print(f"{row['concurrency']} | {row['rps']:.0f} | {row['p50_ms']:.1f} | {row['p99_ms']:.1f} | "
              f"{row['cpu_cores']:.2f} | {row['queue_depth']:.1f} | {row['in_flight']:.1f}")


def main() -> None:
    url = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8000"
    print_rows(measure(url, sys.argv[2] if len(sys.argv) > 2 else "http://127.0.0.1:9452/metrics"))


if __name__ == "__main__":
    main()
