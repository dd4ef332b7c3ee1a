"""One internal error, the gRPC-status to HTTP mapping, and the one table every protocol renders errors from.

Every refusal and failure is an `ApiError` (status, reason, message, upstream, Retry-After). How it looks on the
wire depends only on the protocol of the path it answers (`shape_of`): ours, TorchServe's or KServe's (which
the Open Inference Protocol shares), so the edge, the routes and FastAPI's handlers render it the same way.
"""

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

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
MAX_MESSAGE_CHARS = 1024


class ApiError(Exception):
    """An error the client may see: HTTP status, reason (`type`), message, optional Retry-After.

    `shared` says the error is the upstream's state, not this caller's: every caller of that upstream would
    get it now (its breaker is open, it is down or overloaded), so callers waiting on this one's work get it too.
    """

    def __init__(self, status: int, type_: str, message: str, upstream: str | None = None,
                 retry_after: float | None = None, headers: dict[str, str] | None = None, shared: bool = False):
        super().__init__(message)
        self.status, self.type, self.message, self.upstream = status, type_, message, upstream
        self.retry_after = retry_after
        self.headers = headers or {}
        self.shared = shared

    def response(self) -> JSONResponse:
        """This error in the native shape."""
        return NATIVE.render(self)

    def response_headers(self) -> dict[str, str]:
        """What every shape of this error carries: Retry-After and the error's own headers (rate limits)."""
        headers = dict(self.headers)
        if self.retry_after:
            headers["Retry-After"] = str(max(1, math.ceil(self.retry_after)))
        return headers


class ErrorDetail(BaseModel):
    type: str
    message: str
    upstream: str | None = None


class ErrorResponse(BaseModel):
    """The native shape of every error."""

    error: ErrorDetail


class TorchServeError(BaseModel):
    """TorchServe's error shape."""

    code: int
    type: str
    message: str


class KServeError(BaseModel):
    """KServe's error shape (KServe v1 and the Open Inference Protocol v2)."""

    error: str


# The one table: what each status means, and the exception name TorchServe's clients tell it apart by.
ERRORS: dict[int, tuple[str, str]] = {
    400: ("Invalid request: the message says what to fix.", "BadRequestException"),
    401: ("Missing or invalid credentials.", "UnauthorizedException"),
    403: ("The tenant may not use this model.", "ForbiddenException"),
    404: ("No such route, model, version, device, file or batch.", "ModelNotFoundException"),
    409: ("The batch's state does not allow it (a finished batch cannot be cancelled).", "ConflictException"),
    413: ("Request body, batch or input count too large.", "RequestTooLargeException"),
    415: ("Unsupported media type.", "UnsupportedMediaTypeException"),
    422: ("The body does not match the schema or the worker's limits.", "BadRequestException"),
    429: ("Over a limit or overloaded: retry after Retry-After seconds.", "ServiceUnavailableException"),
    431: ("Request headers too large.", "BadRequestException"),
    502: ("The worker failed to process the request.", "InternalServerException"),
    503: ("The worker is unavailable or its circuit breaker is open: retry after Retry-After seconds.",
          "ServiceUnavailableException"),
    504: ("The request's deadline passed.", "RequestTimeoutException"),
}


@dataclass(frozen=True)
class ErrorShape:
    """How one protocol writes an error: its body (`body(error)`) and the model that documents it."""

    body: Callable[[ApiError], dict]
    model: type[BaseModel]

    def render(self, error: ApiError) -> JSONResponse:
        return JSONResponse(self.body(error), status_code=error.status, headers=error.response_headers() or None)

    def documented(self, *statuses: int) -> dict[int | str, dict]:
        """OpenAPI `responses` for these statuses in this shape."""
        return {status: {"model": self.model, "description": ERRORS[status][0]} for status in statuses}


def _native(error: ApiError) -> dict:
    detail = {"type": error.type, "message": error.message[:MAX_MESSAGE_CHARS]}
    if error.upstream:
        detail["upstream"] = error.upstream
    return {"error": detail}


NATIVE = ErrorShape(_native, ErrorResponse)
TORCHSERVE = ErrorShape(lambda error: {"code": error.status, "message": error.message[:MAX_MESSAGE_CHARS],
                                       "type": ERRORS.get(error.status, ("", "InternalServerException"))[1]},
                        TorchServeError)
KSERVE = ErrorShape(lambda error: {"error": error.message[:MAX_MESSAGE_CHARS]}, KServeError)
# Path prefix -> its protocol's shape; every other path answers in ours.
PATH_SHAPES = (("/predictions/", TORCHSERVE), ("/models", TORCHSERVE), ("/v1/models/", KSERVE),
               ("/v2/models/", KSERVE))


def shape_of(path: str) -> ErrorShape:
    return next((shape for prefix, shape in PATH_SHAPES if path.startswith(prefix)), NATIVE)


def documented_errors(*statuses: int) -> dict[int | str, dict]:
    """OpenAPI `responses` for the given error statuses, in the native shape."""
    return NATIVE.documented(*statuses)


# What any model route may answer besides 200.
MODEL_ROUTE_STATUSES = (400, 401, 403, 404, 413, 415, 422, 429, 502, 503, 504)
MODEL_ROUTE_ERRORS = documented_errors(*MODEL_ROUTE_STATUSES)


# Status codes whose message the worker wrote for the caller; the others are replaced by a generic one.
_CLIENT_ERRORS = {
    grpc.StatusCode.INVALID_ARGUMENT: (400, "invalid_request_error"),
    grpc.StatusCode.OUT_OF_RANGE: (400, "invalid_request_error"),
    grpc.StatusCode.FAILED_PRECONDITION: (400, "invalid_request_error"),
    grpc.StatusCode.NOT_FOUND: (404, "not_found_error"),
}


# A worker's INVALID_ARGUMENT whose reason (trailing metadata `torchgate-error`) has a more precise status.
_INVALID_REASONS = {
    "unsupported_media_type": (415, "unsupported_media_type"),
    "unprocessable_document": (422, "unprocessable_document"),
    "document_too_large": (413, "request_too_large"),
}


def error_from_grpc(code: grpc.StatusCode, details: str | None, upstream: str, reason: str = "") -> ApiError:
    """Map an upstream gRPC status to its HTTP error (docs/architecture.md, "Errors"), never leaking internals."""
    if code in _CLIENT_ERRORS:
        status, type_ = _CLIENT_ERRORS[code]
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            status, type_ = _INVALID_REASONS.get(reason, (status, type_))
        return ApiError(status, type_, details or "invalid request", upstream)
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        return ApiError(429, "overloaded", f"the {upstream} service is overloaded; retry later", upstream, 1,
                        shared=True)
    if code == grpc.StatusCode.UNAVAILABLE:
        return ApiError(503, "upstream_unavailable", f"the {upstream} service is unavailable; retry later",
                        upstream, 1, shared=True)
    if code in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED):
        return ApiError(504, "timeout", f"the {upstream} service did not answer within the deadline", upstream)
    return ApiError(502, "upstream_error", f"the {upstream} service failed to process the request", upstream,
                    shared=True)


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


def _allowed_methods(request: Request) -> list[str]:
    """Every method of the path's route (Starlette's 405 names only the first route's of that path, not its
    siblings' with other methods); the app's routes, in order, are `app.state.api_routes`."""
    path = request.url.path
    routes = request.app.state.api_routes
    first = next((route for route in routes if route.path_regex.match(path)), None)
    if first is None:
        return []
    return sorted({method for route in routes if route.path == first.path for method in route.methods or ()})


def as_api_error(request: Request, error: Exception) -> ApiError:
    """Any exception as the error the client may see; never a stack trace."""
    if isinstance(error, ApiError):
        return error
    if isinstance(error, RequestValidationError):
        return invalid_body(error.errors())
    if isinstance(error, HTTPException):
        headers = dict(error.headers or {})
        if error.status_code == 405:
            headers["Allow"] = ", ".join(_allowed_methods(request))
        return ApiError(error.status_code, "http_error", str(error.detail), headers=headers)
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=error)
    return ApiError(500, "internal_error", "internal error")


def error_response(request: Request, error: Exception) -> JSONResponse:
    """The error in the shape of the request's protocol."""
    return shape_of(request.url.path).render(as_api_error(request, error))


def install_error_handlers(app: FastAPI) -> None:
    """Render the errors of the routes FastAPI runs with error_response."""

    async def handle(request: Request, error: Exception) -> JSONResponse:
        return error_response(request, error)

    for kind in (ApiError, RequestValidationError, HTTPException, Exception):
        app.add_exception_handler(kind, handle)
