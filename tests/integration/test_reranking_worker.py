import asyncio
import subprocess

import grpc
import numpy as np
import pytest

from services.reranking.servicer import build
from services.reranking.settings import RerankingSettings
from services.runtime.errors import ModelNotFound
from services.runtime.worker import Worker
from tests.integration.conftest import grpcurl
from tests.network import worker_channel
from torchgate.v1 import common_pb2, reranking_pb2, reranking_pb2_grpc

DOCUMENTS = [
    "A short one.",
    "The quick brown fox jumps over the lazy dog near the river bank on a sunny afternoon.",
    "Machine learning models learn patterns from data.",
    "word " * 300,
    "Paris is the capital and most populous city of France.",
]


async def serve(**settings_fields):
    settings = RerankingSettings(port=0, metrics_port=0, **settings_fields)
    worker = Worker(build(settings), settings)
    await worker.start()
    await worker.wait_serving()
    return worker


@pytest.fixture(scope="module")
async def cross_encoder_worker(tiny_cross_encoder):
    worker = await serve(model=str(tiny_cross_encoder), max_items_per_request=8, max_chars_per_item=4000)
    yield worker
    await worker.stop(0)


def stub_for(worker):
    channel = worker_channel(worker.port)
    return channel, reranking_pb2_grpc.RerankingServiceStub(channel)


async def test_scores_match_cross_encoder_predict_and_come_sorted(cross_encoder_worker, tiny_cross_encoder):
    from sentence_transformers import CrossEncoder

    reference = CrossEncoder(str(tiny_cross_encoder), device="cpu", local_files_only=True)
    query = "what is the capital of france"
    expected = reference.predict([(query, d) for d in DOCUMENTS])
    channel, stub = stub_for(cross_encoder_worker)
    async with channel:
        reply = await stub.Rerank(reranking_pb2.RerankRequest(query=query, documents=DOCUMENTS))
    scores = {r.index: r.score for r in reply.results}
    np.testing.assert_allclose([scores[i] for i in range(len(DOCUMENTS))], expected, atol=1e-5)
    assert [r.score for r in reply.results] == sorted(scores.values(), reverse=True)
    assert reply.model == str(tiny_cross_encoder) and reply.usage.total_tokens > 0


async def test_top_n_documents_and_raw_scores(cross_encoder_worker):
    channel, stub = stub_for(cross_encoder_worker)
    async with channel:
        full = await stub.Rerank(reranking_pb2.RerankRequest(query="fox", documents=DOCUMENTS, raw_scores=True))
        top = await stub.Rerank(reranking_pb2.RerankRequest(query="fox", documents=DOCUMENTS, top_n=2,
                                                            return_documents=True))
    assert [r.index for r in top.results] == [r.index for r in full.results][:2]
    assert [r.document for r in top.results] == [DOCUMENTS[r.index] for r in top.results]
    raw = {r.index: r.score for r in full.results}
    for result in top.results:
        assert result.score == pytest.approx(1 / (1 + np.exp(-raw[result.index])), abs=1e-5)
    assert all(r.document == "" for r in full.results)


async def test_long_pairs_are_truncated_to_the_models_length(cross_encoder_worker):
    channel, stub = stub_for(cross_encoder_worker)
    async with channel:
        reply = await stub.Rerank(reranking_pb2.RerankRequest(query="q", documents=["word " * 700]))
        info = await stub.Info(common_pb2.InfoRequest())
    assert reply.usage.total_tokens == info.max_input_tokens == 128


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"query": " ", "documents": ["d"]}, "query is empty"),
        ({"query": "q", "documents": []}, "documents must contain at least one text"),
        ({"query": "q", "documents": ["d"] * 9}, "documents has 9 items; at most 8"),
        ({"query": "q", "documents": ["d", "x" * 4001]}, "documents[1] has 4001 characters"),
    ],
)
async def test_bad_requests_get_invalid_argument(cross_encoder_worker, fields, message):
    channel, stub = stub_for(cross_encoder_worker)
    async with channel:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await stub.Rerank(reranking_pb2.RerankRequest(**fields))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT and message in error.value.details()


async def test_health_and_reflection(cross_encoder_worker):
    listed = await asyncio.to_thread(
        subprocess.run, [grpcurl(), "-plaintext", f"127.0.0.1:{cross_encoder_worker.port}", "list"],
        capture_output=True, text=True, timeout=30)
    assert {"torchgate.v1.RerankingService", "grpc.health.v1.Health"} <= set(listed.stdout.split())


QUERIES = {
    "What is the capital of France?": "Paris is the capital and largest city of France.",
    "How do I bake bread at home?": "Mix flour, water, yeast and salt, let the dough rise, then bake it in a hot oven.",
    "Which planet is closest to the sun?": "Mercury is the smallest planet and the one nearest to the Sun.",
    "How do vaccines protect people?": "Vaccines train the immune system to recognise and fight a pathogen.",
}


async def test_the_announced_embedding_fallback_ranks_the_relevant_document_first():
    worker = await serve(model="missing-org/missing-cross-encoder", fallback="embedding")
    documents = list(QUERIES.values())
    channel, stub = stub_for(worker)
    async with channel:
        info = await stub.Info(common_pb2.InfoRequest())
        for query, relevant in QUERIES.items():
            reply = await stub.Rerank(reranking_pb2.RerankRequest(query=query, documents=documents))
            assert reply.results[0].index == documents.index(relevant), query
            assert reply.model.startswith("fallback:cosine:")
    assert "missing-org/missing-cross-encoder" in info.fallback_reason
    await worker.stop(0)


def test_without_the_fallback_a_missing_cross_encoder_fails_at_start_naming_it():
    with pytest.raises(ModelNotFound, match="missing-org/missing-cross-encoder"):
        build(RerankingSettings(model="missing-org/missing-cross-encoder", fallback="none"))
