import base64
import contextlib
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from openai import OpenAI

from tests.e2e.conftest import ROOT, mesh_env, running_mesh
from tests.integration.conftest import grpcurl
from tests.tiny_models import MINILM, build_tiny_embedder


def test_the_mesh_serves_survives_a_dead_worker_and_stops_cleanly(mesh):
    with httpx.Client(base_url=mesh.url, timeout=30) as client:
        as_float = client.post("/v1/embeddings", json={"input": ["hello world", "good night"]})
        as_base64 = client.post("/v1/embeddings", json={"input": ["hello world", "good night"],
                                                         "encoding_format": "base64"})
        assert as_float.status_code == 200 and as_base64.status_code == 200
        floats = np.array([item["embedding"] for item in as_float.json()["data"]], dtype=np.float32)
        decoded = np.stack([np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4")
                            for item in as_base64.json()["data"]])
        assert floats.shape == (2, 384)
        np.testing.assert_allclose(floats, decoded, rtol=1e-6)

        sdk = OpenAI(base_url=f"{mesh.url}/v1", api_key="unused")
        result = sdk.embeddings.create(model="sentence-transformers/all-MiniLM-L6-v2", input=["openai sdk"])
        assert len(result.data[0].embedding) == 384

        listed = subprocess.run([grpcurl(), "-plaintext", f"127.0.0.1:{mesh.ports['embedding']}", "list"],
                                capture_output=True, text=True, timeout=30)
        assert "torchgate.v1.EmbeddingService" in listed.stdout and "grpc.health.v1.Health" in listed.stdout

        reranked = client.post("/v1/rerank", json={
            "query": "What is the capital of France?", "return_documents": True, "top_n": 1,
            "documents": ["Bananas are yellow.", {"text": "Paris is the capital of France."}]})
        assert reranked.status_code == 200, reranked.text
        assert reranked.json()["results"][0]["document"]["text"] == "Paris is the capital of France."
        assert reranked.json()["model"].startswith("fallback:cosine:")

        classified = client.post("/api/v1/intents/classify", json={"text": "Write a poem about spring"})
        assert classified.status_code == 200 and classified.json()["intent"] == "creative_writing"
        too_many = client.post("/api/v1/intents/classify/batch", json={"texts": ["hi"] * 101})
        assert too_many.status_code == 413

        gpu_status = client.get("/v1/gpu/status")
        assert gpu_status.status_code == 200 and "cuda_available" in gpu_status.json()

        healthy = mesh.script("health.sh")
        assert healthy.returncode == 0 and "SERVING" in healthy.stdout, healthy.stdout

        os.kill(mesh.pid("embedding"), signal.SIGKILL)
        started = time.monotonic()
        down = client.post("/v1/embeddings", json={"input": "anyone there?"})
        assert time.monotonic() - started < 10
        assert down.status_code == 503 and int(down.headers["Retry-After"]) >= 1
        assert down.json()["error"]["type"] == "upstream_unavailable"
        assert "Traceback" not in down.text

        os.kill(mesh.pid("reranking"), signal.SIGKILL)
        rerank_down = client.post("/v1/rerank", json={"query": "q", "documents": ["d"]})
        assert rerank_down.status_code == 503 and rerank_down.json()["error"]["upstream"] == "reranking"

        os.kill(mesh.pid("classifier"), signal.SIGKILL)
        classify_down = client.post("/v1/classify", json={"text": "hello"})
        assert classify_down.status_code == 503 and classify_down.json()["error"]["upstream"] == "classifier"

        unhealthy = mesh.script("health.sh")
        assert unhealthy.returncode != 0 and "UNREACHABLE" in unhealthy.stdout

    gateway_pid = mesh.pid("gateway")
    stopped = mesh.script("stop.sh", timeout=60)
    assert stopped.returncode == 0, stopped.stderr
    assert not list(mesh.run_dir.glob("*.pid"))
    assert subprocess.run(["kill", "-0", str(gateway_pid)], capture_output=True).returncode != 0
    assert mesh.script("stop.sh").returncode == 0


def processes_started_for(run_dir: Path) -> list[int]:
    """Live processes whose environment names this run directory: whatever start.sh launched for it."""
    marker = f"TORCHGATE_RUN_DIR={run_dir}".encode()
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        with contextlib.suppress(OSError):
            if marker in environ.read_bytes().split(b"\0") and int(environ.parent.name) != os.getpid():
                found.append(int(environ.parent.name))
    return found


# When Ctrl-C comes, as a new user presses it: moments of `make run | tee`, each a condition on what has started.
CTRL_C_MOMENTS = {
    "the first worker just launched": lambda run_dir, log: (run_dir / "gpu.pid").exists(),
    "while the workers load": lambda run_dir, log: b"listening" in _read(run_dir / "embedding.log"),
    "as the first worker serves": lambda run_dir, log: b"serving on" in log,
    "at gateway ready": lambda run_dir, log: b"ready on" in log,
}


@pytest.mark.parametrize("moment", [*CTRL_C_MOMENTS, "while serving"])
def test_ctrl_c_on_make_run_piped_into_tee_at_any_moment_stops_every_process_and_frees_every_port(
        tmp_path, moment):
    """Ctrl-C reaches the whole foreground pipeline, `tee` included: whenever it comes, the drain stops what has
    started, in order, and dies neither on the closed pipe nor half-way through a start."""
    run_dir = tmp_path / "run"
    pipeline = subprocess.Popen(["bash", "-c", f"make -s run | tee {tmp_path / 'run.log'}"], cwd=ROOT,
                                env=mesh_env(run_dir), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                start_new_session=True)
    arrived = CTRL_C_MOMENTS.get(moment, CTRL_C_MOMENTS["at gateway ready"])
    try:
        give_up = time.monotonic() + 240
        while not arrived(run_dir, _read(tmp_path / "run.log")):
            assert pipeline.poll() is None and time.monotonic() < give_up, pipeline.stderr.read().decode()
            time.sleep(0.05)
        if moment == "while serving":
            assert httpx.post(f"http://127.0.0.1:{(run_dir / 'gateway.port').read_text().strip()}/v1/embeddings",
                              json={"input": "still here"}, timeout=30).status_code == 200
        ports = [int(path.read_text()) for path in run_dir.glob("*.port") if path.read_text().strip()]
        os.killpg(pipeline.pid, signal.SIGINT)
        pipeline.wait(timeout=120)
        assert processes_started_for(run_dir) == [], f"still running after Ctrl-C {moment}"
        assert not list(run_dir.glob("*.pid"))
        for port in ports:
            with socket.socket() as free:  # as the next start binds it: SO_REUSEADDR, past closed connections
                free.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                free.bind(("127.0.0.1", port))  # raises where a service still holds its port
                free.listen()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pipeline.pid, signal.SIGKILL)
        subprocess.run([str(ROOT / "scripts" / "stop.sh")], env=mesh_env(run_dir), capture_output=True, timeout=60)


def _read(path: Path) -> bytes:
    return path.read_bytes() if path.exists() else b""


def test_a_failed_start_leaves_no_process_behind(tmp_path):
    run_dir = tmp_path / "run"
    with pytest.raises(AssertionError, match="classifier exited during start-up"):
        with running_mesh(run_dir, TORCHGATE_CLASSIFIER_MODEL=str(tmp_path / "no-such-model")) as mesh:
            pytest.fail(f"the mesh started without a classifier model: {mesh.ports}")
    assert (run_dir / "embedding.log").exists(), "the workers before the classifier were started"
    assert processes_started_for(run_dir) == []


def test_start_sh_runs_replicas_the_gateway_balances_over_them_and_stop_sh_stops_them_all(tmp_path):
    run_dir = tmp_path / "run"
    with running_mesh(run_dir, TORCHGATE_EMBEDDING_REPLICAS="2") as mesh:
        replica_port = int((run_dir / "embedding-2.port").read_text())
        assert replica_port not in mesh.ports.values()
        healthy = mesh.script("health.sh")
        assert healthy.returncode == 0, healthy.stdout
        assert [line.split()[0] for line in healthy.stdout.splitlines() if "SERVING" in line][:3] == [
            "gpu", "embedding", "embedding-2"]

        os.kill(mesh.pid("embedding"), signal.SIGKILL)
        with httpx.Client(base_url=mesh.url, timeout=30) as client:
            statuses = {client.post("/v1/embeddings", json={"input": f"text {i}"}).status_code for i in range(8)}
        assert statuses == {200}, "the second replica serves what the first can no longer"
        degraded = mesh.script("health.sh")
        assert degraded.returncode != 0
        assert re.search(r"^embedding\s.*UNREACHABLE$", degraded.stdout, re.M), degraded.stdout
        assert re.search(rf"^embedding-2\s+127\.0\.0\.1:{replica_port}\s+SERVING$", degraded.stdout, re.M)
    assert processes_started_for(run_dir) == []


def test_a_replica_count_that_is_not_a_number_is_refused_before_anything_starts(tmp_path):
    run_dir = tmp_path / "run"
    with pytest.raises(AssertionError, match="TORCHGATE_RERANKING_REPLICAS must be a whole number >= 1"):
        with running_mesh(run_dir, TORCHGATE_RERANKING_REPLICAS="two"):
            pytest.fail("the mesh started with a replica count of 'two'")
    assert not list(run_dir.glob("*.pid"))


def test_two_embedding_models_behind_one_gateway_each_in_its_own_worker(tmp_path):
    tiny = build_tiny_embedder(tmp_path / "models", dimension=32)
    run_dir = tmp_path / "run"
    with running_mesh(run_dir, TORCHGATE_EMBEDDING_MODELS=f"{MINILM}, {tiny}") as mesh:
        started = (run_dir / "embedding-m2.log").exists() and int((run_dir / "embedding-m2.port").read_text())
        assert started and started != mesh.ports["embedding"]
        sdk = OpenAI(base_url=f"{mesh.url}/v1", api_key="unused")
        assert len(sdk.embeddings.create(model=MINILM, input=["one"]).data[0].embedding) == 384
        assert len(sdk.embeddings.create(model="tiny-embedder", input=["two"]).data[0].embedding) == 32
        assert len(sdk.embeddings.create(model=str(tiny), input=["three"]).data[0].embedding) == 32

        with httpx.Client(base_url=mesh.url, timeout=30) as client:
            listed = {m["id"]: m["dimension"] for m in client.get("/v1/models").json()["data"]
                      if m["task"] == "embedding"}
            assert listed == {MINILM: 384, str(tiny): 32}
            unknown = client.post("/v1/embeddings", json={"input": "x", "model": "bge-small"})
            assert unknown.status_code == 404
            assert MINILM in unknown.json()["error"]["message"] and str(tiny) in unknown.json()["error"]["message"]

            os.kill(mesh.pid("embedding-m2"), signal.SIGKILL)
            down = client.post("/v1/embeddings", json={"input": "x", "model": "tiny-embedder"})
            assert down.status_code == 503 and down.json()["error"]["upstream"] == "embedding-2"
            assert client.post("/v1/embeddings", json={"input": "x", "model": MINILM}).status_code == 200
            assert client.post("/v1/embeddings", json={"input": "x"}).status_code == 200, "the default model"
    assert processes_started_for(run_dir) == []
