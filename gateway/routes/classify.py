"""Intent classification: POST /v1/classify, and the BetterPrompts-compatible /api/v1/intents/* routes."""

from fastapi import APIRouter, Request
from pydantic import ConfigDict, Field, model_validator

from gateway import pipeline
from gateway.contract import ModelRequest, RequestBody, json_int, text_type, texts_type
from gateway.errors import MODEL_ROUTE_ERRORS, ApiError
from gateway.responses import JSONResponse
from gateway.tasks.classify import CLASSIFY, Classified, ClassifyCall
from torchgate.v1 import classifier_pb2

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


def _better_prompts(result: classifier_pb2.Classification, reply: Classified) -> dict:
    return {
        "intent": result.intent,
        "confidence": _score(result.confidence),
        "complexity": result.complexity.level,
        "suggested_techniques": list(result.suggested_techniques),
        "metadata": {
            "complexity_score": _score(result.complexity.score),
            "top_intents": [{"intent": t.intent, "score": _score(t.score)} for t in result.top],
            "model": reply.model,
            "tokens": reply.tokens,
        },
    }


@router.post("/v1/classify", response_class=JSONResponse)
async def classify(body: ClassifyRequest, request: Request):
    field, texts = ("text", [body.text]) if "text" in body.model_fields_set else ("texts", body.texts)
    classified = await pipeline.run(request, CLASSIFY, ClassifyCall(
        texts=texts, field=field, model=body.model, timeout=body.timeout, top_k=body.top_k or 0,
        force_intent=body.force_intent))
    return JSONResponse({"results": [_result(r) for r in classified.results], "model": classified.model,
                         "usage": {"total_tokens": classified.tokens}}, headers=classified.cache.headers())


@router.post("/api/v1/intents/classify", response_class=JSONResponse)
async def classify_one(body: BetterPromptsRequest, request: Request):
    classified = await pipeline.run(request, CLASSIFY, ClassifyCall(texts=[body.text], field="text",
                                                                    force_intent=body.force_intent))
    return JSONResponse(_better_prompts(classified.results[0], classified), headers=classified.cache.headers())


@router.post("/api/v1/intents/classify/batch", response_class=JSONResponse)
async def classify_batch(body: BetterPromptsBatchRequest, request: Request):
    if len(body.texts) > MAX_BATCH:
        raise ApiError(413, "request_too_large",
                       f"texts has {len(body.texts)} items; at most {MAX_BATCH} per batch: split the request")
    classified = await pipeline.run(request, CLASSIFY, ClassifyCall(texts=body.texts, force_intent=body.force_intent))
    return JSONResponse({"results": [_better_prompts(r, classified) for r in classified.results]},
                        headers=classified.cache.headers())


@router.get("/api/v1/intents/types", response_class=JSONResponse)
async def intent_types(request: Request):
    client, _ = pipeline.route(request, "classifier", None)
    reply = await client.call("ListIntents", classifier_pb2.ListIntentsRequest(),
                              pipeline.request_timeout(request, client))
    return JSONResponse({
        "intents": [{"name": i.name, "description": i.description, "examples": i.examples} for i in reply.intents],
        "complexity_levels": list(reply.complexity_levels),
    })
