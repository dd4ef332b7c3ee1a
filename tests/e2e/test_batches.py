"""Batch jobs as a user runs them: the `openai` SDK uploads a file and drives its batch through real gateway
processes and a real MiniLM worker, while the gateways are killed (-9) mid-batch; every line is answered exactly
once and each result is the vector /v1/embeddings gives for the same text."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from openai import OpenAI

from tests.e2e.processes import start_gateway, start_worker, wait_serving
from tests.postgres_server import PostgresServer

LINES = 2000
# Short leases: a killed gateway's lines return to the queue within seconds.
JOBS_ENV = {"TORCHGATE_GATEWAY_JOBS_LEASE_S": "2", "TORCHGATE_GATEWAY_CACHE": "false"}


@pytest.fixture(scope="module")
def worker_port(tmp_path_factory):
    logs = tmp_path_factory.mktemp("batch-worker")
    worker, port = start_worker(logs)
    wait_serving(port)
    yield port
    worker.stop()


def texts() -> list[str]:
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
    return [f"request {i}: {' '.join(words[j % len(words)] for j in range(i % 9 + 1, i % 9 + 4 + i % 7))}"
            for i in range(LINES)]


def batch_file(directory: Path) -> Path:
    path = directory / "embeddings.jsonl"
    path.write_text("".join(json.dumps({"custom_id": f"line-{i}", "method": "POST", "url": "/v1/embeddings",
                                        "body": {"input": text}}) + "\n" for i, text in enumerate(texts())))
    return path


def progress(sdk: OpenAI, batch_id: str) -> tuple[str, int]:
    batch = sdk.batches.retrieve(batch_id)
    return batch.status, batch.request_counts.completed if batch.request_counts else 0


FINISHED = ("completed", "failed", "expired", "cancelled")


def wait_for(sdk: OpenAI, batch_id: str, done: int | None = None, timeout: float = 240) -> str:
    """Poll until `done` lines are answered, or until the batch finished; its status."""
    give_up = time.monotonic() + timeout
    while time.monotonic() < give_up:
        status, completed = progress(sdk, batch_id)
        if (done is not None and completed >= done) or status in FINISHED:
            return status
        time.sleep(0.05)
    raise AssertionError(f"batch {batch_id} stuck at {progress(sdk, batch_id)}")


def assert_exactly_once_and_right(sdk: OpenAI, url: str, batch_id: str) -> None:
    batch = sdk.batches.retrieve(batch_id)
    assert batch.status == "completed", batch
    counts = batch.request_counts
    assert (counts.total, counts.completed, counts.failed) == (LINES, LINES, 0)
    assert batch.error_file_id is None
    output = [json.loads(line) for line in sdk.files.content(batch.output_file_id).text.splitlines()]
    custom_ids = [line["custom_id"] for line in output]
    assert len(custom_ids) == len(set(custom_ids)) == LINES
    assert set(custom_ids) == {f"line-{i}" for i in range(LINES)}
    vectors = {line["custom_id"]: line["response"]["body"]["data"][0]["embedding"] for line in output}
    sent = texts()
    with httpx.Client(base_url=url, timeout=60, headers={"Cache-Control": "no-cache"}) as client:
        for start in range(0, LINES, 200):
            reply = client.post("/v1/embeddings", json={"input": sent[start:start + 200]})
            reply.raise_for_status()
            expected = np.array([item["embedding"] for item in reply.json()["data"]])
            got = np.array([vectors[f"line-{i}"] for i in range(start, start + len(expected))])
            # The same text in batches of other sizes and company: equal up to the backend's rounding.
            cosines = np.sum(got * expected, axis=1) / np.linalg.norm(got, axis=1) / np.linalg.norm(expected, axis=1)
            assert cosines.min() > 0.9999, cosines.min()


def lines_answered(url: str) -> float:
    metrics = httpx.get(f"{url}/metrics", timeout=5).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
               if line.startswith("torchgate_gateway_batch_lines_total{"))


def test_the_openai_sdk_runs_a_batch_through_two_kill_9s_of_its_gateway(worker_port, tmp_path):
    env = {**JOBS_ENV, "TORCHGATE_GATEWAY_JOBS_DIR": str(tmp_path / "jobs")}
    gateway, url = start_gateway([worker_port], tmp_path, env)
    try:
        sdk = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        with batch_file(tmp_path).open("rb") as upload:
            uploaded = sdk.files.create(file=upload, purpose="batch")
        batch = sdk.batches.create(input_file_id=uploaded.id, endpoint="/v1/embeddings", completion_window="24h")
        assert batch.status == "validating" and batch.request_counts.total == LINES
        listed = sdk.batches.list(limit=5)
        assert batch.id in [item.id for item in listed.data]
        cancelled = sdk.batches.cancel(sdk.batches.create(input_file_id=uploaded.id, endpoint="/v1/embeddings",
                                                          completion_window="24h").id)
        assert cancelled.status == "cancelling"
        for share in (0.3, 0.7):
            assert wait_for(sdk, batch.id, int(LINES * share)) == "in_progress", "the batch ended before the kill"
            gateway.signal(signal.SIGKILL)
            gateway.wait(10)
            gateway, url = start_gateway([worker_port], tmp_path, env)
            sdk = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        assert wait_for(sdk, batch.id) == "completed"
        assert_exactly_once_and_right(sdk, url, batch.id)
        assert wait_for(sdk, cancelled.id) == "cancelled"
    finally:
        gateway.stop()


def test_two_gateways_on_postgresql_share_a_batch_through_a_kill_9_of_each(worker_port, tmp_path):
    postgres = PostgresServer()
    postgres.start()
    env = {**JOBS_ENV, "TORCHGATE_GATEWAY_JOBS_URL": postgres.url}
    logs = [tmp_path / "a", tmp_path / "b"]
    for directory in logs:
        directory.mkdir()
    gateways = [start_gateway([worker_port], directory, env) for directory in logs]
    try:
        sdk = OpenAI(base_url=f"{gateways[0][1]}/v1", api_key="unused", max_retries=0)
        with batch_file(tmp_path).open("rb") as upload:
            uploaded = sdk.files.create(file=upload, purpose="batch")
        batch = sdk.batches.create(input_file_id=uploaded.id, endpoint="/v1/embeddings", completion_window="24h")
        for victim, share in ((0, 0.3), (1, 0.7)):
            assert wait_for(sdk, batch.id, int(LINES * share)) == "in_progress", "the batch ended before the kill"
            if victim == 0:
                assert all(lines_answered(url) > 0 for _, url in gateways), "both gateways claim the batch's lines"
            gateways[victim][0].signal(signal.SIGKILL)
            gateways[victim][0].wait(10)
            gateways[victim] = start_gateway([worker_port], logs[victim], env)
            sdk = OpenAI(base_url=f"{gateways[1 - victim][1]}/v1", api_key="unused", max_retries=0)
        assert wait_for(sdk, batch.id) == "completed"
        assert_exactly_once_and_right(sdk, gateways[0][1], batch.id)
    finally:
        for gateway, _ in gateways:
            gateway.stop()
        postgres.stop()


def test_the_cli_submits_follows_and_downloads_a_batch(worker_port, tmp_path):
    env = {**JOBS_ENV, "TORCHGATE_GATEWAY_JOBS_DIR": str(tmp_path / "jobs")}
    gateway, url = start_gateway([worker_port], tmp_path, env)
    requests = tmp_path / "small.jsonl"
    requests.write_text("".join(json.dumps({"custom_id": f"c{i}", "method": "POST", "url": "/v1/embeddings",
                                            "body": {"input": [f"text {i}", f"other {i}"]}}) + "\n"
                                for i in range(50)))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"custom_id": "x", "method": "POST", "url": "/v1/embeddings", "body": {}}\n')

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "gateway.batch", "--url", url, *args], capture_output=True,
                              text=True, timeout=120)

    try:
        submitted = cli("submit", str(requests), "--wait")
        refused = cli("submit", str(bad))
        batch_id = submitted.stdout.splitlines()[0]
        downloaded = cli("download", batch_id, "-o", str(tmp_path / "out.jsonl"))
        no_errors = cli("download", batch_id, "--errors")
    finally:
        gateway.stop()
    assert submitted.returncode == 0, submitted.stderr
    final = json.loads(submitted.stdout.splitlines()[-1])
    assert final["status"] == "completed" and final["completed"] == 50
    assert "50/50" in submitted.stderr  # the progress bar
    assert downloaded.returncode == 0, downloaded.stderr
    output = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [line["custom_id"] for line in output] == [f"c{i}" for i in range(50)]
    assert all(len(line["response"]["body"]["data"]) == 2 for line in output)
    assert refused.returncode != 0 and "line 1: body: input" in refused.stderr
    assert no_errors.returncode != 0 and "no error file" in no_errors.stderr
