"""RerankingService: validation, batching of (query, document) pairs, sorted results."""

import asyncio
import logging
import time

from services.embedding.adapter import EmbeddingAdapter
from services.reranking.adapter import CrossEncoderAdapter, EmbeddingFallbackAdapter
from services.reranking.settings import RerankingSettings
from services.runtime.adapter import ModelAdapter, ModelSpec
from services.runtime.errors import ModelNotFound
from services.runtime.models import resolve_model
from services.runtime.servicer import ModelServicer, timing
from services.runtime.validation import validate_model_name, validate_text, validate_texts
from torchgate.v1 import common_pb2, reranking_pb2, reranking_pb2_grpc

log = logging.getLogger(__name__)


class RerankingServicer(ModelServicer, reranking_pb2_grpc.RerankingServiceServicer):
    SERVICE = reranking_pb2.DESCRIPTOR.services_by_name["RerankingService"]

    def add_to_server(self, server) -> None:
        reranking_pb2_grpc.add_RerankingServiceServicer_to_server(self, server)

    async def Rerank(self, request: reranking_pb2.RerankRequest, context) -> reranking_pb2.RerankResponse:
        started = time.perf_counter()
        model = self.ready_model()
        validate_text(request.query, self.settings.max_chars_per_item, "query")
        documents = list(request.documents)
        validate_texts(documents, self.settings.max_items_per_request, self.settings.max_chars_per_item, "documents")
        validate_model_name(request.model, model)
        windows = await asyncio.to_thread(self._windows, request.query, documents, request.max_tokens_per_doc)
        owners = [index for index, document_windows in enumerate(windows) for _ in document_windows]
        pairs = [(request.query, window) for document_windows in windows for window in document_windows]
        outcome = await self.run_batched(pairs, context)
        best: dict[int, tuple[float, float]] = {}
        for index, scored in zip(owners, outcome.results, strict=True):
            if index not in best or scored[0] > best[index][0]:
                best[index] = scored
        ranked = sorted(best.items(), key=lambda scored: scored[1][0], reverse=True)
        top = ranked[: request.top_n or len(ranked)]
        tokens = sum(outcome.token_counts)
        document_tokens = [0] * len(documents)
        for index, count in zip(owners, outcome.token_counts, strict=True):
            document_tokens[index] += count
        return reranking_pb2.RerankResponse(
            results=[
                reranking_pb2.RerankResult(
                    index=index, score=raw if request.raw_scores else score, raw_score=raw,
                    document=documents[index] if request.return_documents else "",
                )
                for index, (score, raw) in top
            ],
            model=model.model_id,
            usage=common_pb2.Usage(prompt_tokens=tokens, total_tokens=tokens),
            timing=timing(outcome, started),
            input_tokens=document_tokens,
            fingerprint=model.fingerprint,
        )


    def _windows(self, query: str, documents: list[str], max_tokens_per_doc: int) -> list[list[str]]:
        """Each document as the windows its adapter scores it over (the document itself when it fits)."""
        limit = self.settings.max_windows_per_document
        return [self.adapter.windows(query, document, limit, max_tokens_per_doc) for document in documents]


def choose_adapter(settings: RerankingSettings) -> ModelAdapter:
    """The configured cross-encoder, or the embedding fallback when allowed and the model is not offline."""
    cross_encoder = CrossEncoderAdapter(ModelSpec.from_settings(settings))
    try:
        resolve_model(settings.model)
        return cross_encoder
    except ModelNotFound:
        if settings.fallback != "embedding":
            raise ModelNotFound(
                f"reranker {settings.model!r} is not available offline (not bundled, not a local directory, not "
                "in the Hugging Face cache); provide it or set TORCHGATE_RERANKING_FALLBACK=embedding"
            ) from None
    reason = (f"cross-encoder {settings.model!r} is not available offline; scoring with the cosine similarity "
              f"of {settings.fallback_model!r} embeddings")
    log.warning("reranking fallback in use: %s", reason)
    embedding = EmbeddingAdapter(ModelSpec.from_settings(settings, settings.fallback_model))
    return EmbeddingFallbackAdapter(settings.model, embedding, reason)


def build(settings: RerankingSettings) -> RerankingServicer:
    return RerankingServicer(choose_adapter(settings), settings)
