"""KServe's Open Inference Protocol v2 over REST, as Triton, KServe, Seldon MLServer and OpenVINO Model Server
speak it and `tritonclient` calls it, over the native routes' calls.

Texts travel as BYTES tensors, in JSON (`data`: strings) or in the binary tensor extension (the JSON header's
length in `Inference-Header-Content-Length`, then each element as a 4-byte little-endian length and its UTF-8
bytes), which tritonclient uses by default; outputs come back in binary when the request asks for it. Per task:

- embedding: `text` BYTES [n] -> `embedding` FP32 [n, dim]; parameters `truncate`, `dimensions`;
- classifier: `text` BYTES [n] -> `label` BYTES [n], `score` FP32 [n];
- reranker: `query` BYTES [1] and `documents` BYTES [n] -> `score` FP32 [n] and `index` INT64 [n], in document
  order, or the best `top_n` first when that parameter is set.

Model names are TorchServe's (gateway/routes/torchserve.py): served ids, their last path part, routing-file
aliases; `/versions/{version}` pins a version of an alias. Errors are `{"error": message}` with the native status.
"""

import math
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from fastapi import APIRouter, Request
from pydantic import BaseModel
from starlette.convertors import Convertor, register_url_convertor
from starlette.responses import Response

from gateway.contract import clip
from gateway.dependencies import account, model_pool
from gateway.errors import ApiError
from gateway.responses import JSONResponse
from gateway.routes.classify import classify_texts
from gateway.routes.embeddings import embed
from gateway.routes.rerank import rank
from gateway.routes.torchserve import task_of, valid_text
from torchgate import __version__


class ModelName(Convertor):
    """A model name or version in a path: anything, slashes and line breaks included (`:path` stops at a line
    break, which would make such a name a bare 404 instead of this protocol's)."""

    regex = "(?s:.*)"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("model_name", ModelName())
router = APIRouter(prefix="/v2")

# Inference bodies may be binary (the tensor extension); the edge lets any media type through here.
RAW_BODY_PREFIX = "/v2/models/"
BINARY_HEADER = "inference-header-content-length"


class OpenInferenceError(BaseModel):
    """The protocol's error shape."""

    error: str


_ERRORS = {400: "A tensor of the wrong name, datatype or shape, non-UTF-8 BYTES, an empty tensor, a bad parameter.",
           401: "Missing or invalid credentials.", 403: "The tenant may not use this model.",
           404: "No such model or version.", 413: "Request too large.",
           422: "More inputs or longer texts than the model accepts.", 429: "Over a limit: see Retry-After.",
           503: "The model's workers are unavailable: see Retry-After.", 504: "The deadline passed."}


def _documented(*statuses: int) -> dict:
    return {status: {"model": OpenInferenceError, "description": _ERRORS[status]} for status in statuses}


@dataclass(frozen=True)
class Tensor:
    name: str
    datatype: str
    shape: tuple[int, ...]


# What each task takes and gives (-1: any size); a model's metadata.
SIGNATURES: dict[str, tuple[tuple[Tensor, ...], tuple[Tensor, ...]]] = {
    "embedding": ((Tensor("text", "BYTES", (-1,)),), (Tensor("embedding", "FP32", (-1, -1)),)),
    "classifier": ((Tensor("text", "BYTES", (-1,)),),
                   (Tensor("label", "BYTES", (-1,)), Tensor("score", "FP32", (-1,)))),
    "reranking": ((Tensor("query", "BYTES", (1,)), Tensor("documents", "BYTES", (-1,))),
                  (Tensor("score", "FP32", (-1,)), Tensor("index", "INT64", (-1,)))),
}
# Our options, as request parameters, and their JSON types.
PARAMETERS = {"embedding": {"truncate": bool, "dimensions": int}, "classifier": {},
              "reranking": {"top_n": int}}
_NUMPY_TYPES = {"FP32": "<f4", "INT64": "<i8"}


def protocol_error(error: ApiError) -> JSONResponse:
    """An error in the protocol's shape."""
    return JSONResponse({"error": error.message}, status_code=error.status, headers=error.response_headers() or None)


# Where the edge's own refusals (401, 413, 429...) take this protocol's shape.
ERROR_SHAPES = ((RAW_BODY_PREFIX, protocol_error),)


def _bad(message: str) -> ApiError:
    return ApiError(400, "invalid_request_error", message)


def _model_name(model: str, version: str | None) -> str:
    return f"{model}@{version}" if version else model


@router.get("", response_class=JSONResponse)
async def server_metadata():
    """Server metadata."""
    return JSONResponse({"name": "torchgate", "version": __version__, "extensions": ["binary_tensor_data"]})


@router.get("/health/live", response_class=JSONResponse)
async def live():
    """Live while the gateway answers."""
    return JSONResponse({"live": True})


@router.get("/health/ready", response_class=JSONResponse, responses=_documented(503))
async def ready(request: Request):
    """Ready while every model pool has a replica that reports SERVING."""
    serving = all(pool.serving for pools in request.app.state.pools.values() for pool in pools.pools)
    return JSONResponse({"ready": serving}, status_code=200 if serving else 503)


async def _metadata(request: Request, model: str, version: str | None) -> Response:
    try:
        name = _model_name(model, version)
        task = task_of(request, name)
        client, routed = model_pool(request, task, name)
    except ApiError as error:
        return protocol_error(error)
    inputs, outputs = SIGNATURES[task]
    dimension = client.limits.dimension if client.limits else -1

    def described(tensor: Tensor) -> dict:
        shape = [dimension if size == -1 and index == 1 and task == "embedding" else size
                 for index, size in enumerate(tensor.shape)]
        return {"name": tensor.name, "datatype": tensor.datatype, "shape": shape}

    routing = request.app.state.routing()
    alias = routing.aliases.get(model)
    versions = [entry.model for entry in alias.versions] if alias else [routed or model]
    return JSONResponse({"name": model, "versions": versions, "platform": f"torchgate_{task}",
                         "inputs": [described(t) for t in inputs], "outputs": [described(t) for t in outputs],
                         "parameters": {name: kind.__name__ for name, kind in PARAMETERS[task].items()}})


async def _ready(request: Request, model: str, version: str | None) -> Response:
    try:
        name = _model_name(model, version)
        client, _ = model_pool(request, task_of(request, name), name)
    except ApiError as error:
        return protocol_error(error)
    return JSONResponse({"name": model, "ready": client.serving}, status_code=200 if client.serving else 503)


@dataclass
class InferRequest:
    id: str | None
    inputs: dict[str, list[str]]
    parameters: dict[str, Any]
    outputs: list[str] | None      # requested output names, None: all
    binary_outputs: set[str]       # outputs to return in the binary extension


def _json_header(body: bytes, header_length: str | None) -> tuple[dict, bytes]:
    if header_length is None:
        header, binary = body, b""
    else:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise _bad(f"Inference-Header-Content-Length {clip(header_length)!r} is not a length within the body")
        header, binary = body[:int(header_length)], body[int(header_length):]
    try:
        document = orjson.loads(header)
    except orjson.JSONDecodeError as error:
        raise _bad(f"the inference request is not valid JSON ({error})") from None
    if not isinstance(document, dict) or not isinstance(document.get("inputs"), list):
        raise _bad("the inference request must be a JSON object with an `inputs` list")
    return document, binary


def _flat(data: Any) -> list:
    """The elements of a (nested) JSON list in row-major order; iterative, so no nesting depth can crash it."""
    elements, stack = [], [iter([data])]
    while stack:
        element = next(stack[-1], _END)
        if element is _END:
            stack.pop()
        elif isinstance(element, list):
            stack.append(iter(element))
        else:
            elements.append(element)
    return elements


_END = object()


def _binary_elements(raw: bytes, name: str) -> list[bytes]:
    """BYTES elements of the binary extension: each a 4-byte little-endian length, then its bytes."""
    elements, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise _bad(f"input {name!r}: binary BYTES data ends inside an element's length")
        (size,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + size > len(raw):
            raise _bad(f"input {name!r}: a binary BYTES element runs past binary_data_size")
        elements.append(raw[offset:offset + size])
        offset += size
    return elements


def _texts(entry: Any, binary: memoryview, offset: int) -> tuple[str, list[str], int]:
    """One input tensor's name and texts, and where the next input's binary data starts."""
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise _bad("every input must be an object with a `name`")
    name, datatype, shape = entry["name"], entry.get("datatype"), entry.get("shape")
    if datatype != "BYTES":
        raise _bad(f"input {clip(name)!r} has datatype {clip(str(datatype))!r}: texts are BYTES tensors")
    if not isinstance(shape, list) or not all(type(size) is int and size >= 0 for size in shape):
        raise _bad(f"input {clip(name)!r}: `shape` must be a list of non-negative integers")
    parameters = entry.get("parameters") or {}
    size = parameters.get("binary_data_size") if isinstance(parameters, dict) else None
    if size is not None:
        if not isinstance(size, int) or size < 0 or offset + size > len(binary):
            raise _bad(f"input {clip(name)!r}: binary_data_size {size!r} runs past the body")
        raw = _binary_elements(bytes(binary[offset:offset + size]), name)
        offset += size
    elif "data" in entry:
        raw = _flat(entry["data"])
        if not all(isinstance(item, str) for item in raw):
            raise _bad(f"input {clip(name)!r}: BYTES data in JSON must be strings")
    else:
        raise _bad(f"input {clip(name)!r} has neither `data` nor binary_data_size")
    count = math.prod(shape)
    if count != len(raw):
        raise _bad(f"input {clip(name)!r}: shape {shape} holds {count} elements but {len(raw)} were sent")
    if not raw:
        raise _bad(f"input {clip(name)!r} is empty: send at least one text")
    texts = []
    for index, item in enumerate(raw):
        if isinstance(item, bytes):
            try:
                item = item.decode("utf-8")
            except UnicodeDecodeError:
                raise _bad(f"input {clip(name)!r}[{index}] is not UTF-8") from None
        if not item.strip():
            raise _bad(f"input {clip(name)!r}[{index}] is blank: send a text")
        texts.append(valid_text(item))
    return name, texts, offset


def _outputs(document: dict) -> tuple[list[str] | None, set[str]]:
    parameters = document.get("parameters") or {}
    binary_default = bool(isinstance(parameters, dict) and parameters.get("binary_data_output"))
    requested = document.get("outputs")
    if requested is None:
        return None, {"*"} if binary_default else set()
    if not isinstance(requested, list) or not all(
            isinstance(o, dict) and isinstance(o.get("name"), str) and isinstance(o.get("parameters") or {}, dict)
            for o in requested):
        raise _bad("`outputs` must be a list of objects with a `name` (and optional `parameters`)")
    binary = {o["name"] for o in requested
              if (o.get("parameters") or {}).get("binary_data", binary_default)}
    return [o["name"] for o in requested], binary


def parse(body: bytes, header_length: str | None) -> InferRequest:
    document, binary = _json_header(body, header_length)
    view, offset, inputs = memoryview(binary), 0, {}
    for entry in document["inputs"]:
        name, texts, offset = _texts(entry, view, offset)
        if name in inputs:
            raise _bad(f"input {clip(name)!r} is given twice")
        inputs[name] = texts
    if offset != len(binary):
        raise _bad(f"{len(binary) - offset} bytes of binary data belong to no input")
    parameters = document.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise _bad("`parameters` must be an object")
    request_id = document.get("id")
    outputs, binary_outputs = _outputs(document)
    return InferRequest(str(request_id) if request_id is not None else None, inputs, parameters, outputs,
                        binary_outputs)


def _options(task: str, parameters: dict) -> dict:
    """Our options from the request parameters (others, such as Triton's, are not ours and pass unread)."""
    options = {}
    for name, kind in PARAMETERS[task].items():
        if name not in parameters:
            continue
        value = parameters[name]
        if not isinstance(value, kind) or (kind is int and (isinstance(value, bool) or value < 1)):
            raise _bad(f"parameter {name!r} must be {'true or false' if kind is bool else 'a positive integer'}")
        options[name] = value
    return options


def _single_text_input(inputs: dict[str, list[str]]) -> list[str]:
    """The texts of the one input (named `text` in the metadata; clients name it as they like)."""
    if len(inputs) == 1:
        return next(iter(inputs.values()))
    raise _bad(f"send one BYTES input `text`; got {', '.join(map(repr, inputs))}")


async def _compute(request: Request, name: str, task: str, call: InferRequest) -> tuple[str, dict[str, np.ndarray]]:
    """The routed model's name and the outputs, by name."""
    client, routed = model_pool(request, task, name)
    options = _options(task, call.parameters)
    if task == "embedding":
        texts = _single_text_input(call.inputs)
        embedded = await embed(request, client, texts, model=routed, truncate=options.get("truncate", True),
                               dimensions=options.get("dimensions"), timeout=None, field="text")
        account(request, embedded.model, embedded.tokens)
        return embedded.model, {"embedding": np.asarray(embedded.vectors, dtype="<f4").reshape(len(texts), -1)}
    if task == "reranking":
        if set(call.inputs) != {"query", "documents"} or len(call.inputs["query"]) != 1:
            raise _bad("a reranker takes two BYTES inputs: `query` (one text) and `documents`")
        documents = call.inputs["documents"]
        top_n = options.get("top_n")
        ranked = await rank(request, client, call.inputs["query"][0], documents, model=routed, top_n=top_n)
        account(request, ranked.model, ranked.tokens)
        results = ranked.results if top_n else sorted(ranked.results)
        return ranked.model, {"score": np.array([score for _, score in results], dtype="<f4"),
                              "index": np.array([index for index, _ in results], dtype="<i8")}
    reply, _ = await classify_texts(request, _single_text_input(call.inputs), "text", top_k=1, model=routed or "",
                                    force_intent=True)
    return reply.model, {"label": np.array([result.intent for result in reply.results], dtype=object),
                         "score": np.array([result.confidence for result in reply.results], dtype="<f4")}


def _respond(model: str, version: str | None, call: InferRequest, outputs: dict[str, np.ndarray]) -> Response:
    """The outputs asked for (all by default), each in JSON or, where asked, in the binary extension."""
    described, chunks = [], []
    for name in call.outputs if call.outputs is not None else list(outputs):
        array = outputs[name]
        entry = {"name": name, "datatype": "BYTES" if array.dtype == object else
                 next(k for k, v in _NUMPY_TYPES.items() if np.dtype(v) == array.dtype), "shape": list(array.shape)}
        if name in call.binary_outputs or "*" in call.binary_outputs:
            raw = (b"".join(struct.pack("<I", len(encoded)) + encoded
                            for encoded in (str(item).encode() for item in array.ravel()))
                   if array.dtype == object else array.tobytes())
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = [str(item) for item in array.ravel()] if array.dtype == object else array.ravel().tolist()
        described.append(entry)
    reply = {"model_name": model, **({"model_version": version} if version else {}),
             **({"id": call.id} if call.id is not None else {}), "outputs": described}
    header = orjson.dumps(reply)
    if not chunks:
        return Response(header, media_type="application/json")
    return Response(header + b"".join(chunks), media_type="application/octet-stream",
                    headers={"Inference-Header-Content-Length": str(len(header))})


async def _infer(request: Request, model: str, version: str | None) -> Response:
    try:
        name = _model_name(model, version)
        task = task_of(request, name)  # an unknown model is a 404 whatever the body
        call = parse(await request.body(), request.headers.get(BINARY_HEADER))
        given = [tensor.name for tensor in SIGNATURES[task][1]]
        unknown = [output for output in call.outputs or () if output not in given]
        if unknown:
            raise _bad(f"no output {clip(unknown[0])!r}: this model gives {', '.join(map(repr, given))}")
        computed_by, outputs = await _compute(request, name, task, call)
        aliased = name.partition("@")[0] in request.app.state.routing().aliases
        return _respond(model, computed_by if aliased else None, call, outputs)
    except ApiError as error:
        return protocol_error(error)


# Model names hold slashes (`sentence-transformers/all-MiniLM-L6-v2`), so they match as paths; the more specific
# routes come first, since a path parameter also matches their suffixes (and an OPTIONS request is answered
# with the methods of the first route whose path matches).
@router.post("/models/{model:model_name}/versions/{version:model_name}/infer", responses=_documented(*_ERRORS))
async def version_infer(model: str, version: str, request: Request) -> Response:
    """Inference on a version of an alias (`version`: one of its models)."""
    return await _infer(request, model, version)


@router.post("/models/{model:model_name}/infer", responses=_documented(*_ERRORS))
async def infer(model: str, request: Request) -> Response:
    """Inference: BYTES tensors in, the task's outputs back (JSON, or the binary extension when asked)."""
    return await _infer(request, model, None)


@router.get("/models/{model:model_name}/versions/{version:model_name}/ready", response_class=JSONResponse,
            responses=_documented(401, 403, 404, 503))
async def version_ready(model: str, version: str, request: Request) -> Response:
    """Ready while the version's pool has a replica that reports SERVING."""
    return await _ready(request, model, version)


@router.get("/models/{model:model_name}/ready", response_class=JSONResponse, responses=_documented(401, 403, 404, 503))
async def model_ready(model: str, request: Request) -> Response:
    """Ready while the model's pool has a replica that reports SERVING."""
    return await _ready(request, model, None)


@router.get("/models/{model:model_name}/versions/{version:model_name}", response_class=JSONResponse,
            responses=_documented(400, 401, 403, 404))
async def version_metadata(model: str, version: str, request: Request) -> Response:
    """A version's metadata (`version`: a model of the alias `model`)."""
    return await _metadata(request, model, version)


@router.get("/models/{model:model_name}", response_class=JSONResponse, responses=_documented(400, 401, 403, 404))
async def model_metadata(model: str, request: Request) -> Response:
    """A model's inputs and outputs: names, datatypes, shapes (-1: any size); its versions."""
    return await _metadata(request, model, None)
