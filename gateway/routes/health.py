"""Liveness, readiness (per upstream) and Prometheus metrics."""

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.responses import PlainTextResponse

from gateway.metrics import exposition
from gateway.readiness import readiness
from gateway.responses import JSONResponse

router = APIRouter()


@router.get("/health/live", response_class=JSONResponse)
async def live():
    return JSONResponse({"status": "live"})


@router.get("/health/ready", response_class=JSONResponse,
            responses={503: {"description": "Some upstream is not SERVING; the body has each one's details."}})
async def ready(request: Request):
    """200 when every configured upstream is SERVING, else 503; always with each upstream's details."""
    is_ready, details = await readiness(request, request.app.state.upstreams.values())
    return JSONResponse(
        {"status": "ready" if is_ready else "not_ready", "upstreams": details},
        status_code=200 if is_ready else 503,
        headers=None if is_ready else {"Retry-After": "1"},
    )


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics():
    return PlainTextResponse(exposition(), media_type=CONTENT_TYPE_LATEST)
