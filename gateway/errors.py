"""API errors, the gRPC-status to HTTP mapping, and the handlers that render every error the same way."""

import logging
import math

import grpc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from gateway.responses import JSONResponse

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error the client may see: HTTP status, error type, message, optional Retry-After."""

    def __init__(self, status: int, type_: str, message: str, upstream: str | None = None,
                 retry_after: float | None = None):
        super().__init__(message)
        self.status, self.type, self.message, self.upstream = status, type_, message, upstream
        self.retry_after = retry_after

    def response(self) -> JSONResponse:
        body = {"type": self.type, "message": self.message}
        if self.upstream:
            body["upstream"] = self.upstream
        headers = {"Retry-After": str(max(1, math.ceil(self.retry_after)))} if self.retry_after else None
        return JSONResponse({"error": body}, status_code=self.status, headers=headers)


# Status codes whose message the worker wrote for the caller; the others are replaced by a generic one.
_CLIENT_ERRORS = {
    grpc.StatusCode.INVALID_ARGUMENT: (400, "invalid_request_error"),
    grpc.StatusCode.OUT_OF_RANGE: (400, "invalid_request_error"),
    grpc.StatusCode.FAILED_PRECONDITION: (400, "invalid_request_error"),
    grpc.StatusCode.NOT_FOUND: (404, "not_found_error"),
}


def error_from_grpc(code: grpc.StatusCode, details: str | None, upstream: str) -> ApiError:
    """Map an upstream gRPC status to the HTTP error of ARCHITECTURE.md §5, never leaking internals."""
    if code in _CLIENT_ERRORS:
        status, type_ = _CLIENT_ERRORS[code]
        return ApiError(status, type_, details or "invalid request", upstream)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return ApiError(429, "overloaded", f"the {upstream} service is overloaded; retry later", upstream, 1)
    if code == grpc.StatusCode.UNAVAILABLE:
        return ApiError(503, "upstream_unavailable", f"the {upstream} service is unavailable; retry later",
                        upstream, 1)
    if code in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED):
        return ApiError(504, "timeout", f"the {upstream} service did not answer within the deadline", upstream)
    return ApiError(502, "upstream_error", f"the {upstream} service failed to process the request", upstream)


def install_error_handlers(app: FastAPI) -> None:
    """Every error leaves as {"error": {"type", "message", "upstream"?}}; never a stack trace."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError):
        return error.response()

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError):
        problems = "; ".join(
            f"{'.'.join(str(part) for part in e['loc'] if part != 'body') or 'body'}: {e['msg']}"
            for e in error.errors()
        )
        return ApiError(422, "invalid_request_error", problems).response()

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException):
        return ApiError(error.status_code, "http_error", str(error.detail)).response()

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception):
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return ApiError(500, "internal_error", "internal error").response()
