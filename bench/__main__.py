"""`make bench`: start the mesh, load it from separate processes, print one table, write a JSON report.

For each scenario: (1) two in-process ceilings at their best batch size: fp32 (what sentence-transformers
users get by default) and the best in-process run (the fastest of fp32, bf16 autocast where the CPU has
native bf16, and sentence-transformers' OpenVINO backend), each the faster of a run before the mesh starts and
one after it stops (a shared machine's
speed drifts by more than the differences measured here), (2) direct
gRPC to the worker (closed-loop Python grpc.aio client), (3) REST through the gateway (wrk, a native
client), as items/s with p50/p99 latency and the served ratios against both ceilings; plus the dtype each
worker chose, the gateway hop and every process's RSS. Then the cost of tracing: the first scenario's first
load again on a mesh that exports every span to an OTLP/gRPC receiver in this process. Last, the cost of
containers, where `make images` has built them: embed C=32 x 1 through the containerized mesh
(`scripts/start.sh --compose`) between two runs of the same load on the local mesh. Then the edge
(bench/edge.py): the response cache's gain and costs, and the tenants' cost; chunk + embed of a 200-page Markdown
corpus against the same chunker and encode in one process (bench/documents.py); a batch job against the same texts
sent interactively, and interactive latency while a batch runs (bench/batches.py); zero-shot accuracy on held-out
CLINC150 texts and the label cache's latency (bench/zero_shot.py); last, the charts (bench/charts.py)
next to the report and into docs/charts/. The serving loads send
`Cache-Control: no-cache`: they repeat one corpus, which the cache would otherwise answer.
"""

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench import batches, documents, zero_shot
from bench.corpus import build_corpus
from bench.scenarios import SCENARIOS
from services.runtime.precision import cpu_bf16_flags
from tests.otlp import otlp_receiver

ROOT = Path(__file__).resolve().parents[1]
ALL_WORKERS = ("gpu", "embedding", "reranking", "classifier", "documents")
SHORT_DTYPE = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16", "openvino": "ov"}


def run_json(command: list[str], env: dict | None = None, marker: str = "") -> dict:
    output = subprocess.run(command, capture_output=True, text=True, check=True, env=env, cwd=ROOT).stdout
    line = [line for line in output.splitlines() if line.startswith(marker) and "{" in line][-1]
    return json.loads(line[len(marker):])


def describe_machine() -> dict:
    cpu = re.search(r"model name\s*:\s*(.*)", Path("/proc/cpuinfo").read_text())
    memory = re.search(r"MemTotal:\s*(\d+)", Path("/proc/meminfo").read_text())
    gpu = ""
    if shutil.which("nvidia-smi"):
        gpu = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True).stdout.strip()
    return {"cpu": cpu.group(1) if cpu else platform.processor(), "cores": len(os.sched_getaffinity(0)),
            "memory_gb": round(int(memory.group(1)) / 2**20, 1) if memory else None, "gpu": gpu or None,
            "python": platform.python_version(), "host": platform.node()}


def rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return round(int(re.search(r"VmRSS:\s*(\d+)", status).group(1)) / 1024, 1)


class Mesh:
    """The mesh on ports of its own choosing (port 0, read back from the run dir), started and stopped by the
    same scripts users run."""

    def __init__(self, **extra_env: str):
        self.run_dir = Path(tempfile.mkdtemp(prefix="torchgate-bench-"))
        self.env = {**os.environ, "TORCHGATE_RUN_DIR": str(self.run_dir), "TORCHGATE_PYTHON": sys.executable,
                    "TORCHGATE_LOG_LEVEL": "WARNING", **extra_env}
        for name in [*ALL_WORKERS, "gateway"]:  # every port its own: meshes can run side by side
            self.env[f"TORCHGATE_{name.upper()}_PORT"] = "0"
            self.env[f"TORCHGATE_{name.upper()}_METRICS_PORT"] = "0"
        self.ports: dict[str, int] = {}

    def __enter__(self):
        subprocess.run([str(ROOT / "scripts/start.sh")], env=self.env, check=True, cwd=ROOT)
        self.ports = {path.stem: int(path.read_text()) for path in self.run_dir.glob("*.port")}
        return self

    def dtypes(self) -> dict[str, str]:
        """The backend and dtype each model worker chose, and why (from /v1/models)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ports['gateway']}/v1/models", timeout=10) as reply:
            return {model["task"]: f"{model['backend']} {model['dtype']} ({model['backend_reason']}; "
                                   f"{model['dtype_reason']})"
                    for model in json.load(reply)["data"]}

    def __exit__(self, *exc):
        subprocess.run([str(ROOT / "scripts/stop.sh")], env=self.env, cwd=ROOT)

    def rss(self) -> dict[str, float]:
        return {pid_file.stem: rss_mb(int(pid_file.read_text())) for pid_file in self.run_dir.glob("*.pid")}


class ContainerMesh:
    """The containerized mesh (`scripts/start.sh --compose`) on host ports of its own; stopped on exit."""

    PORTS = {"gateway": 18100, "gpu": 51151, "embedding": 51152, "reranking": 51153, "classifier": 51154,
             "documents": 51155}

    def __init__(self):
        self.run_dir = Path(tempfile.mkdtemp(prefix="torchgate-bench-containers-"))
        self.ports = dict(self.PORTS)
        self.env = {**os.environ, "TORCHGATE_PYTHON": sys.executable,
                    **{f"TORCHGATE_{name.upper()}_PORT": str(port) for name, port in self.PORTS.items()}}

    @staticmethod
    def missing() -> str:
        """Why the containers cannot run here ('' when both images are built)."""
        found = subprocess.run(["bash", "-c", 'source scripts/containers.sh && find_engine && '
                                '"${ENGINE_CMD[@]}" image inspect "$GATEWAY_IMAGE" "$WORKER_IMAGE" >/dev/null'],
                               cwd=ROOT, capture_output=True, text=True)
        return "" if found.returncode == 0 else "no engine or no images (make images)"

    def __enter__(self):
        subprocess.run([str(ROOT / "scripts/start.sh"), "--compose"], env=self.env, check=True, cwd=ROOT)
        return self

    def __exit__(self, *exc):
        subprocess.run([str(ROOT / "scripts/stop.sh"), "--compose"], env=self.env, cwd=ROOT)


def containers_cost(seconds: float, warmup: float) -> dict:
    """embed C=32 x 1 over REST: local mesh, containerized mesh, local mesh again (the machine drifts)."""
    concurrency, per_call, scenario = 32, 1, SCENARIOS["embed"]
    if reason := ContainerMesh.missing():
        return {"skipped": reason}

    def served(mesh_factory) -> float:
        with mesh_factory() as mesh:
            return rate(rest_load(mesh, scenario, concurrency, per_call, seconds, warmup), per_call)

    local_before = served(Mesh)
    containers = served(ContainerMesh)
    local_after = served(Mesh)
    local = (local_before + local_after) / 2
    return {"scenario": "embed", "concurrency": concurrency, "per_call": per_call, "local_before": local_before,
            "local_after": local_after, "containers": containers, "ratio": containers / local}


# The serving loads repeat one corpus: past the warm-up every input would be a cache hit, so they skip the
# cache (which still stores); the cache has loads of its own (bench/edge.py).
NO_CACHE = ("Cache-Control: no-cache",)


def rest_load(mesh: Mesh, scenario, concurrency: int, per_call: int, seconds: float, warmup: float,
              bodies: list[bytes] | None = None, headers: tuple[str, ...] = NO_CACHE) -> dict:
    path = Path(mesh.run_dir, f"bodies-{per_call}-{time.monotonic_ns()}.jsonl")
    path.write_bytes(b"\n".join(bodies or scenario.rest_bodies(build_corpus(), per_call)) + b"\n")
    url = f"http://127.0.0.1:{mesh.ports['gateway']}"

    def wrk(duration: float) -> dict:
        return run_json(["wrk", "-t1", f"-c{concurrency}", f"-d{max(1, round(duration))}s", "--timeout", "60s",
                         "-s", str(ROOT / "bench/wrk.lua"), url, "--", str(path), scenario.rest_path, *headers],
                        marker="WRK_JSON ")

    if warmup:
        wrk(warmup)
    return wrk(seconds)


def grpc_load(mesh: Mesh, name: str, concurrency: int, per_call: int, seconds: float, warmup: float) -> dict:
    address = f"127.0.0.1:{mesh.ports[SCENARIOS[name].worker]}"
    return run_json([sys.executable, "-m", "bench.grpc_load", name, address, str(concurrency), str(per_call),
                     str(seconds), str(warmup)])


def tracing_cost(row: dict, seconds: float, warmup: float) -> dict:
    """One load through the gateway with every span exported over OTLP/gRPC, against the same load untraced."""
    scenario = SCENARIOS[row["scenario"]]
    with otlp_receiver() as (receiver, port), Mesh(TORCHGATE_OTLP_ENDPOINT=f"http://127.0.0.1:{port}") as mesh:
        traced = rest_load(mesh, scenario, row["concurrency"], row["per_call"], seconds, warmup)
        time.sleep(6)  # the exporters' batch delay (5 s): let the last spans arrive before counting
        spans = len(receiver.spans())
    return {"scenario": row["scenario"], "concurrency": row["concurrency"], "per_call": row["per_call"],
            "off": row["rest"]["rate"], "on": rate(traced, row["per_call"]), "p99_off_ms": row["rest"]["p99_ms"],
            "p99_on_ms": traced["p99_ms"], "spans_received": spans}


def in_process_runs(name: str, corpus: int, modes: tuple[str, ...]) -> list[dict]:
    """One in-process ceiling run per precision mode, each in a process of its own."""
    return [run_json([sys.executable, "-m", "bench.inprocess", name, str(corpus), mode]) for mode in modes]


def rate(result: dict, per_call: int) -> float:
    return result["requests"] * per_call / result["duration_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per load")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--corpus", type=int, default=1000, help="texts in the in-process ceiling run")
    args = parser.parse_args()
    names = args.scenarios.split(",")

    machine = describe_machine()
    modes = ("fp32", "bf16", "openvino") if cpu_bf16_flags() else ("fp32", "openvino")
    before = {name: in_process_runs(name, args.corpus, modes) for name in names}
    loads = []
    with Mesh() as mesh:
        dtypes = mesh.dtypes()
        for name in names:
            scenario = SCENARIOS[name]
            for concurrency, per_call in scenario.loads + (scenario.gpu_loads if machine["gpu"] else ()):
                loads.append((name, concurrency, per_call, {
                    "grpc": grpc_load(mesh, name, concurrency, per_call, args.seconds, args.warmup),
                    "rest": rest_load(mesh, scenario, concurrency, per_call, args.seconds, args.warmup)}))
        markdown = documents.corpus()
        documents_served = documents.served(f"http://127.0.0.1:{mesh.ports['gateway']}", markdown)
        batches_report = batches.measure(f"http://127.0.0.1:{mesh.ports['gateway']}")
        zero_shot_report = zero_shot.measure(f"http://127.0.0.1:{mesh.ports['gateway']}",
                                             f"127.0.0.1:{mesh.ports['classifier']}")
        rss = mesh.rss()
    documents_report = documents.report(documents_served, documents.in_process(markdown), len(markdown.split()))
    ceilings = {}
    for name in names:
        runs = [max(first, second, key=lambda run: run["rate"])
                for first, second in zip(before[name], in_process_runs(name, args.corpus, modes), strict=True)]
        ceilings[name] = {"fp32": runs[0], "best": max(runs, key=lambda run: run["rate"])}
    rows = []
    for name, concurrency, per_call, served in loads:
        fp32, best = ceilings[name]["fp32"], ceilings[name]["best"]
        rows.append({
            "scenario": name, "unit": SCENARIOS[name].unit, "concurrency": concurrency, "per_call": per_call,
            "in_process_fp32": fp32, "in_process_best": best,
            **{path: {**result, "rate": rate(result, per_call),
                      "vs_fp32": rate(result, per_call) / fp32["rate"],
                      "vs_best": rate(result, per_call) / best["rate"]}
               for path, result in served.items()},
        })
    busiest = max((row for row in rows if row["scenario"] == names[0]), key=lambda row: row["concurrency"])
    tracing = tracing_cost(busiest, args.seconds, args.warmup)
    containers = containers_cost(args.seconds, args.warmup) if "embed" in names else {"skipped": "no embed"}
    from bench.edge import measure, print_edge  # the edge's loads reuse this module's mesh and wrk runner

    edge = measure(args.seconds) if "embed" in names else {}
    report = {"machine": machine, "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "seconds_per_load": args.seconds, "worker_dtypes": dtypes, "rows": rows, "rss_mb": rss,
              "tracing": tracing, "containers": containers, "edge": edge, "documents": documents_report,
              "batches": batches_report, "zero_shot": zero_shot_report}
    print_table(report)
    documents.print_report(documents_report)
    batches.print_report(batches_report)
    zero_shot.print_report(zero_shot_report)
    if edge:
        print_edge(edge)
    out = ROOT / "bench/results" / f"{time.strftime('%Y%m%d-%H%M%S')}-{platform.node() or 'host'}.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"\nreport: {out.relative_to(ROOT)}")
    from bench.charts import draw

    print("charts: " + ", ".join(str(path.relative_to(ROOT)) for path in draw(out)))


def print_table(report: dict) -> None:
    machine = report["machine"]
    print(f"\n{machine['cpu']}, {machine['cores']} cores, {machine['memory_gb']} GB, GPU: {machine['gpu'] or 'none'}")
    for task, dtype in sorted(report["worker_dtypes"].items()):
        print(f"{task} worker computes in {dtype}")
    cells = f"{'/fp32':>6} {'/best':>6} {'p50':>7} {'p99':>6}"
    header = (f"{'scenario':<9}{'C':>4}{'k':>4} | {'fp32/s':>7} {'best/s':>7} (dtype, bs) | {'gRPC/s':>7} {cells} | "
              f"{'REST/s':>7} {cells}")
    print(header)
    print("-" * len(header))
    for row in report["rows"]:
        fp32, best = row["in_process_fp32"], row["in_process_best"]
        errors = f"  ({row['rest']['errors']} REST errors)" if row["rest"]["errors"] else ""
        print(f"{row['scenario']:<9}{row['concurrency']:>4}{row['per_call']:>4} | {fp32['rate']:>7.1f} "
              f"{best['rate']:>7.1f} ({SHORT_DTYPE[best['dtype']]}, {best['batch_size']:>2}) | "
              f"{served_cells(row['grpc'])} | {served_cells(row['rest'])}{errors}")
    for row in report["rows"]:
        if row["concurrency"] == 1 and row["per_call"] == 1:
            hop = row["rest"]["p50_ms"] - row["grpc"]["p50_ms"]
            print(f"gateway hop ({row['scenario']}, C=1 k=1, p50 REST - p50 gRPC): {hop:.2f} ms")
    print("RSS (MB): " + ", ".join(f"{name} {mb}" for name, mb in sorted(report["rss_mb"].items())))
    tracing = report["tracing"]
    print(f"tracing ({tracing['scenario']}, C={tracing['concurrency']} k={tracing['per_call']}, REST): "
          f"off {tracing['off']:.1f}/s p99 {tracing['p99_off_ms']:.0f} ms, on {tracing['on']:.1f}/s "
          f"p99 {tracing['p99_on_ms']:.0f} ms ({tracing['on'] / tracing['off']:.2f}x; "
          f"{tracing['spans_received']} spans received)")
    containers = report["containers"]
    if "skipped" in containers:
        print(f"containers: skipped ({containers['skipped']})")
    else:
        print(f"containers (embed, C=32 k=1, REST): local {containers['local_before']:.1f}/s and "
              f"{containers['local_after']:.1f}/s, containerized {containers['containers']:.1f}/s "
              f"({containers['ratio']:.2f}x of local)")


def served_cells(result: dict) -> str:
    return (f"{result['rate']:>7.1f} {result['vs_fp32']:>5.2f}x {result['vs_best']:>5.2f}x "
            f"{result['p50_ms']:>5.1f}ms {result['p99_ms']:>4.0f}ms")


if __name__ == "__main__":
    main()
