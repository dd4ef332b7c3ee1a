"""Secure mode: TLS/mTLS between gateway and workers with certificates from scripts/certs.sh."""

import asyncio
import subprocess
from pathlib import Path

import pytest

from gateway.app import create_app
from gateway.config import EmbeddingUpstream, GatewaySettings
from services.embedding.servicer import EmbeddingServicer
from services.embedding.settings import EmbeddingSettings
from tests.fakes import FakeAdapter
from tests.unit.gateway.conftest import serving
from torchgate.health_probe import check
from torchgate.tls import channel_credentials

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("certs")
    subprocess.run([str(ROOT / "scripts" / "certs.sh"), str(directory)], check=True, capture_output=True)
    return directory


@pytest.fixture
async def mtls_worker(certs):
    settings = EmbeddingSettings(port=0, metrics_port=0, tls_cert=str(certs / "server.crt"),
                                 tls_key=str(certs / "server.key"), tls_client_ca=str(certs / "ca.crt"))
    async with serving(EmbeddingServicer(FakeAdapter(), settings)) as worker:
        yield worker


async def embed_through_gateway(port: int, **tls: str) -> int:
    import httpx

    settings = GatewaySettings(embedding=EmbeddingUpstream(addresses=f"127.0.0.1:{port}", retry_attempts=2), **tls)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway") as client:
            reply = await client.post("/v1/embeddings", json={"input": "secret"}, headers={"X-Request-Timeout": "3"})
    return reply.status_code


async def test_the_gateway_with_its_client_certificate_gets_through(mtls_worker, certs):
    status = await embed_through_gateway(mtls_worker.port, tls_ca=str(certs / "ca.crt"),
                                         tls_cert=str(certs / "client.crt"), tls_key=str(certs / "client.key"))
    assert status == 200


@pytest.mark.parametrize("tls", [{}, {"tls_ca": "ca.crt"}], ids=["plaintext", "tls-without-client-certificate"])
async def test_without_a_client_certificate_the_worker_refuses(mtls_worker, certs, tls):
    refused = await embed_through_gateway(mtls_worker.port, **{k: str(certs / v) for k, v in tls.items()})
    # The same worker, a moment later, serves a client that shows its certificate: the 503 was the refusal.
    served = await embed_through_gateway(mtls_worker.port, tls_ca=str(certs / "ca.crt"),
                                         tls_cert=str(certs / "client.crt"), tls_key=str(certs / "client.key"))
    assert (refused, served) == (503, 200)


async def test_the_health_probe_speaks_mtls(mtls_worker, certs):
    credentials = channel_credentials(str(certs / "ca.crt"), str(certs / "client.crt"), str(certs / "client.key"))
    address = f"127.0.0.1:{mtls_worker.port}"
    service = "torchgate.v1.EmbeddingService"
    assert await asyncio.to_thread(check, address, service, credentials=credentials) == "SERVING"
    assert await asyncio.to_thread(check, address, service) == "UNREACHABLE"
