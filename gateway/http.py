"""The gateway's HTTP/1.1 connections: uvicorn's httptools protocol with a bound on how long a request head may take.

uvicorn arms no timer while a request head is arriving (its keep-alive timer stops at the first byte), so a
client trickling one header line every few seconds holds a connection, and a file descriptor, for as long as it
likes. As nginx's client_header_timeout does, a connection whose request head is not complete within
`header_timeout_s` of its first byte (or of the connection itself) gets 408 and is closed.
"""

import asyncio
from functools import cache

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.config import GatewaySettings
from gateway.metrics import HEADER_TIMEOUTS

_TIMEOUT_BODY = b'{"error": {"type": "request_timeout", "message": "the request head did not arrive in time"}}'
REQUEST_TIMEOUT = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
                   b"content-length: %d\r\n\r\n%s" % (len(_TIMEOUT_BODY), _TIMEOUT_BODY))


@cache
def header_timeout_s() -> float:
    """Read once per process (each uvicorn worker process reads its own environment)."""
    return GatewaySettings().header_timeout_s


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """HttpToolsProtocol whose request heads must arrive within `header_timeout_s`."""

    header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm_header_timer()

    def on_headers_complete(self) -> None:
        self._cancel_header_timer()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        if self.header_timer is None:
            self.header_timer = self.loop.call_later(header_timeout_s(), self._header_timed_out)

    def _cancel_header_timer(self) -> None:
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None

    def _header_timed_out(self) -> None:
        self.header_timer = None
        if self.transport.is_closing():
            return
        HEADER_TIMEOUTS.inc()
        self.transport.write(REQUEST_TIMEOUT)
        self.transport.close()
