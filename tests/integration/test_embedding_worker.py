import asyncio
import json
import subprocess

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.embedding.servicer import build
from services.embedding.settings import EmbeddingSettings
from services.runtime.device import device_streams, threads_per_stream
from services.runtime.worker import Worker
from tests.integration.conftest import grpcurl
from tests.network import worker_channel
from torchgate.v1 import common_pb2, embedding_pb2, embedding_pb2_grpc

SERVICE = "torchgate.v1.EmbeddingService"
TEXTS = [
    "The cat sat on the mat.",
    "Quantum computers use qubits that can be in superposition.",
    "How do I create a REST API in Python?",
    "Write a poem about spring rain falling on the old stone bridge in the village square.",
    "Short.",
    "Paris is the capital of France and its largest city, famous for art, fashion and the Eiffel Tower.",
]


def unpack(reply: embedding_pb2.EmbedResponse) -> np.ndarray:
    return np.frombuffer(reply.embeddings, dtype="<f4").reshape(reply.count, reply.dimension)


# Packed fp32 against sentence-transformers' padded fp32: the same arithmetic up to summation order.
FP32_TOLERANCE = 1e-5


def normalized(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


async def test_health_goes_not_serving_then_serving_and_watch_reports_both():
    settings = EmbeddingSettings(port=0, metrics_port=0)
    worker = Worker(build(settings), settings)
    port = await worker.start()
    async with worker_channel(port) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        first = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE))
        assert first.status == health_pb2.HealthCheckResponse.NOT_SERVING
        watch = health.Watch(health_pb2.HealthCheckRequest(service=SERVICE))
        seen = [(await watch.read()).status]
        early = embedding_pb2_grpc.EmbeddingServiceStub(channel).Embed(embedding_pb2.EmbedRequest(texts=["x"]))
        with pytest.raises(grpc.aio.AioRpcError) as loading:
            await early
        assert loading.value.code() == grpc.StatusCode.UNAVAILABLE
        await worker.wait_serving()
        seen.append((await asyncio.wait_for(watch.read(), 10)).status)
        watch.cancel()
        assert seen == [health_pb2.HealthCheckResponse.NOT_SERVING, health_pb2.HealthCheckResponse.SERVING]
        await worker.stop(1)


async def test_reflection_lists_the_service_for_grpcurl(embedding_worker):
    address = f"127.0.0.1:{embedding_worker.port}"
    listed = await asyncio.to_thread(subprocess.run, [grpcurl(), "-plaintext", address, "list"],
                                     capture_output=True, text=True, timeout=30)
    assert {SERVICE, "grpc.health.v1.Health"} <= set(listed.stdout.split())
    called = await asyncio.to_thread(
        subprocess.run,
        [grpcurl(), "-plaintext", "-d", '{"texts": ["hello"], "normalize": true}', address, f"{SERVICE}/Embed"],
        capture_output=True, text=True, timeout=30,
    )
    assert json.loads(called.stdout)["dimension"] == 384


async def test_vectors_equal_sentence_transformers_encode(embedding_channel, minilm):
    stub = embedding_pb2_grpc.EmbeddingServiceStub(embedding_channel)
    reply = await stub.Embed(embedding_pb2.EmbedRequest(texts=TEXTS, normalize=True))
    assert (reply.count, reply.dimension, reply.model) == (len(TEXTS), 384, "sentence-transformers/all-MiniLM-L6-v2")
    expected = minilm.encode(TEXTS, normalize_embeddings=True)
    np.testing.assert_allclose(unpack(reply), expected, atol=FP32_TOLERANCE)
    assert reply.usage.prompt_tokens == sum(len(ids) for ids in minilm.tokenizer(TEXTS)["input_ids"])
    assert reply.timing.total_ms >= reply.timing.inference_ms > 0


async def test_32_concurrent_single_text_calls_match_unbatched_encode(embedding_channel, minilm):
    stub = embedding_pb2_grpc.EmbeddingServiceStub(embedding_channel)
    texts = [f"{TEXTS[i % len(TEXTS)]} Variation number {i}." for i in range(32)]
    replies = await asyncio.gather(*(stub.Embed(embedding_pb2.EmbedRequest(texts=[t], normalize=True)) for t in texts))
    served = np.vstack([unpack(reply) for reply in replies])
    unbatched = np.vstack([minilm.encode([t], normalize_embeddings=True) for t in texts])
    np.testing.assert_allclose(served, unbatched, atol=FP32_TOLERANCE)


async def test_reduced_dimensions_are_renormalized_prefixes(embedding_channel, minilm):
    stub = embedding_pb2_grpc.EmbeddingServiceStub(embedding_channel)
    reply = await stub.Embed(embedding_pb2.EmbedRequest(texts=TEXTS[:2], normalize=True, dimensions=64))
    vectors = unpack(reply)
    assert vectors.shape == (2, 64)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(vectors, normalized(minilm.encode(TEXTS[:2])[:, :64]), atol=FP32_TOLERANCE)


@pytest.mark.parametrize(
    ("request_fields", "message"),
    [
        ({"texts": []}, "texts must contain at least one text"),
        ({"texts": ["ok", " "]}, "texts[1] is empty"),
        ({"texts": ["x"] * 65}, "texts has 65 items; at most 64"),
        ({"texts": ["word " * 400], "truncate": False}, "tokens; the model accepts at most 256"),
        ({"texts": ["ok"], "dimensions": 1000}, "dimensions is 1000 but"),
    ],
)
async def test_bad_inputs_get_invalid_argument_with_a_precise_message(embedding_channel, request_fields, message):
    stub = embedding_pb2_grpc.EmbeddingServiceStub(embedding_channel)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.Embed(embedding_pb2.EmbedRequest(**request_fields), timeout=30)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in error.value.details()


async def test_an_unknown_model_is_not_found_naming_the_served_one(embedding_channel):
    stub = embedding_pb2_grpc.EmbeddingServiceStub(embedding_channel)
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await stub.Embed(embedding_pb2.EmbedRequest(texts=["ok"], model="text-embedding-3-large"), timeout=30)
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    assert "this worker serves 'sentence-transformers/all-MiniLM-L6-v2'" in error.value.details()


async def test_long_texts_are_truncated_when_asked(embedding_channel):
    stub = embedding_pb2_grpc.EmbeddingServiceStub(embedding_channel)
    reply = await stub.Embed(embedding_pb2.EmbedRequest(texts=["word " * 400], truncate=True))
    assert reply.usage.prompt_tokens == 256


async def test_info_describes_the_model_and_batching(embedding_channel):
    info = await embedding_pb2_grpc.EmbeddingServiceStub(embedding_channel).Info(common_pb2.InfoRequest())
    assert (info.dimension, info.max_input_tokens, info.device, info.dtype) == (384, 256, "cpu", "float32")
    assert info.model_path.endswith("model") and info.batching.max_batch_size > 0 and info.version
    streams = device_streams("cpu")
    assert (info.batching.device_streams, info.batching.threads_per_stream) == (streams, threads_per_stream(streams))
