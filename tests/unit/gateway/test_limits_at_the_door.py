"""Two limits the README promises, held at the door: the per-upstream bulkhead (and each tenant's share of it)
refuses the call past the cap before it reaches the worker, and a body declared too large is refused from its
headers alone, before a byte of it is sent, on a gateway process as users run it."""

import asyncio
import hashlib
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
import yaml
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from tests.network import refusing_port
from tests.unit.gateway.conftest import gateway_client
from torchgate.v1 import common_pb2, embedding_pb2, embedding_pb2_grpc

ROOT = Path(__file__).resolve().parents[3]
SERVICE = embedding_pb2.DESCRIPTOR.services_by_name["EmbeddingService"].full_name
DIMENSION = 4


class HoldingEmbedder(embedding_pb2_grpc.EmbeddingServiceServicer):
    """An embedding service that counts the calls it receives and answers none until released."""

    def __init__(self):
        self.received = 0
        self.release = asyncio.Event()

    async def Info(self, request, context):
        return common_pb2.ModelInfo(model_id="test/holding", dimension=DIMENSION, max_items_per_request=64,
                                    max_chars_per_item=1000, fingerprint="holding")

    async def Embed(self, request, context):
        self.received += 1
        await self.release.wait()
        return embedding_pb2.EmbedResponse(embeddings=b"\0\0\x80\x3f" * DIMENSION * len(request.texts),
                                           dimension=DIMENSION, count=len(request.texts), model="test/holding",
                                           input_tokens=[1] * len(request.texts))


@pytest.fixture
async def holding_worker():
    server = grpc.aio.server()
    servicer = HoldingEmbedder()
    embedding_pb2_grpc.add_EmbeddingServiceServicer_to_server(servicer, server)
    checks = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(checks, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    await checks.set(SERVICE, health_pb2.HealthCheckResponse.SERVING)
    try:
        yield servicer, port
    finally:
        servicer.release.set()
        await server.stop(0)


async def until(condition, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 - polls what the server's handlers count
            await asyncio.sleep(0.01)


def embed(client, text: str, key: str | None = None):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return asyncio.create_task(client.post("/v1/embeddings", json={"input": [text]}, headers=headers))


def tenants_file(path: Path, *names: str) -> str:
    path.write_text(yaml.safe_dump({"tenants": {name: {"keys_sha256": [digest(name)]} for name in names}}))
    return str(path)


async def test_a_full_bulkhead_refuses_the_next_call_at_once_and_the_worker_never_sees_it(holding_worker, tmp_path):
    worker, port = holding_worker
    async with gateway_client(f"127.0.0.1:{port}", max_concurrency=3, merge_requests=1, cache=False,
                              tenants_file=tenants_file(tmp_path / "tenants.yaml", "busy", "new")) as client:
        held = [embed(client, f"held {index}", "busy") for index in range(3)]
        await until(lambda: worker.received == 3)
        # A tenant with nothing in flight is within its share: only the pool's own cap refuses it.
        async with asyncio.timeout(5):  # while every held call still waits: refused without waiting for any
            refused = await client.post("/v1/embeddings", json={"input": ["one too many"]},
                                        headers={"Authorization": "Bearer new"})
        assert refused.status_code == 429 and refused.headers["Retry-After"] == "1", refused.text
        assert refused.json()["error"]["type"] == "overloaded"
        assert "too many concurrent requests" in refused.json()["error"]["message"]
        assert worker.received == 3 and not any(call.done() for call in held)
        worker.release.set()
        assert [reply.status_code for reply in await asyncio.gather(*held)] == [200] * 3


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


async def test_once_a_pool_is_half_busy_a_tenant_holds_at_most_its_share(holding_worker, tmp_path):
    worker, port = holding_worker
    async with gateway_client(f"127.0.0.1:{port}", max_concurrency=4, merge_requests=1, cache=False,
                              tenants_file=tenants_file(tmp_path / "tenants.yaml", "flood", "calm")) as client:
        held = [embed(client, f"flood {index}", "flood") for index in range(2)] + [embed(client, "calm 0", "calm")]
        await until(lambda: worker.received == 3)
        # Two tenants in a pool of 4: a share is 2 each, and the flood already holds 2.
        over_share = await client.post("/v1/embeddings", json={"input": ["flood 2"]},
                                       headers={"Authorization": "Bearer flood"})
        assert over_share.status_code == 429 and over_share.headers["Retry-After"], over_share.text
        assert "holds its share" in over_share.json()["error"]["message"]
        assert worker.received == 3
        held.append(embed(client, "calm 1", "calm"))  # the calm tenant's share still has room
        await until(lambda: worker.received == 4)
        full = await client.post("/v1/embeddings", json={"input": ["calm 2"]}, headers={"Authorization": "Bearer calm"})
        assert full.status_code == 429 and worker.received == 4
        worker.release.set()
        assert [reply.status_code for reply in await asyncio.gather(*held)] == [200] * 4


def listening(port_file: Path) -> bool:
    """The port is announced when bound, a moment before the server accepts on it."""
    if not port_file.exists():
        return False
    try:
        socket.create_connection(("127.0.0.1", int(port_file.read_text())), timeout=1).close()
    except ConnectionRefusedError:
        return False
    return True


@pytest.fixture(scope="module")
def gateway_process(tmp_path_factory):
    """`python -m gateway` as users start it, its upstreams refusing (a refusal from the headers needs none)."""
    directory = tmp_path_factory.mktemp("gateway")
    port_file = directory / "gateway.port"
    dead = f"127.0.0.1:{refusing_port()}"
    env = {**os.environ, "TORCHGATE_GATEWAY_PORT": "0", "TORCHGATE_GATEWAY_PORT_FILE": str(port_file),
           "TORCHGATE_GATEWAY_MAX_BODY_BYTES": "4096", "TORCHGATE_LOG_FORMAT": "text",
           **{f"TORCHGATE_GATEWAY_{name}__ADDRESSES": dead for name in ("GPU", "EMBEDDING", "RERANKING", "CLASSIFIER")}}
    with (directory / "gateway.log").open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "gateway"], cwd=ROOT, env=env, stdout=log,
                                   stderr=subprocess.STDOUT)
    try:
        give_up = time.monotonic() + 60
        while not listening(port_file):
            assert process.poll() is None and time.monotonic() < give_up, (directory / "gateway.log").read_text()
            time.sleep(0.05)
        yield int(port_file.read_text())
    finally:
        process.terminate()
        process.wait(15)


@pytest.mark.parametrize("declared", [4097, 4096 * 1000 + 1], ids=["one byte over", "a thousand times over"])
def test_a_body_declared_too_large_is_refused_before_a_byte_of_it_is_sent(gateway_process, declared):
    with socket.create_connection(("127.0.0.1", gateway_process), timeout=10) as connection:
        connection.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
                           b"Content-Length: %d\r\n\r\n" % declared)
        answer = b""
        while chunk := connection.recv(65536):  # the body is withheld: only a refusal can end this read
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), answer
    assert b"connection: close" in head.lower(), "the unread body is not drained: the connection closes"
    assert b"the limit is 4096" in body
