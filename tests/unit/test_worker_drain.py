"""A draining worker tells watchers NOT_SERVING first, finishes in-flight calls, and never waits out its grace
for health Watch streams that would stay open forever."""

import asyncio
import time

from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.embedding.servicer import EmbeddingServicer
from services.embedding.settings import EmbeddingSettings
from tests.fakes import FakeAdapter
from tests.network import worker_channel
from tests.workers import started
from torchgate.v1 import embedding_pb2, embedding_pb2_grpc

GRACE_S = 30


async def test_a_drain_answers_in_flight_calls_ends_health_watches_and_does_not_wait_out_its_grace():
    adapter = FakeAdapter()
    settings = EmbeddingSettings(port=0, metrics_port=0, grace_period_s=GRACE_S)
    worker = await started(EmbeddingServicer(adapter, settings))
    async with worker_channel(worker.port) as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(service=worker.service_name))
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.SERVING
        adapter.gate.clear()
        in_flight = embedding_pb2_grpc.EmbeddingServiceStub(channel).Embed(embedding_pb2.EmbedRequest(texts=["x"]))
        await asyncio.sleep(0.2)
        stopping_at = time.monotonic()
        stopping = asyncio.create_task(worker.stop())
        assert (await watch.read()).status == health_pb2.HealthCheckResponse.NOT_SERVING
        adapter.gate.set()
        assert (await in_flight).count == 1, "the in-flight call is answered"
        await asyncio.wait_for(stopping, GRACE_S / 2)
    assert time.monotonic() - stopping_at < GRACE_S / 2
