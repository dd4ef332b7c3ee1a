"""Closed-loop gRPC load: C concurrent callers, k items per call, for a fixed time. Prints one JSON line."""

import asyncio
import itertools
import json
import sys
import time

import grpc
import numpy as np

from bench.corpus import build_corpus
from bench.scenarios import SCENARIOS


async def run(name: str, address: str, concurrency: int, per_call: int, seconds: float, warmup: float) -> dict:
    scenario = SCENARIOS[name]
    requests = scenario.grpc_requests(build_corpus(), per_call)
    counter = itertools.count()
    latencies: list[float] = []
    errors = 0
    async with grpc.aio.insecure_channel(address) as channel:
        call = scenario.grpc_method(channel)
        loop = asyncio.get_running_loop()
        measure_from = loop.time() + warmup
        stop_at = measure_from + seconds

        async def caller() -> None:
            nonlocal errors
            while (now := loop.time()) < stop_at:
                try:
                    await call(requests[next(counter) % len(requests)], timeout=60)
                except grpc.aio.AioRpcError:
                    errors += 1
                    continue
                if now >= measure_from:
                    latencies.append(loop.time() - now)

        started = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started - warmup
    ms = np.array(latencies) * 1000
    return {"requests": len(latencies), "duration_s": elapsed, "errors": errors,
            "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


if __name__ == "__main__":
    name, address, concurrency, per_call, seconds, warmup = sys.argv[1:7]
    result = asyncio.run(run(name, address, int(concurrency), int(per_call), float(seconds), float(warmup)))
    print(json.dumps(result))
