"""The HTTP edge as one pure-ASGI middleware, in front of everything a request costs.

Every request gets an id first: the client's X-Request-ID when it is plain and short, else a fresh one; it is
returned on every response, sent to the worker and named in every log line about the request. In order:
header size (431), the caller's tenant (401/403, gateway/tenants/, before a byte of the body is read), a body
declared too large (413 before a byte is read, and the connection closed), body size counted as the bytes
arrive, chunked uploads included (413, memory bounded by the cap), content type (415), JSON. An upload path (a
batch file, up to its own limit) is not buffered: its route streams the body to disk, counted here the same way.
A POST is a task's call: the task pipeline (gateway/pipeline.py) takes the tenant's limits once the protocol's
body is translated and its inputs are counted; any other request is charged here, as one request without inputs
(429).
The route (a JSON POST route runs here, see gateway/json_routes.py; the rest through FastAPI) then runs while
the middleware listens for the client going away: a disconnect cancels the route, and with it the gRPC call, so
the worker drops that request's queued work. Request metrics, the tenant's usage and the access log line (the
audit record: tenant, route, model, inputs, tokens, status, duration, request id, client; never a text or a
credential) are written here; every refusal takes the shape of the path's protocol (gateway/errors.py).
"""

import asyncio
import contextlib
import logging
import time

from opentelemetry import trace

from gateway.errors import ApiError, shape_of
from gateway.json_routes import JsonRoute
from gateway.metrics import ALIAS_REQUESTS, ALIAS_SECONDS, HTTP_REQUESTS, HTTP_SECONDS
from gateway.tenants import Admission, Tenant, TenantGate, current_tenant
from torchgate.telemetry import REQUEST_ID_HEADER, accepted_request_id, request_id

access_log = logging.getLogger("torchgate.access")
_REQUEST_ID_HEADER = REQUEST_ID_HEADER.encode()

MAX_HEADER_BYTES = 16 * 1024
# Nginx's name for "the client closed the connection before the answer"; only ever a metric label.
CLIENT_CLOSED = 499
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
# The method of every task's call: its limits are taken by the task pipeline, once its inputs are counted.
TASK_METHOD = "POST"
# A body refused before it is read is not drained: the connection closes after the answer.
CLOSE = {"Connection": "close"}


def _is_json(content_type: bytes) -> bool:
    media = content_type.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or media.endswith(b"+json")


def _is_form(content_type: bytes | None) -> bool:
    return content_type is not None and content_type.split(b";", 1)[0].strip().lower() == b"multipart/form-data"


class EdgeMiddleware:
    def __init__(self, app, max_body_bytes: int, routes: frozenset[str], tenants: TenantGate,
                 open_paths: frozenset[str], json_routes: dict[str, JsonRoute],
                 quiet_paths: frozenset[str] = frozenset(), raw_body_prefixes: tuple[str, ...] = (),
                 upload_paths: dict[str, int] | None = None):
        self.app = app
        self.upload_paths = upload_paths or {}
        self.json_routes = json_routes
        self.quiet_paths = quiet_paths
        self.max_body_bytes = max_body_bytes
        self.routes = routes
        self.tenants = tenants
        self.open_paths = open_paths
        self.raw_body_prefixes = raw_body_prefixes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = [CLIENT_CLOSED]
        response_done = asyncio.Event()
        offered = next((value for name, value in scope["headers"] if name == _REQUEST_ID_HEADER), b"")
        rid = accepted_request_id(offered.decode("latin-1"))
        request_id.set(rid)

        state = scope.setdefault("state", {})

        async def send_observed(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                added = [(name.lower().encode(), value.encode())
                         for name, value in state.get("response_headers", {}).items()]
                message = {**message, "headers": [*message.get("headers", ()), (_REQUEST_ID_HEADER, rid.encode()),
                                                  *added]}
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                response_done.set()
            await send(message)

        route = state["route"] = scope["path"] if scope["path"] in self.routes else "other"
        tenant: Tenant | None = None
        admission: Admission | None = None
        refusal = self._oversized_head(scope)
        try:
            if refusal is None and scope["path"] not in self.open_paths:
                tenant = await self.tenants.authenticate(scope["headers"])
                state["tenant"] = tenant
            upload_cap = self.upload_paths.get(scope["path"]) if scope["method"] == "POST" else None
            if upload_cap is not None:
                refusal = refusal or self._oversized_upload(scope, upload_cap)
                if refusal is None:
                    await self.app(scope, self._counted(receive, upload_cap), send_observed)
                body = None
            else:
                refusal = refusal or self._unreadable_body(scope)
                body = await self._read_body(scope, receive) if refusal is None else None
            if isinstance(body, ApiError):
                refusal = body
            elif body is not None:
                json_route = self.json_routes.get(scope["path"]) if scope["method"] == "POST" else None
                document = await self._document(scope, body, json_route) if json_route else None
                if tenant is not None and scope["method"] != TASK_METHOD:
                    admission = await self.tenants.admit(tenant, 0, route)
                    state.setdefault("response_headers", {}).update(admission.headers)
                await self._serve(scope, body, document, json_route, receive, send_observed, response_done, tenant)
        except ApiError as error:
            refusal = error
        finally:
            if admission is not None:
                admission.release()
        if refusal is not None:
            await shape_of(scope["path"]).render(refusal)(scope, receive, send_observed)
        elapsed = time.perf_counter() - started
        HTTP_REQUESTS.labels(route, str(status[0])).inc()
        HTTP_SECONDS.labels(route).observe(elapsed)
        model, tokens, inputs = state.get("model", ""), state.get("tokens", 0), state.get("inputs", 0)
        if "alias" in state:
            ALIAS_REQUESTS.labels(*state["alias"], str(status[0])).inc()
            ALIAS_SECONDS.labels(*state["alias"]).observe(elapsed)
        if tenant is not None:
            self.tenants.record(tenant, route, model, inputs, tokens, status[0])
        if scope["path"] not in self.quiet_paths:
            client = scope.get("client") or ("", 0)
            access_log.info("%s %s -> %d in %.1f ms", scope["method"], route, status[0], elapsed * 1000,
                            extra={"method": scope["method"], "route": route, "status": status[0],
                                   "duration_ms": round(elapsed * 1000, 2), "tenant": tenant.name if tenant else None,
                                   "model": model or None, "inputs": inputs, "tokens": tokens,
                                   "client": client[0]})

    async def _document(self, scope, body: bytes, json_route: JsonRoute) -> dict:
        if json_route.accepts_form and _is_form(dict(scope["headers"]).get(b"content-type")):
            return await json_route.load_form(body, scope["headers"], self.max_body_bytes)
        return json_route.load(body)

    @staticmethod
    def _oversized_head(scope) -> ApiError | None:
        if sum(len(name) + len(value) for name, value in scope["headers"]) > MAX_HEADER_BYTES:
            return ApiError(431, "request_header_fields_too_large",
                            f"the request headers exceed {MAX_HEADER_BYTES} bytes")
        return None

    @staticmethod
    def _oversized_upload(scope, cap: int) -> ApiError | None:
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > cap:
            return ApiError(413, "request_too_large", f"the upload has {int(length)} bytes; the limit is {cap}",
                            headers=CLOSE)
        return None

    @staticmethod
    def _counted(receive, cap: int):
        """`receive` for a route that streams its body (a batch file, spooled to disk): 413 past `cap` bytes."""
        size = 0

        async def counted():
            nonlocal size
            message = await receive()
            size += len(message.get("body", b""))
            if size > cap:
                raise ApiError(413, "request_too_large", f"the upload exceeds {cap} bytes", headers=CLOSE)
            return message

        return counted

    def _unreadable_body(self, scope) -> ApiError | None:
        """A body refused from the headers alone: declared too large, or not JSON."""
        if scope["method"] in _BODY_METHODS:
            fields = dict(scope["headers"])
            length = fields.get(b"content-length")
            if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
                return ApiError(413, "request_too_large",
                                f"the request body has {int(length)} bytes; the limit is {self.max_body_bytes}",
                                headers=CLOSE)
            content_type = fields.get(b"content-type")
            form_route = _is_form(content_type) and self._accepts_form(scope)
            if (content_type is not None and not _is_json(content_type) and not form_route
                    and not scope["path"].startswith(self.raw_body_prefixes)):
                return ApiError(415, "unsupported_media_type", "send the body as JSON: Content-Type: application/json")
        return None

    def _accepts_form(self, scope) -> bool:
        """Whether the path's POST route takes a form (another method on it is then a 405, not a 415)."""
        json_route = self.json_routes.get(scope["path"])
        return scope["path"] in self.upload_paths or (json_route is not None and json_route.accepts_form)

    async def _read_body(self, scope, receive) -> bytes | ApiError | None:
        """The whole body, or 413 as soon as it passes the cap, or None when the client left."""
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return ApiError(413, "request_too_large", f"the request body exceeds {self.max_body_bytes} bytes",
                                headers=CLOSE)
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _serve(self, scope, body: bytes, document: dict | None, json_route: JsonRoute | None, receive, send,
                     response_done: asyncio.Event, tenant: Tenant | None) -> None:
        """Run the route on the buffered body; cancel it if the client disconnects before the answer."""
        if tenant is not None:
            current_tenant.set(tenant.name)
            trace.get_current_span().set_attribute("torchgate.tenant", tenant.name)
        client_left = asyncio.Event()
        delivered = False

        async def replay():
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            await client_left.wait()
            return {"type": "http.disconnect"}

        route = asyncio.ensure_future(json_route(scope, document, replay, send) if json_route
                                      else self.app(scope, replay, send))

        async def watch():
            while (await receive())["type"] != "http.disconnect":
                pass
            client_left.set()
            if not response_done.is_set():
                route.cancel()

        watcher = asyncio.ensure_future(watch())
        try:
            with contextlib.suppress(asyncio.CancelledError):
                await route
            if route.cancelled() and not client_left.is_set():
                raise asyncio.CancelledError
        finally:
            watcher.cancel()

