"""What each benchmark scenario loads, calls and measures; one entry per served task."""

from collections.abc import Callable
from dataclasses import dataclass

import orjson

from torchgate.v1 import (
    classifier_pb2,
    classifier_pb2_grpc,
    embedding_pb2,
    embedding_pb2_grpc,
    reranking_pb2,
    reranking_pb2_grpc,
)


@dataclass(frozen=True)
class Scenario:
    worker: str
    rest_path: str
    unit: str
    batch_sizes: tuple[int, ...]
    loads: tuple[tuple[int, int], ...]
    items: Callable[[list[str]], list]
    in_process: Callable[[str], Callable[[list, int], object]]  # by backend: torch or openvino
    grpc_method: Callable[[object], Callable]
    grpc_requests: Callable[[list[str], int], list]
    rest_bodies: Callable[[list[str], int], list[bytes]]
    gpu_loads: tuple[tuple[int, int], ...] = ()


def _chunks(corpus: list[str], size: int) -> list[list[str]]:
    return [corpus[i:i + size] for i in range(0, len(corpus) - size + 1, size)]


def on_openvino(model) -> None:
    """Make a SentenceTransformer compute its transformer with OpenVINO, as `backend="openvino"` does.

    That backend is optimum-intel's OVModelForFeatureExtraction: the Hugging Face model converted to OpenVINO,
    compiled for the CPU with its defaults (the latency hint, bf16 where the CPU has it natively) and called on
    sentence-transformers' own padded, length-sorted batches. optimum-intel 2.2 needs transformers < 5.6 and a
    CUDA torch, so the bench builds the same thing with OpenVINO itself.
    """
    import openvino
    import torch

    transformer = model[0]
    example = {k: v for k, v in transformer.preprocess(["an example text"]).items() if isinstance(v, torch.Tensor)}
    converted = openvino.convert_model(transformer.model, example_input=example)
    request = openvino.Core().compile_model(converted, "CPU", {"PERFORMANCE_HINT": "LATENCY"}).create_infer_request()
    names = [port.get_any_name() for port in converted.inputs]

    def forward(features: dict, **kwargs) -> dict:
        states = request.infer({name: features[name].numpy() for name in names})[0]
        return {**features, "token_embeddings": torch.from_numpy(states)}

    transformer.forward = forward


def _embedding_in_process(backend: str = "torch"):
    from sentence_transformers import SentenceTransformer

    from services.runtime.models import resolve_model

    model = SentenceTransformer(str(resolve_model("sentence-transformers/all-MiniLM-L6-v2")), device="cpu")
    if backend == "openvino":
        on_openvino(model)
    return lambda texts, batch_size: model.encode(texts, batch_size=batch_size, normalize_embeddings=True)


def _rerank_groups(corpus: list[str], documents: int) -> list[tuple[str, list[str]]]:
    """(query, documents) groups: each query is a corpus text, its documents the next ones."""
    step = documents + 1
    return [(corpus[i], corpus[i + 1:i + step]) for i in range(0, len(corpus) - step + 1, step)]


def _rerank_in_process(backend: str = "torch"):
    """The served default without a cross-encoder offline: cosine of MiniLM embeddings, each text once."""
    import numpy as np

    encode = _embedding_in_process(backend)

    def score(pairs: list[tuple[str, str]], batch_size: int):
        texts = list(dict.fromkeys(text for pair in pairs for text in pair))
        vectors = dict(zip(texts, encode(texts, batch_size), strict=True))
        return np.array([vectors[q] @ vectors[d] for q, d in pairs])

    return score


def _classify_in_process(backend: str = "torch"):
    """The few-shot classifier's own parts: sorted `encode` at the given batch size, then the trained head."""
    import torch

    from services.classifier.servicer import build
    from services.classifier.settings import ClassifierSettings
    from services.runtime.device import available_cores

    adapter = build(ClassifierSettings(inference_backend="torch")).adapter
    adapter.load()
    # load() sized torch's pool for one device stream of a served worker; users in-process have every core.
    torch.set_num_threads(available_cores())
    encoder = adapter.embedding.model
    if backend == "openvino":
        on_openvino(encoder)
    return lambda texts, batch_size: adapter.head.probabilities(encoder.encode(texts, batch_size=batch_size))


SCENARIOS = {
    "embed": Scenario(
        worker="embedding",
        rest_path="/v1/embeddings",
        unit="texts",
        batch_sizes=(16, 32, 64),
        loads=((1, 1), (32, 1), (8, 8)),
        gpu_loads=((64, 32),),
        items=lambda corpus: corpus,
        in_process=_embedding_in_process,
        grpc_method=lambda channel: embedding_pb2_grpc.EmbeddingServiceStub(channel).Embed,
        grpc_requests=lambda corpus, k: [embedding_pb2.EmbedRequest(texts=chunk, normalize=True, truncate=True)
                                         for chunk in _chunks(corpus, k)],
        rest_bodies=lambda corpus, k: [orjson.dumps({"input": chunk, "encoding_format": "base64"})
                                       for chunk in _chunks(corpus, k)],
    ),
    "rerank": Scenario(
        worker="reranking",
        rest_path="/v1/rerank",
        unit="pairs",
        batch_sizes=(16, 32, 64),
        loads=((1, 100), (16, 10)),
        items=lambda corpus: [(q, d) for q, docs in _rerank_groups(corpus, 10) for d in docs],
        in_process=_rerank_in_process,
        grpc_method=lambda channel: reranking_pb2_grpc.RerankingServiceStub(channel).Rerank,
        grpc_requests=lambda corpus, k: [reranking_pb2.RerankRequest(query=q, documents=docs)
                                         for q, docs in _rerank_groups(corpus, k)],
        rest_bodies=lambda corpus, k: [orjson.dumps({"query": q, "documents": docs})
                                       for q, docs in _rerank_groups(corpus, k)],
    ),
    "classify": Scenario(
        worker="classifier",
        rest_path="/v1/classify",
        unit="texts",
        batch_sizes=(16, 32, 64),
        loads=((1, 1), (32, 1), (8, 8)),
        items=lambda corpus: corpus,
        in_process=_classify_in_process,
        grpc_method=lambda channel: classifier_pb2_grpc.ClassifierServiceStub(channel).Classify,
        grpc_requests=lambda corpus, k: [classifier_pb2.ClassifyRequest(texts=chunk) for chunk in _chunks(corpus, k)],
        rest_bodies=lambda corpus, k: [orjson.dumps({"texts": chunk}) for chunk in _chunks(corpus, k)],
    ),
}
