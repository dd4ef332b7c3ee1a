"""Intent classification: POST /v1/classify (the model's intents, or labels the request brings), Hugging Face's
zero-shot-classification (POST /v1/zero-shot and the task route with the model in the path), and the
BetterPrompts-compatible /api/v1/intents/* routes."""

from typing import Annotated

from fastapi import APIRouter, Request
from pydantic import ConfigDict, Field, model_validator

from gateway import pipeline
from gateway.contract import LIMIT_KEY, ModelRequest, RequestBody, json_int, label_text_type, text_type, texts_type
from gateway.errors import MODEL_ROUTE_ERRORS, ApiError
from gateway.responses import JSONResponse
from gateway.routes import model_paths  # noqa: F401 - registers the `model_name` path convertor used below
from gateway.tasks.classify import CLASSIFY, Classified, ClassifyCall, Label, hypothesis_template, zero_shot_labels
from torchgate.v1 import classifier_pb2

router = APIRouter(responses=MODEL_ROUTE_ERRORS)
# Hugging Face's task routes name the model in the path.
model_path_router = APIRouter(responses=MODEL_ROUTE_ERRORS)

# The batch route's limit, as in the BetterPrompts intent classifier this replaces.
MAX_BATCH = 100
MAX_TOP_K = 256  # a zero-shot request lists every label by default; top_k only trims

ClassifierText = text_type("classifier")
FORCE_INTENT = Field(False, description="Answer the best real intent even for a text no intent covers.")
LabelName = label_text_type("classifier", "A label's name: what the answer calls it.")
LABELS_LIMIT = {LIMIT_KEY: "classifier.max_labels"}
MULTI_LABEL = Field(False, description="Score each label on its own, in [0, 1] (several may fit); false: one "
                                       "distribution over the labels.")
TEMPLATE = Field(None, max_length=1024, description="The sentence a label is put in, `{}` standing for it "
                                                    "(\"This example is {}.\" by default).")


class LabelObject(RequestBody):
    name: LabelName
    description: label_text_type("classifier", "What the label means, in a sentence.") | None = None
    examples: list[label_text_type("classifier", "A text that belongs to the label.")] | None = Field(
        None, max_length=64, description="Texts that belong to the label.")

    def label(self) -> Label:
        return Label(self.name, (self.description or "").strip(), tuple(self.examples or ()))


class ClassifyRequest(ModelRequest):
    model_config = ConfigDict(json_schema_extra={"oneOf": [{"required": ["text"]}, {"required": ["texts"]}]})

    text: ClassifierText = Field(None, description="One text (or use `texts`).")
    texts: texts_type("classifier") = Field(None, description="Several texts (or use `text`).")
    top_k: json_int(1, MAX_TOP_K) | None = Field(None, description="How many intents to list per text (3 by default; "
                                                                   "with `labels`, every label).")
    force_intent: bool = FORCE_INTENT
    labels: list[LabelName | LabelObject] | None = Field(
        None, min_length=1, json_schema_extra=LABELS_LIMIT,
        description="Zero-shot: classify by these labels (names, or {name, description, examples}) instead of the "
                    "model's intents.")
    multi_label: bool = MULTI_LABEL
    hypothesis_template: str | None = TEMPLATE

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


class ZeroShotParameters(RequestBody):
    candidate_labels: Annotated[list[LabelName], Field(min_length=1, json_schema_extra=LABELS_LIMIT)] | LabelName = \
        Field(description="The labels, or one string of comma-separated labels.")
    multi_label: bool | None = MULTI_LABEL
    hypothesis_template: str | None = TEMPLATE


class ZeroShotRequest(ModelRequest):
    inputs: ClassifierText | texts_type("classifier") = Field(description="A text, or several.")
    parameters: ZeroShotParameters


@router.post("/v1/classify", response_class=JSONResponse)
async def classify(body: ClassifyRequest, request: Request):
    field, texts = ("text", [body.text]) if "text" in body.model_fields_set else ("texts", body.texts)
    labels = [label if isinstance(label, str) else label.label() for label in body.labels or ()]
    classified = await pipeline.run(request, CLASSIFY, ClassifyCall(
        texts=texts, field=field, model=body.model, timeout=body.timeout, top_k=body.top_k or 0,
        force_intent=body.force_intent, labels=zero_shot_labels(labels), multi_label=body.multi_label,
        hypothesis_template=hypothesis_template(body.hypothesis_template)))
    return JSONResponse({"results": [_result(r) for r in classified.results], "model": classified.model,
                         "usage": {"total_tokens": classified.tokens}}, headers=classified.cache.headers())


async def _zero_shot(body: ZeroShotRequest, request: Request, model: str | None) -> JSONResponse:
    """Hugging Face's answer: each text's labels with their scores, best first; a list of them for a list."""
    parameters = body.parameters
    names = parameters.candidate_labels
    if isinstance(names, str):
        names = [name.strip() for name in names.split(",")]
    texts = [body.inputs] if isinstance(body.inputs, str) else body.inputs
    classified = await pipeline.run(request, CLASSIFY, ClassifyCall(
        texts=texts, field="inputs", model=model, timeout=body.timeout,
        labels=zero_shot_labels(names, "parameters.candidate_labels"), labels_field="parameters.candidate_labels",
        multi_label=bool(parameters.multi_label),
        hypothesis_template=hypothesis_template(parameters.hypothesis_template, "parameters.hypothesis_template")))
    answers = [[{"label": t.intent, "score": _score(t.score)} for t in result.top] for result in classified.results]
    return JSONResponse(answers[0] if isinstance(body.inputs, str) else answers, headers=classified.cache.headers())


@router.post("/v1/zero-shot", response_class=JSONResponse)
async def zero_shot(body: ZeroShotRequest, request: Request):
    return await _zero_shot(body, request, body.model)


@model_path_router.post("/hf-inference/models/{model:model_name}/pipeline/zero-shot-classification",
             response_class=JSONResponse)
async def zero_shot_pipeline(model: str, body: ZeroShotRequest, request: Request):
    return await _zero_shot(body, request, model)


@model_path_router.post("/hf-inference/models/{model:model_name}", response_class=JSONResponse)
async def zero_shot_model(model: str, body: ZeroShotRequest, request: Request):
    """The route `InferenceClient(model=".../hf-inference/models/<model>")` posts a zero-shot call to."""
    return await _zero_shot(body, request, model)


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
