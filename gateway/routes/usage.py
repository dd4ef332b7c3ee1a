"""GET /v1/usage: the calling tenant's own counters and limits."""

from fastapi import APIRouter, Request

from gateway.errors import documented_errors
from gateway.responses import JSONResponse

router = APIRouter(responses=documented_errors(401, 429))


@router.get("/v1/usage", response_class=JSONResponse)
async def read_usage(request: Request):
    """Requests, inputs, tokens and refusals counted for the caller's tenant (all gateways' when they share
    Redis), its limits, and its tokens today when it has a daily quota."""
    gate = request.app.state.tenants
    return JSONResponse(await gate.usage(request.state.tenant))
