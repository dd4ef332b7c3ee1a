"""TorchServe's inference and management read API, and KServe v1's predict: translations to the tasks.

A client of TorchServe (`GET /ping`, `POST /predictions/{model}[/{version}]`, `GET /models[/{model}]`) or of
KServe v1 (`POST /v1/models/{model}:predict`) switches by host and port alone. A model is any name the registry
routes (gateway/registry.py: a served id, percent-encoded in the path, or its short name) or an alias of the
routing file; its task says what a prediction is: an intent classifier answers TorchServe's text-classifier
shape (label -> probability), an embedding model the vector(s), a reranker (a JSON body with `query` and
`documents`) the scored documents. Every prediction runs through the task pipeline (gateway/pipeline.py);
errors take TorchServe's shape (`{"code", "type", "message"}`) or KServe's (gateway/errors.py).
"""

import json
from typing import Any

from fastapi import APIRouter, Request

from gateway import pipeline
from gateway.contract import valid_text
from gateway.errors import KSERVE, TORCHSERVE, ApiError
from gateway.readiness import model_pools, readiness
from gateway.responses import JSONResponse
from gateway.routes.model_paths import raw_model_name
from gateway.tasks.classify import CLASSIFY, ClassifyCall
from gateway.tasks.embed import EMBED, EmbedCall
from gateway.tasks.rerank import RERANK, RerankCall

PREDICTION_ERRORS = (400, 401, 403, 404, 413, 422, 429, 503, 504)

router = APIRouter()

# TorchServe clients post raw text and multipart forms here; the edge lets any media type through.
RAW_BODY_PREFIX = "/predictions/"
# Body fields TorchServe handlers commonly read the input from, in the order they are tried.
INPUT_FIELDS = ("texts", "text", "data", "instances", "inputs", "input")


async def _texts(request: Request) -> tuple[Any, bool]:
    """The request's input as TorchServe clients send it, and whether it was one text (answered unwrapped)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        form = await request.form()
        data = form.get("data")
        if data is None:
            raise ApiError(400, "invalid_request_error", "multipart body: send the input as the form field `data`")
        raw = await data.read() if hasattr(data, "read") else str(data).encode()
    else:
        raw = await request.body()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "invalid_request_error", "the body is not UTF-8 text") from None
    value: Any = text
    if content_type.endswith("json") or (not content_type and text.lstrip()[:1] in ("{", "[", '"')):
        try:
            value = json.loads(text)
        except ValueError as error:
            raise ApiError(400, "invalid_request_error", f"body: not valid JSON ({error})") from None
    if isinstance(value, dict):
        if "query" in value:
            return value, True
        field = next((name for name in INPUT_FIELDS if name in value), None)
        if field is None:
            raise ApiError(400, "invalid_request_error",
                           f"send the input as a text, a list of texts, or an object with one of {INPUT_FIELDS}")
        value = value[field]
    texts, single = ([value], True) if isinstance(value, str) else (value, False)
    if not isinstance(texts, list) or not texts or not all(isinstance(item, str) and item.strip() for item in texts):
        raise ApiError(400, "invalid_request_error", "the input must be a non-empty text or a list of non-empty texts")
    return [valid_text(text) for text in texts], single


async def predict(request: Request, model: str) -> tuple[list, bool]:
    """The predictions, in the shape TorchServe's default handlers answer (one per text, or a reranker's scored
    documents), and whether one bare text was sent (TorchServe answers it unwrapped). An unknown model is a 404
    whatever the body."""
    task = pipeline.model_task(request, model)
    instances, single = await _texts(request)
    if task == RERANK.upstream:
        if not isinstance(instances, dict) or not isinstance(instances.get("documents"), list):
            raise ApiError(400, "invalid_request_error", "a reranker takes a JSON object with `query` and `documents`")
        query, documents = instances.get("query"), instances["documents"]
        if not isinstance(query, str) or not query.strip() or not documents or not all(
                isinstance(document, str) and document.strip() for document in documents):
            raise ApiError(400, "invalid_request_error", "`query` must be a text and `documents` a list of texts")
        documents = [valid_text(document) for document in documents]
        ranked = await pipeline.run(request, RERANK, RerankCall(query=valid_text(query), documents=documents,
                                                                model=model))
        return [{"index": index, "score": score, "document": documents[index]}
                for index, score in ranked.results], False
    if isinstance(instances, dict):
        raise ApiError(400, "invalid_request_error", "`query` applies to rerankers only: send texts")
    if task == EMBED.upstream:
        embedded = await pipeline.run(request, EMBED, EmbedCall(inputs=instances, model=model, field="data"))
        return list(embedded.vectors), single  # float32 rows, rendered by orjson as the native route renders them
    classified = await pipeline.run(request, CLASSIFY, ClassifyCall(texts=instances, field="data", model=model,
                                                                    top_k=100, force_intent=True))
    return [{entry.intent: round(entry.score, 6) for entry in result.top} for result in classified.results], single


async def _prediction(request: Request, model: str) -> JSONResponse:
    predictions, single = await predict(request, model)
    return JSONResponse(predictions[0] if single else predictions)


@router.get("/ping", response_class=JSONResponse,
            responses={500: {"description": "Some served model has no healthy replica."}})
async def ping(request: Request):
    """TorchServe's health check: Healthy while every model pool has a replica that reports SERVING."""
    healthy, _ = await readiness(request, model_pools(request))
    return JSONResponse({"status": "Healthy" if healthy else "Unhealthy"}, status_code=200 if healthy else 500)


# The path parameters document the routes; the name is read from the raw path, where a `%2F` is still part of one
# segment (gateway/routes/model_paths.py).
@router.post("/predictions/{model}/{version}", response_class=JSONResponse,
             responses=TORCHSERVE.documented(*PREDICTION_ERRORS))
async def versioned_predictions(model: str, version: str, request: Request):
    """A version of an alias of the routing file (`{version}` is one of its models)."""
    return await _prediction(request, raw_model_name(request, RAW_BODY_PREFIX))


@router.post("/predictions/{model:model_name}", response_class=JSONResponse,
             responses=TORCHSERVE.documented(*PREDICTION_ERRORS))
async def predictions(model: str, request: Request):
    """TorchServe's inference API: a raw text, a JSON text/list/object, or a multipart `data` field; a model id
    with slashes percent-encoded."""
    return await _prediction(request, raw_model_name(request, RAW_BODY_PREFIX))


@router.post("/v1/models/{model:model_name}:predict", response_class=JSONResponse,
             responses=KSERVE.documented(*PREDICTION_ERRORS))
async def kserve_predict(model: str, request: Request):
    """KServe v1: `{"instances": [...]}` in, `{"predictions": [...]}` out (one per instance)."""
    predictions, _ = await predict(request, raw_model_name(request, "/v1/models/", ":predict", versioned=False))
    return JSONResponse({"predictions": predictions})


@router.get("/models", response_class=JSONResponse, responses=TORCHSERVE.documented(401))
async def list_models(request: Request):
    """TorchServe's management list: every served model and alias."""
    routing = request.app.state.routing()
    names = [pool.limits.model_id for pool in model_pools(request) if pool.limits is not None] + list(routing.aliases)
    return JSONResponse({"models": [{"modelName": name, "modelUrl": name} for name in names]})


@router.get("/models/{model:model_name}", response_class=JSONResponse,
            responses=TORCHSERVE.documented(401, 403, 404))
async def describe_model(model: str, request: Request):
    """TorchServe's management description; `workers` are the model pool's replicas, with their health."""
    name = raw_model_name(request, "/models/")
    client, _ = pipeline.route(request, pipeline.model_task(request, name), name)
    limits = client.limits
    serving, _ = await readiness(request, [client])
    return JSONResponse([{
        "modelName": name, "modelVersion": limits.fingerprint[:12] if limits else "", "modelUrl": name,
        "runtime": "python", "minWorkers": 1, "maxWorkers": 1, "batchSize": limits.max_items if limits else 0,
        "maxBatchDelay": 0, "loadedAtStartup": True,
        "workers": [{"id": client.name, "status": "READY" if serving else "UNLOADING", "gpu": False}],
    }])
