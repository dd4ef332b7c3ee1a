"""API errors, the gRPC-status to HTTP mapping, and the handlers that render every error the same way."""

import logging
import math

import grpc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from gateway.responses import JSONResponse

log = logging.getLogger(__name__)

# Branch names of the contract's tagged unions (gateway/contract.py): left out of error paths, which name fields.
AS_TEXTS, AS_TOKEN_IDS = "as texts", "as token ids"
UNION_TAGS = frozenset({AS_TEXTS, AS_TOKEN_IDS})


class ApiError(Exception):
    """An error the client may see: HTTP status, error type, message, optional Retry-After."""

    def __init__(self, status: int, type_: str, message: str, upstream: str | None = None,
                 retry_after: float | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.type, self.message, self.upstream = status, type_, message, upstream
        self.retry_after = retry_after
        self.headers = headers or {}

    def response(self, headers: dict[str, str] | None = None) -> JSONResponse:
        body = {"type": self.type, "message": self.message[:MAX_MESSAGE_CHARS]}
        if self.upstream:
            body["upstream"] = self.upstream
        return JSONResponse({"error": body}, status_code=self.status,
                            headers={**self.response_headers(), **(headers or {})} or None)

    def response_headers(self) -> dict[str, str]:
        """What every shape of this error carries: Retry-After and the error's own headers (rate limits)."""
        headers = dict(self.headers)
        if self.retry_after:
            headers["Retry-After"] = str(max(1, math.ceil(self.retry_after)))
        return headers


MAX_MESSAGE_CHARS = 1024


class ErrorDetail(BaseModel):
    type: str
    message: str
    upstream: str | None = None


class ErrorResponse(BaseModel):
    """The one shape of every error the gateway returns."""

    error: ErrorDetail


_ERROR_MEANINGS = {
    400: "Invalid request: the message says what to fix.",
    401: "Missing or invalid API key.",
    404: "No such route, model or device.",
    413: "Request body or batch too large.",
    415: "The body is not JSON.",
    422: "The body does not match the schema or the worker's limits.",
    429: "Overloaded: retry after Retry-After seconds.",
    502: "The worker failed to process the request.",
    503: "The worker is unavailable or its circuit breaker is open: retry after Retry-After seconds.",
    504: "The request's deadline passed.",
}


def documented_errors(*statuses: int) -> dict[int | str, dict]:
    """OpenAPI `responses` for the given error statuses, all in the ErrorResponse shape."""
    return {status: {"model": ErrorResponse, "description": _ERROR_MEANINGS[status]} for status in statuses}


# What any model route may answer besides 200.
MODEL_ROUTE_ERRORS = documented_errors(400, 401, 404, 413, 415, 422, 429, 502, 503, 504)


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


# Pydantic's wording where it would not tell a client what to fix.
_FRIENDLIER = {
    "string_pattern_mismatch": "must contain a non-whitespace character",
    "string_unicode": "invalid Unicode (a lone UTF-16 surrogate): send valid text",
}


def invalid_body(errors: list[dict]) -> ApiError:
    """422 naming each field of the body that does not match the schema (the first ten), with what to fix."""
    problems = "; ".join(
        f"{'.'.join(str(part) for part in e['loc'] if part != 'body' and part not in UNION_TAGS) or 'body'}: "
        f"{_FRIENDLIER.get(e['type'], e['msg'])}"
        for e in errors[:10]
    )
    return ApiError(422, "invalid_request_error", problems)


def error_response(request: Request, error: Exception) -> JSONResponse:
    """Every error leaves as {"error": {"type", "message", "upstream"?}}; never a stack trace."""
    if isinstance(error, ApiError):
        return error.response()
    if isinstance(error, RequestValidationError):
        return invalid_body(error.errors()).response()
    if isinstance(error, HTTPException):
        return ApiError(error.status_code, "http_error", str(error.detail)).response(error.headers)
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=error)
    return ApiError(500, "internal_error", "internal error").response()


def install_error_handlers(app: FastAPI) -> None:
    """Render the errors of the routes FastAPI runs with error_response."""

    async def handle(request: Request, error: Exception) -> JSONResponse:
        return error_response(request, error)

    for kind in (ApiError, RequestValidationError, HTTPException, Exception):
        app.add_exception_handler(kind, handle)
