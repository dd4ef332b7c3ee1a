"""`make bench-gateway BASE=<rev>`: the gateway of this checkout against the gateway of another revision, on one
mesh, in one run.

One mesh of workers starts (scripts/start.sh); a second gateway, the code of BASE checked out in a temporary
git worktree, starts beside the mesh's own and calls the same workers. The same REST loads (wrk; embed
C=32 x 1 and C=8 x 8 by default) then alternate between the two gateways, `--rounds` times each, so that the
machine's drift falls on both alike; only one gateway is loaded at a time. Printed: each side's best round
(items/s, p50, p99) and this checkout's ratio to BASE.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.__main__ import ALL_WORKERS, ROOT, Mesh, rate, rest_load
from bench.scenarios import SCENARIOS

UPSTREAMS = ALL_WORKERS


class BaseGateway:
    """`python -m gateway` from a worktree of `revision`, on a port of its own, calling `mesh`'s workers."""

    def __init__(self, revision: str, mesh: Mesh):
        self.directory = Path(tempfile.mkdtemp(prefix="torchgate-base-"))
        self.worktree = self.directory / "tree"
        subprocess.run(["git", "worktree", "add", "--detach", str(self.worktree), revision], cwd=ROOT, check=True,
                       capture_output=True)
        port_file = self.directory / "gateway.port"
        env = {**mesh.env, "TORCHGATE_GATEWAY_PORT": "0", "TORCHGATE_GATEWAY_PORT_FILE": str(port_file),
               **{f"TORCHGATE_GATEWAY_{name.upper()}__ADDRESSES": f"127.0.0.1:{mesh.ports[name]}"
                  for name in UPSTREAMS}}
        # Run from the worktree: its packages come first on sys.path, before the editable install of this one.
        self.process = subprocess.Popen([sys.executable, "-m", "gateway"], cwd=self.worktree, env=env,
                                        stdout=(self.directory / "gateway.log").open("wb"), stderr=subprocess.STDOUT)
        give_up = time.monotonic() + 60
        while not _ready(port_file):
            if self.process.poll() is not None or time.monotonic() > give_up:
                raise SystemExit(f"the {revision} gateway did not start: {self.directory / 'gateway.log'}")
            time.sleep(0.2)
        self.ports = {"gateway": int(port_file.read_text())}
        self.run_dir = self.directory

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(30)
        subprocess.run(["git", "worktree", "remove", "--force", str(self.worktree)], cwd=ROOT, check=True)


def _ready(port_file: Path) -> bool:
    if not port_file.exists():
        return False
    try:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{int(port_file.read_text())}/health/ready", timeout=2):
            return True
    except OSError:
        return False


def _cells(run: dict) -> str:
    return f"{run['rate']:>8.1f} {run['p50_ms']:>5.1f}ms {run['p99_ms']:>5.0f}ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("base", help="the revision to compare with (a commit, tag or branch)")
    parser.add_argument("--loads", default="32x1,8x8", help="concurrency x texts per request, comma-separated")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    args = parser.parse_args()
    scenario = SCENARIOS["embed"]
    loads = [tuple(int(part) for part in load.split("x")) for load in args.loads.split(",")]
    results: dict[str, dict[str, list[dict]]] = {}
    with Mesh() as mesh:
        base = BaseGateway(args.base, mesh)
        try:
            for concurrency, per_call in loads:
                key = f"C={concurrency} k={per_call}"
                results[key] = {"head": [], "base": []}
                for _ in range(args.rounds):
                    for side, gateway in (("base", base), ("head", mesh)):
                        run = rest_load(gateway, scenario, concurrency, per_call, args.seconds, args.warmup)
                        results[key][side].append({**run, "rate": rate(run, per_call)})
        finally:
            base.close()
    head_revision = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                   text=True).stdout.strip()
    print(f"\n/v1/embeddings through the gateway of {head_revision} (head) and of {args.base} (base), one mesh, "
          f"{args.rounds} alternating rounds of {args.seconds:.0f} s; best round each")
    print(f"{'load':<12} | {'base/s':>8} {'p50':>7} {'p99':>7} | {'head/s':>8} {'p50':>7} {'p99':>7} | head/base")
    report = {"base": args.base, "head": head_revision, "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "loads": {}}
    for key, sides in results.items():
        best = {side: max(runs, key=lambda run: run["rate"]) for side, runs in sides.items()}
        report["loads"][key] = {"best": best, "rounds": sides, "ratio": best["head"]["rate"] / best["base"]["rate"]}
        print(f"{key:<12} | {_cells(best['base'])} | {_cells(best['head'])} | {report['loads'][key]['ratio']:.3f}x")
    out = ROOT / "bench/results" / f"{time.strftime('%Y%m%d-%H%M%S')}-gateway-change.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"report: {out.relative_to(ROOT)}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
