"""bf16 on a CPU with native bf16 stays within tolerance of fp32; dtype=auto keeps it only where it pays (on torch:
OpenVINO has tests of its own, test_openvino_backend.py)."""

import numpy as np
import pytest

from services.embedding.servicer import build as build_embedding
from services.embedding.settings import EmbeddingSettings
from services.reranking.servicer import build as build_reranking
from services.reranking.settings import RerankingSettings
from services.runtime.precision import cpu_bf16_flags, score_agreement
from tests.integration.test_embedding_worker import TEXTS, unpack
from tests.network import worker_channel
from tests.workers import started
from torchgate.v1 import common_pb2, embedding_pb2, embedding_pb2_grpc, reranking_pb2, reranking_pb2_grpc

pytestmark = pytest.mark.skipif(not cpu_bf16_flags(), reason="this CPU has no native bf16 (avx512_bf16, amx_bf16)")


async def embed_with(dtype: str):
    settings = EmbeddingSettings(port=0, metrics_port=0, device="cpu", dtype=dtype, inference_backend="torch")
    worker = await started(build_embedding(settings))
    try:
        async with worker_channel(worker.port) as channel:
            stub = embedding_pb2_grpc.EmbeddingServiceStub(channel)
            info = await stub.Info(common_pb2.InfoRequest())
            reply = await stub.Embed(embedding_pb2.EmbedRequest(texts=TEXTS, normalize=True))
    finally:
        await worker.stop(0)
    return info, unpack(reply)


async def test_bf16_embeddings_are_within_cosine_0_999_of_fp32(minilm):
    info, served = await embed_with("bfloat16")
    expected = minilm.encode(TEXTS, normalize_embeddings=True)
    assert info.dtype == "bfloat16"
    assert not np.allclose(served, expected, atol=1e-5), "bf16 arithmetic differs from fp32 in the last digits"
    assert ((served * expected).sum(1)).min() >= 0.999


async def test_auto_says_whether_bf16_paid_off_on_this_cpu_and_serves_accordingly(minilm):
    info, served = await embed_with("auto")
    expected = minilm.encode(TEXTS, normalize_embeddings=True)
    assert "the CPU has native bf16" in info.dtype_reason
    if info.dtype == "bfloat16":
        assert "self-check passed" in info.dtype_reason
        assert ((served * expected).sum(1)).min() >= 0.999
    else:
        assert info.dtype == "float32" and info.dtype_reason.endswith(": fp32")
        np.testing.assert_allclose(served, expected, atol=1e-5)


async def test_bf16_reranking_is_within_the_score_tolerance_of_fp32(tiny_cross_encoder):
    documents = ["A short one.", "Paris is the capital of France.", "word " * 200]
    scores = {}
    for dtype in ("float32", "bfloat16"):
        settings = RerankingSettings(port=0, metrics_port=0, model=str(tiny_cross_encoder), device="cpu",
                                     dtype=dtype, inference_backend="torch")
        worker = await started(build_reranking(settings))
        try:
            async with worker_channel(worker.port) as channel:
                stub = reranking_pb2_grpc.RerankingServiceStub(channel)
                info = await stub.Info(common_pb2.InfoRequest())
                reply = await stub.Rerank(reranking_pb2.RerankRequest(query="capital of France",
                                                                      documents=documents))
        finally:
            await worker.stop(0)
        scores[info.dtype] = np.array([r.score for r in sorted(reply.results, key=lambda r: r.index)])
    assert set(scores) == {"float32", "bfloat16"}
    assert score_agreement(scores["float32"], scores["bfloat16"])[0], scores
