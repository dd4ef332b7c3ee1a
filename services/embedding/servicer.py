"""EmbeddingService: validation, batching through the runtime, packed float replies."""

import asyncio
import time

import numpy as np

from services.embedding.adapter import EmbeddingAdapter
from services.embedding.settings import EmbeddingSettings
from services.runtime.adapter import ModelSpec
from services.runtime.errors import InvalidInput
from services.runtime.servicer import ModelServicer, timing
from services.runtime.validation import validate_model_name, validate_texts
from torchgate.v1 import common_pb2, embedding_pb2, embedding_pb2_grpc


class EmbeddingServicer(ModelServicer, embedding_pb2_grpc.EmbeddingServiceServicer):
    SERVICE = embedding_pb2.DESCRIPTOR.services_by_name["EmbeddingService"]
    adapter: EmbeddingAdapter

    def add_to_server(self, server) -> None:
        embedding_pb2_grpc.add_EmbeddingServiceServicer_to_server(self, server)

    async def Embed(self, request: embedding_pb2.EmbedRequest, context) -> embedding_pb2.EmbedResponse:
        started = time.perf_counter()
        model = self.ready_model()
        texts = list(request.texts)
        validate_texts(texts, self.settings.max_items_per_request, self.settings.max_chars_per_item)
        validate_model_name(request.model, model.model_id)
        dimension = request.dimensions or model.dimension
        if dimension > model.dimension:
            raise InvalidInput(f"dimensions is {dimension} but {model.model_id} has {model.dimension}: ask for fewer")
        if not request.truncate:
            await self._reject_overlong(texts, model.max_input_tokens)
        outcome = await self.run_batched(texts, context)
        vectors = np.stack(outcome.results)[:, :dimension]
        if request.normalize:
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = vectors / np.maximum(norms, 1e-12)
        tokens = sum(outcome.token_counts)
        return embedding_pb2.EmbedResponse(
            embeddings=np.ascontiguousarray(vectors, dtype="<f4").tobytes(),
            dimension=dimension,
            count=len(texts),
            model=model.model_id,
            usage=common_pb2.Usage(prompt_tokens=tokens, total_tokens=tokens),
            timing=timing(outcome, started),
        )

    async def _reject_overlong(self, texts: list[str], max_tokens: int) -> None:
        """Exact counts only for texts long enough to possibly exceed the limit (a token spans >= 1 char)."""
        suspects = [i for i, text in enumerate(texts) if len(text) + 2 > max_tokens]
        if not suspects:
            return
        counts = await asyncio.to_thread(self.adapter.count_tokens, [texts[i] for i in suspects])
        for index, count in zip(suspects, counts, strict=True):
            if count > max_tokens:
                raise InvalidInput(
                    f"texts[{index}] has {count} tokens; the model accepts at most {max_tokens}: "
                    f"shorten it or set truncate=true"
                )


def build(settings: EmbeddingSettings) -> EmbeddingServicer:
    return EmbeddingServicer(EmbeddingAdapter(ModelSpec.from_settings(settings)), settings)
