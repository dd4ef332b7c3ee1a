import asyncio
import subprocess

import grpc
import numpy as np
import pytest

from services.reranking.servicer import build
from services.reranking.settings import RerankingSettings
from services.runtime.errors import ModelNotFound
from tests.integration.conftest import grpcurl
from tests.network import worker_channel
from tests.workers import started
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
    return await started(build(settings))


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


async def test_long_documents_score_as_their_best_window_and_usage_counts_every_window(cross_encoder_worker,
                                                                                    tiny_cross_encoder):
    from sentence_transformers import CrossEncoder
    from transformers import AutoTokenizer

    from services.reranking.windows import split_document

    query = "capital of france"
    long_document = " ".join(f"sentence {i} about rivers and hills." for i in range(60)) + " Paris is the capital."
    channel, stub = stub_for(cross_encoder_worker)
    async with channel:
        reply = await stub.Rerank(reranking_pb2.RerankRequest(query=query, documents=[long_document, "short"]))
        capped = await stub.Rerank(reranking_pb2.RerankRequest(query=query, documents=[long_document],
                                                               max_tokens_per_doc=20))
        info = await stub.Info(common_pb2.InfoRequest())
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_cross_encoder))
    budget = info.max_input_tokens - len(tokenizer(query, add_special_tokens=False)["input_ids"]) - 3
    windows = split_document(tokenizer, long_document, budget, max_windows=8)
    assert 2 < len(windows) <= 8 and windows[-1].endswith("Paris is the capital.")
    reference = CrossEncoder(str(tiny_cross_encoder), device="cpu", local_files_only=True)
    best = max(reference.predict([(query, window) for window in windows]))
    assert {r.index: r.score for r in reply.results}[0] == pytest.approx(best, abs=1e-5)
    assert reply.usage.total_tokens > 2 * info.max_input_tokens, "every window is computed and counted"
    query_tokens = len(tokenizer(query, add_special_tokens=False)["input_ids"])
    assert capped.usage.total_tokens == 20 + query_tokens + 3, "max_tokens_per_doc cuts the document first"


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
        for name in ("missing-org/missing-cross-encoder", "missing-cross-encoder"):  # what it stands in for
            await stub.Rerank(reranking_pb2.RerankRequest(query="q", documents=["d"], model=name))
        assert info.stands_in_for == "missing-org/missing-cross-encoder"
    assert "missing-org/missing-cross-encoder" in info.fallback_reason
    await worker.stop(0)


def test_without_the_fallback_a_missing_cross_encoder_fails_at_start_naming_it():
    with pytest.raises(ModelNotFound, match="missing-org/missing-cross-encoder"):
        build(RerankingSettings(model="missing-org/missing-cross-encoder", fallback="none"))


@pytest.mark.parametrize("windows", [8, 1])
async def test_with_the_fallback_a_long_document_whose_end_answers_the_query_ranks_first(windows):
    worker = await serve(model="missing-org/missing-cross-encoder", fallback="embedding",
                         max_windows_per_document=windows)
    filler = " ".join(["The garden needs water in summer, and the roses grow best near the old stone wall."] * 25)
    documents = ["Bananas are yellow.", filler + " Paris is the capital of France.", filler]
    channel, stub = stub_for(worker)
    async with channel:
        reply = await stub.Rerank(reranking_pb2.RerankRequest(query="What is the capital of France?",
                                                              documents=documents))
    await worker.stop(0)
    assert len(documents[1].split()) > 400
    scores = {r.index: r.score for r in reply.results}
    if windows > 1:
        assert reply.results[0].index == 1 and scores[1] > scores[2] + 0.1, scores
    else:  # one window sees only the start, as plain truncation would: the answer is lost
        assert scores[1] == pytest.approx(scores[2], abs=1e-4), scores


LONG_DOCUMENT_CASES = [  # query, the answering sentence, a close distractor, the filler around the answer
    ("What is the capital of France?", "Paris is the capital of France.", "Berlin is the capital of Germany.",
     "It rained all morning and the streets were wet and grey until the afternoon."),
    ("How many strings does a violin have?", "A violin has four strings.", "A guitar usually has six strings.",
     "The committee met on Tuesday to review the budget and the plans for the new library."),
    ("Who painted the Mona Lisa?", "The Mona Lisa was painted by Leonardo da Vinci.",
     "The Starry Night was painted by Vincent van Gogh.",
     "Fresh bread, a little butter and a pot of tea make a simple breakfast for a cold day."),
]


async def test_with_the_fallback_a_long_document_ranks_above_a_close_distractor_wherever_its_answer_is():
    worker = await serve(model="missing-org/missing-cross-encoder", fallback="embedding", max_chars_per_item=8000)
    channel, stub = stub_for(worker)
    misranked = []
    async with channel:
        for query, answer, distractor, filler in LONG_DOCUMENT_CASES:
            for position in (0, 12, 25):
                sentences = [filler] * 25
                sentences.insert(position, answer)
                document = " ".join(sentences)
                reply = await stub.Rerank(reranking_pb2.RerankRequest(query=query, documents=[distractor, document]))
                if reply.results[0].index != 1:
                    misranked.append((query, position))
    await worker.stop(0)
    assert misranked == []


def test_a_document_of_many_tiny_sentences_is_bounded_to_its_share_of_passages():
    from transformers import AutoTokenizer

    from services.reranking.windows import PASSAGE_TOKENS, split_passages
    from services.runtime.models import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(str(resolve_model("sentence-transformers/all-MiniLM-L6-v2")))
    tiny_sentences = " ".join(f"w{i}." for i in range(2000))
    passages = split_passages(tokenizer, tiny_sentences, 254, max_passages=32)
    assert len(passages) == 32 and passages[0] == "w0." and passages[-1] == "w31."
    one_long_sentence = " ".join(f"word{i}" for i in range(400))
    windows = split_passages(tokenizer, one_long_sentence, 254, max_passages=32)
    assert len(windows) == 32 and all(len(tokenizer(w, add_special_tokens=False)["input_ids"]) <= PASSAGE_TOKENS
                                      for w in windows)
