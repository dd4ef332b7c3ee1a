"""What each benchmark scenario loads, calls and measures; one entry per served task."""

from collections.abc import Callable
from dataclasses import dataclass

import orjson

from torchgate.v1 import embedding_pb2, embedding_pb2_grpc


@dataclass(frozen=True)
class Scenario:
    worker: str
    rest_path: str
    unit: str
    batch_sizes: tuple[int, ...]
    loads: tuple[tuple[int, int], ...]
    items: Callable[[list[str]], list]
    in_process: Callable[[], Callable[[list, int], object]]
    grpc_method: Callable[[object], Callable]
    grpc_requests: Callable[[list[str], int], list]
    rest_bodies: Callable[[list[str], int], list[bytes]]


def _chunks(corpus: list[str], size: int) -> list[list[str]]:
    return [corpus[i:i + size] for i in range(0, len(corpus) - size + 1, size)]


def _embedding_in_process():
    from sentence_transformers import SentenceTransformer

    from services.runtime.models import resolve_model

    model = SentenceTransformer(str(resolve_model("sentence-transformers/all-MiniLM-L6-v2")), device="cpu")
    return lambda texts, batch_size: model.encode(texts, batch_size=batch_size, normalize_embeddings=True)


SCENARIOS = {
    "embed": Scenario(
        worker="embedding",
        rest_path="/v1/embeddings",
        unit="texts",
        batch_sizes=(16, 32, 64),
        loads=((1, 1), (32, 1), (8, 8)),
        items=lambda corpus: corpus,
        in_process=_embedding_in_process,
        grpc_method=lambda channel: embedding_pb2_grpc.EmbeddingServiceStub(channel).Embed,
        grpc_requests=lambda corpus, k: [embedding_pb2.EmbedRequest(texts=chunk, normalize=True, truncate=True)
                                         for chunk in _chunks(corpus, k)],
        rest_bodies=lambda corpus, k: [orjson.dumps({"input": chunk, "encoding_format": "base64"})
                                       for chunk in _chunks(corpus, k)],
    ),
}
