"""The published OpenAPI contract, judged by schemathesis (all checks) against the real mesh."""

import subprocess
import sys
from pathlib import Path

from tests.e2e.conftest import ROOT


def test_schemathesis_finds_no_failure_in_the_openapi_contract(mesh):
    schemathesis = Path(sys.executable).parent / "schemathesis"
    run = subprocess.run(
        [str(schemathesis), "run", f"{mesh.url}/openapi.json", "--checks", "all", "--max-examples", "30",
         "--generation-deterministic", "--workers", "1", "--request-timeout", "30", "--no-color",
         "--suppress-health-check", "all"],
        cwd=ROOT, capture_output=True, text=True, timeout=280,
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    assert " passed" in run.stdout and "failure" not in run.stdout.split("SUMMARY")[-1].lower(), run.stdout[-3000:]
