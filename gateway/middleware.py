"""The HTTP edge as one pure-ASGI middleware: body size limit and request metrics."""

import time

from gateway.errors import ApiError
from gateway.metrics import HTTP_REQUESTS, HTTP_SECONDS


class EdgeMiddleware:
    def __init__(self, app, max_body_bytes: int, routes: frozenset[str]):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.routes = routes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        route = scope["path"] if scope["path"] in self.routes else "other"
        started = time.perf_counter()
        status_holder = [500]

        async def send_with_status(message):
            if message["type"] == "http.response.start":
                status_holder[0] = message["status"]
            await send(message)

        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
            message = f"the request body has {int(length)} bytes; the limit is {self.max_body_bytes}"
            await ApiError(413, "request_too_large", message).response()(scope, receive, send_with_status)
        else:
            await self.app(scope, receive, send_with_status)
        HTTP_REQUESTS.labels(route, str(status_holder[0])).inc()
        HTTP_SECONDS.labels(route).observe(time.perf_counter() - started)
