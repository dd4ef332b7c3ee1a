"""The API's POST routes, run straight from the edge: one JSON body in, one JSON response out.

Every POST route is declared on a FastAPI router as `async def route(body: <RequestBody model>, request)`:
FastAPI builds the OpenAPI schema and /docs from the declaration and answers other methods with 405, but
the edge middleware calls the route itself. FastAPI's per-request path (router, exception middleware, exit
stacks, dependency solving) was a third of the gateway's CPU per embedding request (README, design notes),
and a closed loop of callers waits for that time on every round trip. Here the body is parsed by `json`,
validated by the same model, and errors render as everywhere else (gateway/errors.py).
"""

import inspect
import json
import typing
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from fastapi import APIRouter
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request
from starlette.responses import Response

from gateway.errors import ApiError, error_response, invalid_body


class FormDocument(dict):
    """A multipart body's fields: text, so the route's model reads them as a form's values (lax: "8" is 8)."""


@dataclass(frozen=True)
class JsonRoute:
    body: type[BaseModel]
    endpoint: Callable[[BaseModel, Request], Awaitable[Response]]

    async def __call__(self, scope, document: dict, receive, send) -> None:
        request = Request(scope, receive)
        try:
            response = await self.endpoint(self.validate(document), request)
        except Exception as error:
            response = error_response(request, error)
        await response(scope, receive, send)

    @staticmethod
    def load(body: bytes) -> dict:
        """The body as a JSON object, or the 422 that says what to fix."""
        if not body:
            raise ApiError(422, "invalid_request_error", "body: empty; send a JSON object")
        try:
            document = json.loads(body)
        except ValueError as error:  # JSONDecodeError, or bytes that are no Unicode text
            raise ApiError(422, "invalid_request_error", f"body: not valid JSON ({error})") from None
        except RecursionError:
            raise ApiError(422, "invalid_request_error", "body: JSON nested too deeply") from None
        if not isinstance(document, dict):
            raise ApiError(422, "invalid_request_error", "body: send a JSON object")
        return document

    @property
    def accepts_form(self) -> bool:
        """Whether the body may come as multipart/form-data (a file upload): its model names its file field."""
        return bool(getattr(self.body, "FORM_FILE", ""))

    @staticmethod
    async def load_form(body: bytes, headers: list[tuple[bytes, bytes]], max_part_bytes: int) -> dict:
        """A multipart body as the route's document: each field by its name, a file as its bytes (its name in
        `<field>_filename`); a field sent more than once, a list."""

        async def stream():
            yield body

        try:
            form = await MultiPartParser(Headers(raw=headers), stream(), max_files=16, max_fields=64,
                                         max_part_size=max_part_bytes).parse()
        except MultiPartException as error:
            raise ApiError(422, "invalid_request_error", f"body: not valid multipart/form-data ({error})") from None
        document = FormDocument()
        for name, value in form.multi_items():
            if isinstance(value, UploadFile):
                document[f"{name}_filename"] = value.filename or ""
                value = await value.read()
            if name in document:
                previous = document[name]
                document[name] = [*previous, value] if isinstance(previous, list) else [previous, value]
            else:
                document[name] = value
        await form.close()
        return document

    def validate(self, document: dict) -> BaseModel:
        """The document as the route's model, or the 422 that says what to fix."""
        try:
            return self.body.model_validate(document, strict=False if isinstance(document, FormDocument) else None)
        except ValidationError as error:
            raise invalid_body(error.errors()) from None


def form_contract(schema: dict, routes: dict[str, JsonRoute]) -> dict:
    """The OpenAPI schema with each form route's two bodies told apart: multipart/form-data carries the file
    (`FORM_FILE`, required) and the other fields; JSON carries the text (`TEXT_FIELD`, required) instead of the
    file, or is not offered when the route takes files only."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for path, route in routes.items():
        if not route.accepts_form:
            continue
        body = schema["paths"][path]["post"]["requestBody"]
        name = route.body.__name__
        full = components[name]
        file_field, text_field = route.body.FORM_FILE, getattr(route.body, "TEXT_FIELD", "")
        components[f"{name}Form"] = _narrowed(full, drop=text_field, require=file_field)
        content = {"multipart/form-data": {"schema": {"$ref": f"#/components/schemas/{name}Form"}}}
        if text_field:
            components[name] = _narrowed(full, drop=file_field, require=text_field)
            content["application/json"] = body["content"]["application/json"]
        body["content"] = content
    return schema


def _narrowed(schema: dict, drop: str, require: str) -> dict:
    properties = {name: value for name, value in schema["properties"].items() if name != drop}
    required = sorted({*schema.get("required", []), require} - {drop})
    return {**schema, "properties": properties, "required": required}


def json_routes(routers: Iterable[APIRouter]) -> dict[str, JsonRoute]:
    """Path -> JsonRoute for every POST route of the routers; a POST route of another shape fails start-up,
    since the edge would run it without what FastAPI adds (dependencies, other parameters)."""
    table = {}
    for router in routers:
        for route in router.routes:
            if not isinstance(route, APIRoute) or "POST" not in route.methods:
                continue
            if (list(inspect.signature(route.endpoint).parameters) != ["body", "request"]
                    or route.dependencies or route.methods != {"POST"}):
                raise TypeError(f"POST {route.path}: a JSON route takes (body, request) only, and only POST")
            table[route.path] = JsonRoute(typing.get_type_hints(route.endpoint)["body"], route.endpoint)
    return table
