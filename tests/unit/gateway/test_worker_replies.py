"""What every model worker's reply reports about itself, over real gRPC (runtime servicer, fake model)."""

import asyncio

from tests.network import worker_channel
from torchgate.v1 import embedding_pb2, embedding_pb2_grpc


async def test_replies_say_where_their_time_went(fake_embedding_worker):
    gate = fake_embedding_worker.servicer.adapter.gate
    async with worker_channel(fake_embedding_worker.port) as channel:
        embed = embedding_pb2_grpc.EmbeddingServiceStub(channel).Embed
        gate.clear()
        try:
            running = asyncio.ensure_future(embed(embedding_pb2.EmbedRequest(texts=["holds the device"])))
            await asyncio.sleep(0.1)
            queued = asyncio.ensure_future(embed(embedding_pb2.EmbedRequest(texts=["waits for it"])))
            await asyncio.sleep(0.2)
        finally:
            gate.set()
        first, second = (await running).timing, (await queued).timing
    assert first.queue_ms < 50 and first.inference_ms >= 250, first
    assert second.queue_ms >= 150 and 0 < second.inference_ms < first.inference_ms, second
    for timing in (first, second):
        assert timing.total_ms >= timing.queue_ms + timing.inference_ms
