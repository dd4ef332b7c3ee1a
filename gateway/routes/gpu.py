"""GET /v1/gpu/status, /v1/gpu/devices, /v1/gpu/devices/{index}."""

from fastapi import APIRouter, Path, Request
from google.protobuf.json_format import MessageToDict

from gateway.contract import UINT32_MAX
from gateway.errors import documented_errors
from gateway.pipeline import request_timeout, upstream
from gateway.responses import JSONResponse
from torchgate.v1 import gpu_pb2

router = APIRouter(responses=documented_errors(400, 401, 404, 422, 429, 502, 503, 504))


def _json(message) -> dict:
    return MessageToDict(message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)


async def _call(request: Request, method: str, message):
    client = upstream(request, "gpu")
    return await client.call(method, message, request_timeout(request, client))


@router.get("/v1/gpu/status", response_class=JSONResponse)
async def status(request: Request):
    return JSONResponse(_json(await _call(request, "GetStatus", gpu_pb2.GetStatusRequest())))


@router.get("/v1/gpu/devices", response_class=JSONResponse)
async def devices(request: Request):
    return JSONResponse(_json(await _call(request, "ListDevices", gpu_pb2.ListDevicesRequest())))


@router.get("/v1/gpu/devices/{index}", response_class=JSONResponse)
async def device(request: Request, index: int = Path(ge=0, le=UINT32_MAX)):
    return JSONResponse(_json(await _call(request, "GetDevice", gpu_pb2.GetDeviceRequest(index=index))))
