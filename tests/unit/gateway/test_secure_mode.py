"""Secure mode: TLS/mTLS between gateway and workers with certificates from scripts/certs.sh."""

import asyncio
import os
import socket
import ssl
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from prometheus_client import REGISTRY

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


def served_serial(port: int, certs: Path) -> str:
    """The serial of the certificate a new TLS connection to the worker is served (ALPN h2, as gRPC speaks)."""
    context = ssl.create_default_context(cafile=str(certs / "ca.crt"))
    context.load_cert_chain(str(certs / "client.crt"), str(certs / "client.key"))
    context.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as connection:
            der = connection.getpeercert(binary_form=True)
    return format(x509.load_der_x509_certificate(der).serial_number, "x")


def exported_expiry(role: str, path: Path) -> float:
    return REGISTRY.get_sample_value("torchgate_certificate_expiry_timestamp_seconds",
                                     {"certificate": role, "path": str(path)})


@pytest.fixture
def own_certs(tmp_path) -> Path:
    """Certificates of this test's own, rotated by it."""
    subprocess.run([str(ROOT / "scripts" / "certs.sh"), str(tmp_path)], check=True, capture_output=True)
    return tmp_path


def rotate(certs: Path, days: int) -> None:
    subprocess.run([str(ROOT / "scripts" / "certs.sh"), "--rotate", str(certs)], check=True, capture_output=True,
                   env={**os.environ, "TORCHGATE_CERT_DAYS": str(days)})


async def test_a_rotation_under_load_fails_no_request_and_both_sides_take_the_new_certificates(own_certs):
    import httpx

    certs = own_certs
    settings = EmbeddingSettings(port=0, metrics_port=0, tls_cert=str(certs / "server.crt"),
                                 tls_key=str(certs / "server.key"), tls_client_ca=str(certs / "ca.crt"))
    rotation_at = 60  # requests before the rotation; as many again once the gateway has renewed its channel
    statuses: list[int] = []
    half_way, enough = asyncio.Event(), asyncio.Event()
    renewed_at: list[int] = []
    async with serving(EmbeddingServicer(FakeAdapter(), settings)) as worker:
        old_serial = await asyncio.to_thread(served_serial, worker.port, certs)
        old_expiry = exported_expiry("server", certs / "server.crt")
        gateway = create_app(GatewaySettings(
            embedding=EmbeddingUpstream(addresses=f"127.0.0.1:{worker.port}"), tls_ca=str(certs / "ca.crt"),
            tls_cert=str(certs / "client.crt"), tls_key=str(certs / "client.key")))
        async with gateway.router.lifespan_context(gateway):
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=gateway), base_url="http://gw") as client:
                async def load(index: int) -> None:
                    while not enough.is_set():
                        reply = await client.post("/v1/embeddings", json={"input": f"text {index} {len(statuses)}"})
                        statuses.append(reply.status_code)
                        if len(statuses) >= rotation_at:
                            half_way.set()
                        if renewed_at and len(statuses) >= renewed_at[0] + rotation_at:
                            enough.set()

                loaders = [asyncio.create_task(load(index)) for index in range(4)]
                await half_way.wait()
                upstream = gateway.state.upstreams["embedding"]
                old_channel, old_client_expiry = upstream.channel, exported_expiry("client", certs / "client.crt")
                await asyncio.to_thread(rotate, certs, 30)
                new_serial = await asyncio.to_thread(served_serial, worker.port, certs)
                async with asyncio.timeout(10):  # the gateway polls its certificate file every POLL_S
                    while exported_expiry("client", certs / "client.crt") == old_client_expiry:  # noqa: ASYNC110
                        await asyncio.sleep(0.05)
                renewed_channel = upstream.channel
                renewed_at.append(len(statuses))
                await asyncio.gather(*loaders)
        new_expiry = exported_expiry("server", certs / "server.crt")
        new_client_expiry = exported_expiry("client", certs / "client.crt")
    file_serial = format(x509.load_pem_x509_certificate((certs / "server.crt").read_bytes()).serial_number, "x")
    assert new_serial == file_serial != old_serial
    assert [status for status in statuses if status != 200] == []
    assert len(statuses) >= renewed_at[0] + rotation_at
    assert old_expiry - new_expiry > 300 * 86400  # 365 days, then 30
    assert old_client_expiry - new_client_expiry > 300 * 86400
    assert renewed_channel is not old_channel, "the gateway's new calls present the rotated client certificate"
