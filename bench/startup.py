"""Cold and warm starts of each model worker: from the process's launch to its gRPC health saying SERVING.

    .venv/bin/python -m bench.startup

Cold: an empty cache directory (the self-check measures, OpenVINO converts and compiles). Warm: the same
directory again, as a restart finds it (decision.py: the decision restored, the converted and compiled models
read). Each worker starts alone, on free ports, with the settings `scripts/start.sh` gives it.
"""

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORKERS = ("gpu", "embedding", "reranking", "classifier")
# What scripts/start.sh sets for a local mesh: the reranker stands in with the bundled embedder.
MESH_DEFAULTS = {"TORCHGATE_RERANKING_FALLBACK": "embedding"}


def start_seconds(worker: str, cache_dir: str, run_dir: Path) -> float:
    """Launch the worker, wait for its log's "serving" line, stop it; the seconds from launch to serving."""
    prefix = f"TORCHGATE_{worker.upper()}_"
    log = run_dir / f"{worker}.log"
    env = {**os.environ, **MESH_DEFAULTS, f"{prefix}PORT": "0", f"{prefix}METRICS_PORT": "0",
           f"{prefix}OPENVINO_CACHE_DIR": cache_dir, f"{prefix}DEVICE": "cpu", "TORCHGATE_LOG_FORMAT": "text"}
    with log.open("w") as output:
        started = time.perf_counter()
        process = subprocess.Popen([sys.executable, "-m", f"services.{worker}"], env=env, stdout=output,
                                   stderr=subprocess.STDOUT, cwd=ROOT)
        try:
            while "worker: serving" not in log.read_text():
                if process.poll() is not None:
                    raise RuntimeError(f"{worker} exited during start-up: {log.read_text()[-2000:]}")
                time.sleep(0.05)
            return time.perf_counter() - started
        finally:
            process.terminate()
            process.wait(timeout=60)


def measure() -> list[dict]:
    rows = []
    for worker in WORKERS:
        with tempfile.TemporaryDirectory() as cache_dir, tempfile.TemporaryDirectory() as run_dir:
            cold = start_seconds(worker, cache_dir, Path(run_dir))
            warm = start_seconds(worker, cache_dir, Path(run_dir))
        rows.append({"worker": worker, "cold_s": cold, "warm_s": warm})
    return rows


def main() -> None:
    print("worker | cold start (s) | warm start (s)")
    for row in measure():
        print(f"{row['worker']} | {row['cold_s']:.1f} | {row['warm_s']:.1f}")


if __name__ == "__main__":
    main()
