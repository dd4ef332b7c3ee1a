"""KServe's Open Inference Protocol v2 over REST, as Triton, KServe, Seldon MLServer and OpenVINO Model Server
speak it and `tritonclient` calls it: translations to the tasks.

Texts travel as BYTES tensors (gateway/tensors.py decodes and encodes them). Per task:

- embedding: `text` BYTES [n] -> `embedding` FP32 [n, dim]; parameters `truncate`, `dimensions`;
- classifier: `text` BYTES [n] -> `label` BYTES [n], `score` FP32 [n];
- reranker: `query` BYTES [1] and `documents` BYTES [n] -> `score` FP32 [n] and `index` INT64 [n], in document
  order, or the best `top_n` first when that parameter is set.

Model names follow the registry's rule (gateway/registry.py): served ids, short names, routing-file aliases;
`/versions/{version}` pins a version of an alias. Errors are `{"error": message}` (gateway/errors.py).
"""

from dataclasses import dataclass

import numpy as np
from fastapi import APIRouter, Request
from starlette.responses import Response

from gateway import pipeline
from gateway.contract import clip
from gateway.errors import KSERVE
from gateway.readiness import model_pools, readiness
from gateway.responses import JSONResponse
from gateway.rollout import PIN_SEPARATOR
from gateway.routes import model_paths  # noqa: F401 - registers the `model_name` path convertor used below
from gateway.tasks.classify import CLASSIFY, ClassifyCall
from gateway.tasks.embed import EMBED, EmbedCall
from gateway.tasks.rerank import RERANK, RerankCall
from gateway.tensors import InferRequest, bad, decode, encode
from torchgate import __version__

router = APIRouter(prefix="/v2")

# Inference bodies may be binary (the tensor extension); the edge lets any media type through here.
RAW_BODY_PREFIX = "/v2/models/"
BINARY_HEADER = "inference-header-content-length"
INFER_ERRORS = (400, 401, 403, 404, 413, 422, 429, 503, 504)


@dataclass(frozen=True)
class Tensor:
    name: str
    datatype: str
    shape: tuple[int, ...]


# What each task takes and gives (-1: any size); a model's metadata.
SIGNATURES: dict[str, tuple[tuple[Tensor, ...], tuple[Tensor, ...]]] = {
    EMBED.upstream: ((Tensor("text", "BYTES", (-1,)),), (Tensor("embedding", "FP32", (-1, -1)),)),
    CLASSIFY.upstream: ((Tensor("text", "BYTES", (-1,)),),
                        (Tensor("label", "BYTES", (-1,)), Tensor("score", "FP32", (-1,)))),
    RERANK.upstream: ((Tensor("query", "BYTES", (1,)), Tensor("documents", "BYTES", (-1,))),
                      (Tensor("score", "FP32", (-1,)), Tensor("index", "INT64", (-1,)))),
}
# Our options, as request parameters, and their JSON types.
PARAMETERS = {EMBED.upstream: {"truncate": bool, "dimensions": int}, CLASSIFY.upstream: {},
              RERANK.upstream: {"top_n": int}}


def _model_name(model: str, version: str | None) -> str:
    return f"{model}{PIN_SEPARATOR}{version}" if version else model


@router.get("", response_class=JSONResponse)
async def server_metadata():
    """Server metadata."""
    return JSONResponse({"name": "torchgate", "version": __version__, "extensions": ["binary_tensor_data"]})


@router.get("/health/live", response_class=JSONResponse)
async def live():
    """Live while the gateway answers."""
    return JSONResponse({"live": True})


@router.get("/health/ready", response_class=JSONResponse, responses=KSERVE.documented(503))
async def ready(request: Request):
    """Ready while every model pool has a replica that reports SERVING."""
    serving, _ = await readiness(request, model_pools(request))
    return JSONResponse({"ready": serving}, status_code=200 if serving else 503)


async def _metadata(request: Request, model: str, version: str | None) -> Response:
    name = _model_name(model, version)
    task = pipeline.model_task(request, name)
    client, routed = pipeline.route(request, task, name)
    inputs, outputs = SIGNATURES[task]
    dimension = client.limits.dimension if client.limits else -1

    def described(tensor: Tensor) -> dict:
        shape = [dimension if size == -1 and index == 1 and task == EMBED.upstream else size
                 for index, size in enumerate(tensor.shape)]
        return {"name": tensor.name, "datatype": tensor.datatype, "shape": shape}

    alias = request.app.state.routing().aliases.get(model)
    versions = [entry.model for entry in alias.versions] if alias else [routed or model]
    return JSONResponse({"name": model, "versions": versions, "platform": f"torchgate_{task}",
                         "inputs": [described(t) for t in inputs], "outputs": [described(t) for t in outputs],
                         "parameters": {name: kind.__name__ for name, kind in PARAMETERS[task].items()}})


async def _ready(request: Request, model: str, version: str | None) -> Response:
    name = _model_name(model, version)
    client, _ = pipeline.route(request, pipeline.model_task(request, name), name)
    serving, _ = await readiness(request, [client])
    return JSONResponse({"name": model, "ready": serving}, status_code=200 if serving else 503)


def _options(task: str, parameters: dict) -> dict:
    """Our options from the request parameters (others, such as Triton's, are not ours and pass unread)."""
    options = {}
    for name, kind in PARAMETERS[task].items():
        if name not in parameters:
            continue
        value = parameters[name]
        if not isinstance(value, kind) or (kind is int and (isinstance(value, bool) or value < 1)):
            raise bad(f"parameter {name!r} must be {'true or false' if kind is bool else 'a positive integer'}")
        options[name] = value
    return options


def _single_text_input(inputs: dict[str, list[str]]) -> list[str]:
    """The texts of the one input (named `text` in the metadata; clients name it as they like)."""
    if len(inputs) == 1:
        return next(iter(inputs.values()))
    raise bad(f"send one BYTES input `text`; got {', '.join(map(repr, inputs))}")


async def _compute(request: Request, name: str, task: str, call: InferRequest) -> tuple[str, dict[str, np.ndarray]]:
    """The model that computed, and the outputs by name."""
    options = _options(task, call.parameters)
    if task == EMBED.upstream:
        texts = _single_text_input(call.inputs)
        embedded = await pipeline.run(request, EMBED, EmbedCall(
            inputs=texts, model=name, truncate=options.get("truncate", True), dimensions=options.get("dimensions"),
            field="text"))
        return embedded.model, {"embedding": np.asarray(embedded.vectors, dtype="<f4").reshape(len(texts), -1)}
    if task == RERANK.upstream:
        if set(call.inputs) != {"query", "documents"} or len(call.inputs["query"]) != 1:
            raise bad("a reranker takes two BYTES inputs: `query` (one text) and `documents`")
        top_n = options.get("top_n")
        ranked = await pipeline.run(request, RERANK, RerankCall(query=call.inputs["query"][0],
                                                                documents=call.inputs["documents"], model=name,
                                                                top_n=top_n))
        results = ranked.results if top_n else sorted(ranked.results)
        return ranked.model, {"score": np.array([score for _, score in results], dtype="<f4"),
                              "index": np.array([index for index, _ in results], dtype="<i8")}
    classified = await pipeline.run(request, CLASSIFY, ClassifyCall(
        texts=_single_text_input(call.inputs), field="text", model=name, top_k=1, force_intent=True))
    return classified.model, {"label": np.array([result.intent for result in classified.results], dtype=object),
                              "score": np.array([result.confidence for result in classified.results], dtype="<f4")}


async def _infer(request: Request, model: str, version: str | None) -> Response:
    name = _model_name(model, version)
    task = pipeline.model_task(request, name)  # an unknown model is a 404 whatever the body
    call = decode(await request.body(), request.headers.get(BINARY_HEADER))
    given = [tensor.name for tensor in SIGNATURES[task][1]]
    unknown = [output for output in call.outputs or () if output not in given]
    if unknown:
        raise bad(f"no output {clip(unknown[0])!r}: this model gives {', '.join(map(repr, given))}")
    computed_by, outputs = await _compute(request, name, task, call)
    aliased = name.partition(PIN_SEPARATOR)[0] in request.app.state.routing().aliases
    return encode(model, computed_by if aliased else None, call, outputs)


# Model names hold slashes (`sentence-transformers/all-MiniLM-L6-v2`), so they match as paths; the more specific
# routes come first, since a path parameter also matches their suffixes (and an OPTIONS request is answered
# with the methods of the first route whose path matches).
@router.post("/models/{model:model_name}/versions/{version:model_name}/infer",
             responses=KSERVE.documented(*INFER_ERRORS))
async def version_infer(model: str, version: str, request: Request) -> Response:
    """Inference on a version of an alias (`version`: one of its models)."""
    return await _infer(request, model, version)


@router.post("/models/{model:model_name}/infer", responses=KSERVE.documented(*INFER_ERRORS))
async def infer(model: str, request: Request) -> Response:
    """Inference: BYTES tensors in, the task's outputs back (JSON, or the binary extension when asked)."""
    return await _infer(request, model, None)


@router.get("/models/{model:model_name}/versions/{version:model_name}/ready", response_class=JSONResponse,
            responses=KSERVE.documented(401, 403, 404, 503))
async def version_ready(model: str, version: str, request: Request) -> Response:
    """Ready while the version's pool has a replica that reports SERVING."""
    return await _ready(request, model, version)


@router.get("/models/{model:model_name}/ready", response_class=JSONResponse,
            responses=KSERVE.documented(401, 403, 404, 503))
async def model_ready(model: str, request: Request) -> Response:
    """Ready while the model's pool has a replica that reports SERVING."""
    return await _ready(request, model, None)


@router.get("/models/{model:model_name}/versions/{version:model_name}", response_class=JSONResponse,
            responses=KSERVE.documented(400, 401, 403, 404))
async def version_metadata(model: str, version: str, request: Request) -> Response:
    """A version's metadata (`version`: a model of the alias `model`)."""
    return await _metadata(request, model, version)


@router.get("/models/{model:model_name}", response_class=JSONResponse,
            responses=KSERVE.documented(400, 401, 403, 404))
async def model_metadata(model: str, request: Request) -> Response:
    """A model's inputs and outputs: names, datatypes, shapes (-1: any size); its versions."""
    return await _metadata(request, model, None)
