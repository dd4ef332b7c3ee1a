"""OpenVINO computing the packed encoders: agreement with fp32 torch at the documented tolerances, the disk cache.

Workers run with INFERENCE_BACKEND=openvino (kept whatever its speed, so the assertions hold on every machine) and
are compared with the same model on fp32 torch; services/runtime/backend.py says how auto chooses.
"""

import time

import numpy as np
import pytest

from services.classifier.servicer import build as build_classifier
from services.classifier.settings import ClassifierSettings
from services.embedding.adapter import EmbeddingAdapter
from services.embedding.servicer import build as build_embedding
from services.embedding.settings import EmbeddingSettings
from services.reranking.servicer import build as build_reranking
from services.reranking.settings import RerankingSettings
from services.runtime.adapter import ModelDescription, ModelSpec
from services.runtime.precision import cosine_agreement, score_agreement
from tests.integration.test_embedding_worker import TEXTS, unpack
from tests.network import worker_channel
from tests.tiny_models import build_tiny_embedder
from tests.workers import serving
from torchgate.v1 import (
    classifier_pb2,
    classifier_pb2_grpc,
    common_pb2,
    embedding_pb2,
    embedding_pb2_grpc,
    reranking_pb2,
    reranking_pb2_grpc,
)

DOCUMENTS = ["A short one.", "Paris is the capital of France.", "The Louvre is in Paris. " * 20, "word " * 300]


async def test_openvino_embeddings_are_within_cosine_0_999_of_fp32_torch(minilm, tmp_path):
    settings = EmbeddingSettings(port=0, metrics_port=0, device="cpu", dtype="auto", inference_backend="openvino",
                                 openvino_cache_dir=str(tmp_path))
    async with serving(build_embedding(settings)) as worker, worker_channel(worker.port) as channel:
        stub = embedding_pb2_grpc.EmbeddingServiceStub(channel)
        info = await stub.Info(common_pb2.InfoRequest())
        texts = [*TEXTS, "word " * 300]  # one past the model's 256 tokens: truncated the same way
        served = unpack(await stub.Embed(embedding_pb2.EmbedRequest(texts=texts, normalize=True, truncate=True)))
    expected = minilm.encode(texts, normalize_embeddings=True)
    assert info.backend == "openvino", info.backend_reason
    assert info.backend_reason.startswith("configured: openvino") and "min cosine" in info.backend_reason
    assert info.dtype in ("bfloat16", "float32")
    agrees, detail = cosine_agreement(expected, served)
    assert agrees, detail


async def rerank_scores(model: str, backend: str, cache_dir) -> tuple[common_pb2.ModelInfo, np.ndarray]:
    settings = RerankingSettings(port=0, metrics_port=0, model=model, device="cpu", dtype="float32",
                                 inference_backend=backend, openvino_cache_dir=str(cache_dir))
    async with serving(build_reranking(settings)) as worker, worker_channel(worker.port) as channel:
        stub = reranking_pb2_grpc.RerankingServiceStub(channel)
        info = await stub.Info(common_pb2.InfoRequest())
        reply = await stub.Rerank(reranking_pb2.RerankRequest(query="capital of France", documents=DOCUMENTS))
    return info, np.array([r.score for r in sorted(reply.results, key=lambda r: r.index)])


async def test_openvino_rerank_scores_are_within_0_02_of_fp32_torch(tiny_cross_encoder, tmp_path):
    info, on_openvino = await rerank_scores(str(tiny_cross_encoder), "openvino", tmp_path)
    torch_info, on_torch = await rerank_scores(str(tiny_cross_encoder), "torch", tmp_path)
    assert (info.backend, torch_info.backend) == ("openvino", "torch")
    assert info.fingerprint != torch_info.fingerprint, "a response cache must not mix the two backends' results"
    agrees, detail = score_agreement(on_torch, on_openvino)
    assert agrees, detail


@pytest.fixture(scope="module")
def tiny_intent_checkpoint(tiny_bert_dir, tmp_path_factory):
    import torch
    from transformers import BertForSequenceClassification

    source, config = tiny_bert_dir
    labels = ["billing", "technical", "sales"]
    config.num_labels = len(labels)
    config.id2label = dict(enumerate(labels))
    config.label2id = {label: i for i, label in enumerate(labels)}
    directory = tmp_path_factory.mktemp("tiny-intents")
    torch.manual_seed(2)
    BertForSequenceClassification(config).save_pretrained(directory)
    for file in source.iterdir():
        (directory / file.name).write_bytes(file.read_bytes())
    return directory, labels


async def test_openvino_classifier_probabilities_are_within_0_02_of_fp32_torch(tiny_intent_checkpoint, tmp_path):
    directory, labels = tiny_intent_checkpoint
    texts = ["my invoice is wrong", "the app crashes on start", "word " * 400]
    probabilities = {}
    for backend in ("openvino", "torch"):
        settings = ClassifierSettings(port=0, metrics_port=0, backend="checkpoint", model=str(directory), device="cpu",
                                      dtype="float32", inference_backend=backend, openvino_cache_dir=str(tmp_path))
        async with serving(build_classifier(settings)) as worker, worker_channel(worker.port) as channel:
            stub = classifier_pb2_grpc.ClassifierServiceStub(channel)
            assert (await stub.Info(common_pb2.InfoRequest())).backend == backend
            reply = await stub.Classify(classifier_pb2.ClassifyRequest(texts=texts, top_k=len(labels)))
        probabilities[backend] = np.array([[{t.intent: t.score for t in r.top}[label] for label in labels]
                                           for r in reply.results])
    agrees, detail = score_agreement(probabilities["torch"], probabilities["openvino"])
    assert agrees, detail


def load(model: str, cache_dir, **spec) -> tuple[EmbeddingAdapter, object]:
    adapter = EmbeddingAdapter(ModelSpec(model, device="cpu", dtype="float32", openvino_cache_dir=str(cache_dir),
                                         **spec))
    return adapter, adapter.load()


def embed(adapter: EmbeddingAdapter, texts: list[str]) -> np.ndarray:
    return adapter.forward(adapter.preprocess(texts))


def cache_files(cache_dir) -> dict[str, int]:
    """The converted models in `cache_dir` (beside them: the self-check's decisions, OpenVINO's compiled blobs)."""
    return {str(path.relative_to(cache_dir)): path.stat().st_mtime_ns for path in cache_dir.rglob("*")
            if path.is_file() and path.relative_to(cache_dir).parts[0] not in ("decisions", "compiled")}


def test_the_converted_model_is_reused_from_disk_and_a_changed_model_is_converted_again(tmp_path):
    model = build_tiny_embedder(tmp_path / "model", seed=0)
    cache = tmp_path / "openvino"
    first, described = load(str(model), cache, inference_backend="openvino")
    assert "converted, cached in" in described.backend_reason, described.backend_reason
    written = cache_files(cache)
    assert {name.rsplit("/", 1)[1] for name in written} == {"encoder.xml", "encoder.bin"}

    again, described = load(str(model), cache, inference_backend="openvino")
    assert "read from the cache" in described.backend_reason, described.backend_reason
    assert cache_files(cache) == written, "a restart reads the converted model, it does not write it again"
    np.testing.assert_allclose(embed(again, TEXTS), embed(first, TEXTS), atol=1e-5)

    build_tiny_embedder(tmp_path / "model", seed=1)  # the same directory, new weights
    changed, described = load(str(model), cache, inference_backend="openvino")
    assert "converted, cached in" in described.backend_reason, described.backend_reason
    assert len({name.split("/")[0] for name in cache_files(cache)}) == 2
    on_torch, _ = load(str(model), cache, inference_backend="torch")
    agrees, detail = cosine_agreement(embed(on_torch, TEXTS), embed(changed, TEXTS))
    assert agrees, detail
    assert not cosine_agreement(embed(first, TEXTS), embed(changed, TEXTS))[0], "the old model's vectors differ"


def test_int8_weights_serve_only_where_the_self_check_agrees(minilm, tmp_path):
    adapter, described = load("sentence-transformers/all-MiniLM-L6-v2", tmp_path, inference_backend="openvino",
                               quantize="int8")
    assert "openvino int8+float32:" in described.backend_reason, "the int8 candidate was tried"
    agrees, detail = cosine_agreement(minilm.encode(TEXTS), embed(adapter, TEXTS))
    assert agrees, (described.dtype, detail)


def test_an_unwritable_cache_directory_only_costs_the_conversion(tmp_path):
    model = build_tiny_embedder(tmp_path / "model")
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    adapter, described = load(str(model), blocker, inference_backend="openvino")
    assert described.backend == "openvino"
    assert "converted, not cached" in described.backend_reason, described.backend_reason


CACHED = "cached decision of an earlier start: "


def start_embedder(cache_dir, **spec) -> tuple[ModelDescription, np.ndarray, float]:
    """What a worker's start does with the bundled MiniLM: load (self-check included) and warm up; the model's
    description, its vectors of TEXTS and the seconds the start took."""
    started = time.perf_counter()
    adapter = EmbeddingAdapter(ModelSpec(EmbeddingSettings().model, device="cpu", openvino_cache_dir=str(cache_dir),
                                         **spec))
    described = adapter.load()
    adapter.warmup()
    seconds = time.perf_counter() - started
    prepared = adapter.preprocess(TEXTS)
    return described, np.array(adapter.postprocess(prepared, adapter.forward(prepared))), seconds


def test_a_restart_restores_the_self_checks_decision_and_a_changed_layout_or_recheck_measures_again(
        tmp_path, record_property):
    cold, cold_vectors, cold_s = start_embedder(tmp_path)
    warm, warm_vectors, warm_s = start_embedder(tmp_path)
    record_property("cold_start_s", round(cold_s, 2))
    record_property("warm_start_s", round(warm_s, 2))
    assert not cold.backend_reason.startswith(CACHED), cold.backend_reason
    assert warm.backend_reason.startswith(CACHED + cold.backend_reason)
    assert (warm.backend, warm.dtype) == (cold.backend, cold.dtype)
    assert (warm_vectors * cold_vectors).sum(1).min() >= 0.99999, "the restored backend computes as the measured"
    one_stream, _, _ = start_embedder(tmp_path, device_streams=1, cpu_threads=1)
    assert not one_stream.backend_reason.startswith(CACHED), "another thread layout is measured again"
    rechecked, _, _ = start_embedder(tmp_path, recheck=True)
    assert not rechecked.backend_reason.startswith(CACHED), "RECHECK measures again"
