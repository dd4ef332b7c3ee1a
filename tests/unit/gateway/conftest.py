"""A real worker runtime and servicer over the fake adapter, and the gateway app in front of it."""

import asyncio
import tempfile
from contextlib import asynccontextmanager

import httpx
import pytest

from gateway.app import create_app
from gateway.config import (
    ClassifierUpstream,
    DocumentsUpstream,
    EmbeddingUpstream,
    GatewaySettings,
    GpuUpstream,
    RerankingUpstream,
)
from services.classifier.servicer import ClassifierServicer
from services.classifier.settings import ClassifierSettings
from services.embedding.servicer import EmbeddingServicer
from services.embedding.settings import EmbeddingSettings
from services.reranking.servicer import RerankingServicer
from services.reranking.settings import RerankingSettings
from tests.fakes import FakeAdapter, FakeIntentAdapter, FakePairAdapter
from tests.network import refusing_port
from tests.workers import serving


@pytest.fixture
async def fake_embedding_worker():
    # One device stream: tests that hold the device (the adapter's gate) expect the next request to queue.
    settings = EmbeddingSettings(port=0, metrics_port=0, max_items_per_request=16, grace_period_s=1,
                                 device_streams=1)
    async with serving(EmbeddingServicer(FakeAdapter(), settings)) as worker:
        yield worker


@pytest.fixture
async def fake_reranking_worker():
    settings = RerankingSettings(port=0, metrics_port=0, max_items_per_request=4, grace_period_s=1)
    async with serving(RerankingServicer(FakePairAdapter(), settings)) as worker:
        yield worker


@pytest.fixture
async def fake_classifier_worker():
    settings = ClassifierSettings(port=0, metrics_port=0, grace_period_s=1)
    async with serving(ClassifierServicer(FakeIntentAdapter(), settings)) as worker:
        yield worker


def unused_address() -> str:
    """A loopback address that refuses connections: a dead upstream."""
    return f"127.0.0.1:{refusing_port()}"


@asynccontextmanager
async def gateway_client(addresses: str, api_keys: str = "", max_body_bytes: int = 8 * 1024 * 1024,
                         reranking: str | None = None, classifier: str | None = None, gpu: str | None = None,
                         documents: str | None = None,
                         cache: bool = True, cache_url: str = "", cache_bytes: int = 64 * 1024 * 1024,
                         tenants_file: str = "", routes_file: str = "", redis_timeout_s: float = 0.25,
                         jobs: dict | None = None, **upstream):
    settings = GatewaySettings(embedding=EmbeddingUpstream(addresses=addresses, **upstream),
                               reranking=RerankingUpstream(addresses=reranking or unused_address()),
                               classifier=ClassifierUpstream(addresses=classifier or unused_address()),
                               gpu=GpuUpstream(addresses=gpu or unused_address()),
                               documents=DocumentsUpstream(addresses=documents or unused_address()),
                               api_keys=api_keys, max_body_bytes=max_body_bytes, cache=cache, cache_url=cache_url,
                               cache_bytes=cache_bytes, tenants_file=tenants_file, routes_file=routes_file,
                               redis_timeout_s=redis_timeout_s,
                               **{"jobs_dir": tempfile.mkdtemp(prefix="torchgate-jobs-"), **(jobs or {})})
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        await limits_learned(app)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
            client.app = app
            yield client


async def limits_learned(app, timeout: float = 5.0) -> None:
    """Wait until every reachable model upstream's limits are known, as they are moments after start."""
    for client in app.state.upstreams.values():
        if client.serves_model and (await client.probe(0.5))["status"] == "SERVING":
            async with asyncio.timeout(timeout):
                # Known and current: the first health SERVING asks for Info again, and until that answers the
                # response cache is bypassed (a test's first request would then store nothing).
                while client.model_identity() is None:  # noqa: ASYNC110 - polls what the upstream's tasks set
                    await asyncio.sleep(0.01)
