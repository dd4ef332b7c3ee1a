"""TorchServe's inference and management read API, and KServe v1's predict, over the native routes' calls.

A client of TorchServe (`GET /ping`, `POST /predictions/{model}[/{version}]`, `GET /models[/{model}]`) or of
KServe v1 (`POST /v1/models/{model}:predict`) switches by host and port alone. A model is any name the registry
routes (a served id or its last path part) or an alias of the routing file; its task says what a prediction
is: an intent classifier answers TorchServe's text-classifier shape (label -> probability), an embedding model
the vector(s), a reranker (a JSON body with `query` and `documents`) the scored documents. The work goes
through the same functions as the native routes (cache, tenants, limits, rollouts); errors keep TorchServe's
shape (`{"code", "type", "message"}`) with the native status.
"""

import json
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel
from starlette.responses import Response

from gateway.contract import _valid_unicode, clip
from gateway.dependencies import account, model_pool
from gateway.errors import ApiError
from gateway.responses import JSONResponse
from gateway.routes.classify import classify_texts
from gateway.routes.embeddings import embed
from gateway.routes.rerank import rank


class TorchServeError(BaseModel):
    """TorchServe's error shape."""

    code: int
    type: str
    message: str


class KServeError(BaseModel):
    """KServe's error shape."""

    error: str


def _documented(model: type[BaseModel], *statuses: int) -> dict:
    return {status: {"model": model, "description": description} for status, description in
            _ERROR_MEANINGS.items() if status in statuses}


_ERROR_MEANINGS = {400: "The input is not a text, a list of texts, or the task's JSON.",
                   401: "Missing or invalid credentials.", 403: "The tenant may not use this model.",
                   404: "No such model or version.", 413: "Request too large.", 429: "Over a limit: see Retry-After.",
                   503: "The model's workers are unavailable: see Retry-After.", 504: "The deadline passed."}
PREDICTION_ERRORS = tuple(_ERROR_MEANINGS)

router = APIRouter()

# TorchServe clients post raw text and multipart forms here; the edge lets any media type through.
RAW_BODY_PREFIX = "/predictions/"

# TorchServe's exception names for the statuses its clients tell apart.
_ERROR_TYPES = {400: "BadRequestException", 404: "ModelNotFoundException", 413: "RequestTooLargeException",
                415: "UnsupportedMediaTypeException", 422: "BadRequestException", 429: "ServiceUnavailableException",
                503: "ServiceUnavailableException", 504: "RequestTimeoutException"}
# Body fields TorchServe handlers commonly read the input from, in the order they are tried.
INPUT_FIELDS = ("texts", "text", "data", "instances", "inputs", "input")


def torchserve_error(error: ApiError) -> JSONResponse:
    """An error in TorchServe's shape."""
    return JSONResponse({"code": error.status, "type": _ERROR_TYPES.get(error.status, "InternalServerException"),
                         "message": error.message}, status_code=error.status, headers=error.response_headers() or None)


def kserve_error(error: ApiError) -> JSONResponse:
    """An error in KServe's shape."""
    return JSONResponse({"error": error.message}, status_code=error.status, headers=error.response_headers() or None)


# Where the edge's own refusals (401, 413, 429...) take these protocols' shapes.
ERROR_SHAPES = ((RAW_BODY_PREFIX, torchserve_error), ("/models", torchserve_error), ("/v1/models/", kserve_error))


def task_of(request: Request, name: str) -> str:
    """The task of the model a TorchServe client names: a served name, or an alias's first version's; a name
    that several tasks serve (a classifier's last path part may be its embedder's) must be given in full."""
    routing = request.app.state.routing()
    base = name.partition("@")[0]
    wanted = {routing.aliases[base].versions[0].model} if base in routing.aliases else {name}
    served, tasks = [], []
    for task, pools in request.app.state.pools.items():
        known = [pool.limits for pool in pools.pools if pool.limits is not None]
        served += [limits.model_id for limits in known]
        if any(limits.names() & wanted for limits in known):
            tasks.append(task)
    if len(tasks) > 1:
        raise ApiError(400, "invalid_request_error", f"model {clip(name)!r} names models of several tasks "
                       f"({', '.join(tasks)}): use the full id")
    if not tasks:
        raise ApiError(404, "model_not_found", f"model {clip(name)!r} is not served; served: "
                       f"{', '.join(map(repr, served + list(routing.aliases)))}")
    return tasks[0]


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


def valid_text(text: str) -> str:
    """The contract's Unicode rule (gateway/contract.py) as a 400."""
    try:
        return _valid_unicode(text)
    except ValueError as error:
        raise ApiError(400, "invalid_request_error", str(error)) from None


async def predict(request: Request, model: str, task: str, instances: Any, single: bool) -> Any:
    """One prediction per input, in the shape TorchServe's default handlers answer."""
    client, routed = model_pool(request, task, model)
    if task == "reranking":
        if not isinstance(instances, dict) or not isinstance(instances.get("documents"), list):
            raise ApiError(400, "invalid_request_error", "a reranker takes a JSON object with `query` and `documents`")
        query, documents = instances.get("query"), instances["documents"]
        if not isinstance(query, str) or not query.strip() or not documents or not all(
                isinstance(document, str) and document.strip() for document in documents):
            raise ApiError(400, "invalid_request_error", "`query` must be a text and `documents` a list of texts")
        query, documents = valid_text(query), [valid_text(document) for document in documents]
        ranked = await rank(request, client, query, documents, model=routed, top_n=None)
        account(request, ranked.model, ranked.tokens)
        return [{"index": index, "score": score, "document": documents[index]} for index, score in ranked.results]
    if isinstance(instances, dict):
        raise ApiError(400, "invalid_request_error", "`query` applies to rerankers only: send texts")
    if task == "embedding":
        embedded = await embed(request, client, instances, model=routed, truncate=True, dimensions=None, timeout=None)
        account(request, embedded.model, embedded.tokens)
        vectors = list(embedded.vectors)  # float32 rows, rendered by orjson as the native route renders them
        return vectors[0] if single else vectors
    reply, _ = await classify_texts(request, instances, "data", top_k=100, model=routed or "", force_intent=True)
    labelled = [{entry.intent: round(entry.score, 6) for entry in result.top} for result in reply.results]
    return labelled[0] if single else labelled


@router.get("/ping", response_class=JSONResponse,
            responses={500: {"description": "Some served model has no healthy replica."}})
async def ping(request: Request):
    """TorchServe's health check: Healthy while every model pool has a replica that reports SERVING."""
    healthy = all(pool.serving for pools in request.app.state.pools.values() for pool in pools.pools)
    return JSONResponse({"status": "Healthy" if healthy else "Unhealthy"}, status_code=200 if healthy else 500)


@router.post("/predictions/{model}", response_class=JSONResponse,
             responses=_documented(TorchServeError, *PREDICTION_ERRORS))
async def predictions(model: str, request: Request) -> Response:
    """TorchServe's inference API: a raw text, a JSON text/list/object, or a multipart `data` field."""
    try:
        task = task_of(request, model)  # an unknown model is a 404 whatever the body
        instances, single = await _texts(request)
        return JSONResponse(await predict(request, model, task, instances, single))
    except ApiError as error:
        return torchserve_error(error)


@router.post("/predictions/{model}/{version}", response_class=JSONResponse,
             responses=_documented(TorchServeError, *PREDICTION_ERRORS))
async def versioned_predictions(model: str, version: str, request: Request) -> Response:
    """A version of an alias of the routing file (`{version}` is one of its models)."""
    return await predictions(f"{model}@{version}", request)


@router.post("/v1/models/{model}:predict", response_class=JSONResponse,
             responses=_documented(KServeError, *PREDICTION_ERRORS))
async def kserve_predict(model: str, request: Request) -> Response:
    """KServe v1: `{"instances": [...]}` in, `{"predictions": [...]}` out (one per instance)."""
    try:
        task = task_of(request, model)
        instances, _ = await _texts(request)
        predictions = await predict(request, model, task, instances, single=False)
        return JSONResponse({"predictions": predictions})
    except ApiError as error:
        return kserve_error(error)


@router.get("/models", response_class=JSONResponse, responses=_documented(TorchServeError, 401))
async def list_models(request: Request) -> Response:
    """TorchServe's management list: every served model and alias."""
    routing = request.app.state.routing()
    names = [pool.limits.model_id for pools in request.app.state.pools.values() for pool in pools.pools
             if pool.limits is not None] + list(routing.aliases)
    return JSONResponse({"models": [{"modelName": name, "modelUrl": name} for name in names]})


@router.get("/models/{model}", response_class=JSONResponse,
            responses=_documented(TorchServeError, 401, 403, 404))
async def describe_model(model: str, request: Request) -> Response:
    """TorchServe's management description; `workers` are the model pool's replicas, with their health."""
    try:
        task = task_of(request, model)
        client, _ = model_pool(request, task, model)
    except ApiError as error:
        return torchserve_error(error)
    limits = client.limits
    return JSONResponse([{
        "modelName": model, "modelVersion": limits.fingerprint[:12] if limits else "", "modelUrl": model,
        "runtime": "python", "minWorkers": 1, "maxWorkers": 1, "batchSize": limits.max_items if limits else 0,
        "maxBatchDelay": 0, "loadedAtStartup": True,
        "workers": [{"id": client.name, "status": "READY" if client.serving else "UNLOADING", "gpu": False}],
    }])
