"""Intent classification: POST /v1/classify, and the BetterPrompts-compatible /api/v1/intents/* routes."""

import struct

import numpy as np
from fastapi import APIRouter, Request
from google.protobuf.message import DecodeError
from pydantic import ConfigDict, Field, model_validator

from gateway.cache import CacheOutcome, Computed
from gateway.contract import RequestBody, enforce_texts, json_int, text_type, texts_type
from gateway.dependencies import ModelRequest, account, mirror, model_pool, request_timeout, response_cache
from gateway.errors import MODEL_ROUTE_ERRORS, ApiError
from gateway.merging import Mergeable
from gateway.responses import JSONResponse
from gateway.upstream import Upstream
from torchgate.v1 import classifier_pb2, common_pb2

router = APIRouter(responses=MODEL_ROUTE_ERRORS)

# The batch route's limit, as in the BetterPrompts intent classifier this replaces.
MAX_BATCH = 100
MAX_TOP_K = 100

ClassifierText = text_type("classifier")
FORCE_INTENT = Field(False, description="Answer the best real intent even for a text no intent covers.")


class ClassifyRequest(ModelRequest):
    model_config = ConfigDict(json_schema_extra={"oneOf": [{"required": ["text"]}, {"required": ["texts"]}]})

    text: ClassifierText = Field(None, description="One text (or use `texts`).")
    texts: texts_type("classifier") = Field(None, description="Several texts (or use `text`).")
    top_k: json_int(1, MAX_TOP_K) | None = Field(None, description="How many intents to list per text (3 by default).")
    force_intent: bool = FORCE_INTENT

    @model_validator(mode="after")
    def one_of_text_or_texts(self):
        if ("text" in self.model_fields_set) == ("texts" in self.model_fields_set):
            raise ValueError("send exactly one of `text` or `texts`")
        return self


class BetterPromptsRequest(RequestBody):
    text: ClassifierText = Field(description="The text to classify.")
    force_intent: bool = FORCE_INTENT


class BetterPromptsBatchRequest(RequestBody):
    texts: list[ClassifierText] = Field(min_length=1, json_schema_extra={"maxItems": MAX_BATCH},
                                        description=f"At most {MAX_BATCH} texts; more is a 413.")
    force_intent: bool = FORCE_INTENT


def _classify_reply_part(reply: classifier_pb2.ClassifyResponse, start: int,
                         stop: int) -> classifier_pb2.ClassifyResponse:
    """The reply to texts start:stop of a merged call."""
    input_tokens = reply.input_tokens[start:stop]
    tokens = sum(input_tokens)
    return classifier_pb2.ClassifyResponse(
        results=reply.results[start:stop], model=reply.model,
        usage=common_pb2.Usage(prompt_tokens=tokens, total_tokens=tokens), timing=reply.timing,
        input_tokens=input_tokens, fingerprint=reply.fingerprint)


MERGE_TEXTS = Mergeable("texts", _classify_reply_part)
# A cached classification: the tokens the model saw, then the Classification message.
TOKENS = struct.Struct("<I")


async def classify_texts(request: Request, texts: list[str], field: str, top_k: int = 0, model: str = "",
                    timeout: float | None = None,
                    force_intent: bool = False) -> tuple[classifier_pb2.ClassifyResponse, CacheOutcome]:
    """The classifications of `texts`, through the response cache, and what the cache answered. Mirrored to
    the alias's shadow when the request was chosen for it (agreement: the share of texts given the same
    intent)."""
    client, model = model_pool(request, "classifier", model)
    reply, outcome = await _classify_with(request, client, model or "", texts, field, top_k, timeout, force_intent)
    account(request, reply.model, reply.usage.total_tokens)
    intents = [result.intent for result in reply.results]
    mirror(request, "classifier", lambda pool, name: _classify_with(
        request, pool, name, texts, field, top_k, timeout, force_intent),
        lambda shadow: float(np.mean([a == b.intent for a, b in zip(intents, shadow[0].results, strict=True)])))
    return reply, outcome


async def _classify_with(request: Request, client: Upstream, model: str, texts: list[str], field: str, top_k: int,
                         timeout: float | None,
                         force_intent: bool) -> tuple[classifier_pb2.ClassifyResponse, CacheOutcome]:
    enforce_texts(client.limits, texts, field, client.name)
    deadline = request_timeout(request, client, timeout)

    async def call(subset: list[str], timeout: float = deadline) -> classifier_pb2.ClassifyResponse:
        return await client.call("Classify", classifier_pb2.ClassifyRequest(
            texts=subset, top_k=top_k, model=model, force_intent=force_intent), timeout, merge=MERGE_TEXTS)

    cache = response_cache(request, client, "classifier", (top_k, force_intent))
    if cache is None:
        return await call(texts), CacheOutcome(0, len(texts))

    async def compute(indices: list[int], timeout: float) -> Computed:
        reply = await call([texts[i] for i in indices], timeout)
        if reply.fingerprint != cache.scope.fingerprint:
            client.model_changed()
        return Computed([TOKENS.pack(tokens) + result.SerializeToString(deterministic=True)
                         for tokens, result in zip(reply.input_tokens, reply.results, strict=True)],
                        reply.fingerprint)

    values, outcome = await cache.resolve([text.encode() for text in texts], compute, deadline,
                                          valid=_is_classification)
    tokens = sum(TOKENS.unpack_from(value)[0] for value in values)
    return classifier_pb2.ClassifyResponse(
        results=[classifier_pb2.Classification.FromString(value[TOKENS.size:]) for value in values],
        model=cache.scope.model_id, usage=common_pb2.Usage(prompt_tokens=tokens, total_tokens=tokens)), outcome


def _is_classification(value: bytes) -> bool:
    try:
        classifier_pb2.Classification.FromString(value[TOKENS.size:])
    except DecodeError:
        return False
    return len(value) > TOKENS.size


def _score(value: float) -> float:
    """Scores cross the wire as float32; six decimals keep the JSON free of float32 noise."""
    return round(value, 6)


def _result(result: classifier_pb2.Classification) -> dict:
    return {
        "intent": result.intent,
        "confidence": _score(result.confidence),
        "top": [{"intent": t.intent, "score": _score(t.score)} for t in result.top],
        "complexity": {"level": result.complexity.level, "score": _score(result.complexity.score)},
        "suggested_techniques": list(result.suggested_techniques),
    }


def _better_prompts(result: classifier_pb2.Classification, reply: classifier_pb2.ClassifyResponse) -> dict:
    return {
        "intent": result.intent,
        "confidence": _score(result.confidence),
        "complexity": result.complexity.level,
        "suggested_techniques": list(result.suggested_techniques),
        "metadata": {
            "complexity_score": _score(result.complexity.score),
            "top_intents": [{"intent": t.intent, "score": _score(t.score)} for t in result.top],
            "model": reply.model,
            "tokens": reply.usage.total_tokens,
        },
    }


@router.post("/v1/classify", response_class=JSONResponse)
async def classify(body: ClassifyRequest, request: Request):
    field, texts = ("text", [body.text]) if "text" in body.model_fields_set else ("texts", body.texts)
    reply, cached = await classify_texts(request, texts, field, body.top_k or 0, body.model or "", body.timeout,
                                    body.force_intent)
    return JSONResponse({"results": [_result(r) for r in reply.results], "model": reply.model,
                         "usage": {"total_tokens": reply.usage.total_tokens}}, headers=cached.headers())


@router.post("/api/v1/intents/classify", response_class=JSONResponse)
async def classify_one(body: BetterPromptsRequest, request: Request):
    reply, cached = await classify_texts(request, [body.text], "text", force_intent=body.force_intent)
    return JSONResponse(_better_prompts(reply.results[0], reply), headers=cached.headers())


@router.post("/api/v1/intents/classify/batch", response_class=JSONResponse)
async def classify_batch(body: BetterPromptsBatchRequest, request: Request):
    if len(body.texts) > MAX_BATCH:
        raise ApiError(413, "request_too_large",
                       f"texts has {len(body.texts)} items; at most {MAX_BATCH} per batch: split the request")
    reply, cached = await classify_texts(request, body.texts, "texts", force_intent=body.force_intent)
    return JSONResponse({"results": [_better_prompts(r, reply) for r in reply.results]}, headers=cached.headers())


@router.get("/api/v1/intents/types", response_class=JSONResponse)
async def intent_types(request: Request):
    client, _ = model_pool(request, "classifier", None)
    reply = await client.call("ListIntents", classifier_pb2.ListIntentsRequest(), request_timeout(request, client))
    return JSONResponse({
        "intents": [{"name": i.name, "description": i.description, "examples": i.examples} for i in reply.intents],
        "complexity_levels": list(reply.complexity_levels),
    })
