"""EmbeddingService: validation, batching through the runtime, packed float replies."""

import asyncio
import time

import numpy as np

from services.embedding.adapter import EmbeddingAdapter
from services.embedding.settings import EmbeddingSettings
from services.runtime.adapter import ModelDescription, ModelSpec
from services.runtime.errors import InvalidInput
from services.runtime.servicer import ModelServicer, timing
from services.runtime.validation import validate_model_name, validate_texts
from torchgate.v1 import common_pb2, embedding_pb2, embedding_pb2_grpc
from torchgate.vectors import shape_vectors

# Cohere's input types and the prompt names models usually give the same role.
INPUT_TYPE_FALLBACK = {"search_query": "query", "search_document": "document"}


class EmbeddingServicer(ModelServicer, embedding_pb2_grpc.EmbeddingServiceServicer):
    SERVICE = embedding_pb2.DESCRIPTOR.services_by_name["EmbeddingService"]
    adapter: EmbeddingAdapter

    async def load(self) -> None:
        await super().load()
        self.model.prompts = {**self.model.prompts, **self.settings.prompts}

    def add_to_server(self, server) -> None:
        embedding_pb2_grpc.add_EmbeddingServiceServicer_to_server(self, server)

    async def Embed(self, request: embedding_pb2.EmbedRequest, context) -> embedding_pb2.EmbedResponse:
        started = time.perf_counter()
        model = self.ready_model()
        validate_model_name(request.model, model)
        dimension = request.dimensions or model.dimension
        if dimension > model.dimension:
            raise InvalidInput(f"dimensions is {dimension} but {model.model_id} has {model.dimension}: ask for fewer")
        if request.token_ids:
            items = self._token_inputs(request, model)
        else:
            validate_texts(list(request.texts), self.settings.max_items_per_request, self.settings.max_chars_per_item)
            prompt = self._prompt(request, model)
            items = [prompt + text for text in request.texts]
            if not request.truncate:
                await self._reject_overlong(items, model.max_input_tokens)
        outcome = await self.run_batched(items, context)
        vectors = shape_vectors(np.stack(outcome.results), dimension, request.normalize)
        tokens = sum(outcome.token_counts)
        return embedding_pb2.EmbedResponse(
            embeddings=vectors.tobytes(),
            dimension=dimension,
            count=len(items),
            model=model.model_id,
            usage=common_pb2.Usage(prompt_tokens=tokens, total_tokens=tokens),
            timing=timing(outcome, started),
            input_tokens=outcome.token_counts,
            fingerprint=model.fingerprint,
        )

    async def Tokenize(self, request: embedding_pb2.TokenizeRequest, context) -> embedding_pb2.TokenizeResponse:
        model = self.ready_model()
        texts = list(request.texts)
        validate_texts(texts, self.settings.max_items_per_request, self.settings.max_chars_per_item)
        validate_model_name(request.model, model)
        tokenized = await asyncio.to_thread(self.adapter.tokenize, texts, request.add_special_tokens)
        return embedding_pb2.TokenizeResponse(model=model.model_id, results=[
            embedding_pb2.Tokens(tokens=[embedding_pb2.Token(id=token_id, text=text, special=special, start=start,
                                                             stop=stop)
                                         for token_id, text, special, start, stop in tokens])
            for tokens in tokenized])

    async def GetTokenizer(self, request: embedding_pb2.GetTokenizerRequest,
                           context) -> embedding_pb2.TokenizerDefinition:
        model = self.ready_model()
        validate_model_name(request.model, model)
        definition = await asyncio.to_thread(self.adapter.tokenizer_json)
        return embedding_pb2.TokenizerDefinition(model=model.model_id, fingerprint=model.fingerprint,
                                                 tokenizer_json=definition, max_input_tokens=model.max_input_tokens)

    def _token_inputs(self, request: embedding_pb2.EmbedRequest, model: ModelDescription) -> list[tuple[int, ...]]:
        """Inputs given as token ids: used as they are (prompts apply to texts only), each inside the vocabulary."""
        if request.texts:
            raise InvalidInput("send texts or token_ids, not both")
        if len(request.token_ids) > self.settings.max_items_per_request:
            raise InvalidInput(f"token_ids has {len(request.token_ids)} inputs; at most "
                               f"{self.settings.max_items_per_request} are allowed per request: split the request")
        items = []
        for index, token_ids in enumerate(request.token_ids):
            if not token_ids.ids:
                raise InvalidInput(f"token_ids[{index}] is empty: send at least one token id")
            if len(token_ids.ids) > model.max_input_tokens and not request.truncate:
                raise InvalidInput(f"token_ids[{index}] has {len(token_ids.ids)} tokens; the model accepts at most "
                                   f"{model.max_input_tokens}: shorten it or set truncate=true")
            # Only what the model will see is read: the work on the event loop stays bounded by the model's limit.
            ids = tuple(token_ids.ids[: model.max_input_tokens])
            outside = next((position for position, token in enumerate(ids) if token >= model.vocab_size), None)
            if outside is not None:
                raise InvalidInput(f"token_ids[{index}][{outside}] is {ids[outside]}, outside the vocabulary of "
                                   f"{model.model_id} (ids 0 to {model.vocab_size - 1})")
            items.append(ids)
        return items

    @staticmethod
    def _prompt(request: embedding_pb2.EmbedRequest, model: ModelDescription) -> str:
        """The prefix the request asks for: its prompt_name (which must exist), else its input_type's if any."""
        if request.prompt_name:
            if request.prompt_name not in model.prompts:
                known = ", ".join(map(repr, sorted(model.prompts))) or "none (set TORCHGATE_EMBEDDING_PROMPTS)"
                raise InvalidInput(f"unknown prompt_name {request.prompt_name[:80]!r}; this model knows: {known}")
            return model.prompts[request.prompt_name]
        for name in (request.input_type, INPUT_TYPE_FALLBACK.get(request.input_type)):
            if name and name in model.prompts:
                return model.prompts[name]
        return ""

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
