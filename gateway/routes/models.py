"""GET /v1/models: what every reachable model worker serves."""

import asyncio

from fastapi import APIRouter, Request

from gateway.errors import ApiError, documented_errors
from gateway.responses import JSONResponse
from gateway.tasks.catalog import MODEL_TASKS
from torchgate.v1 import common_pb2

router = APIRouter(responses=documented_errors(400, 401, 429, 502, 503, 504))


@router.get("/v1/models", response_class=JSONResponse)
async def list_models(request: Request):
    """Every model the reachable pools serve, default models first."""
    pools = [(task, pool) for task, registry in request.app.state.pools.items() for pool in registry.pools]
    infos = await asyncio.gather(*(pool.call("Info", common_pb2.InfoRequest(), timeout=2.0) for _, pool in pools),
                                 return_exceptions=True)
    data = [
        {
            "id": info.model_id, "object": "model", "created": 0, "owned_by": "torchgate",
            "task": MODEL_TASKS[task].name, "upstream": pool.name, "device": info.device, "dtype": info.dtype,
            "dtype_reason": info.dtype_reason or None, "backend": info.backend or None,
            "backend_reason": info.backend_reason or None,
            "max_input_tokens": info.max_input_tokens, "dimension": info.dimension or None,
            "labels": list(info.labels) or None, "prompts": dict(info.prompts) or None,
            "fallback": info.fallback_reason or None, "stands_in_for": info.stands_in_for or None,
            "fingerprint": info.fingerprint or None,
        }
        for (task, pool), info in zip(pools, infos, strict=True)
        if not isinstance(info, BaseException)
    ]
    unexpected = [info for info in infos if isinstance(info, BaseException) and not isinstance(info, ApiError)]
    if unexpected:
        raise unexpected[0]
    return JSONResponse({"object": "list", "data": data})
