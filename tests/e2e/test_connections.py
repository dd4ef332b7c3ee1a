"""What a connection may cost the gateway before its request is even read: a bounded head, a refused size."""

import http.client
import socket
import time

import httpx

from tests.e2e.processes import start_gateway
from tests.network import refusing_port

HEADER_TIMEOUT_S = 1.0
MAX_BODY_BYTES = 4096


def gateway(tmp_path):
    return start_gateway([refusing_port()], tmp_path, env={
        "TORCHGATE_GATEWAY_HEADER_TIMEOUT_S": str(HEADER_TIMEOUT_S),
        "TORCHGATE_GATEWAY_MAX_BODY_BYTES": str(MAX_BODY_BYTES)})


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def read_until_closed(sock: socket.socket, timeout: float) -> bytes:
    """Everything the server sends until it closes; raises TimeoutError if it keeps the connection open."""
    sock.settimeout(timeout)
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def read_response(sock: socket.socket, timeout: float) -> http.client.HTTPResponse:
    """The next response on the connection; raises TimeoutError if none arrives within `timeout`."""
    sock.settimeout(timeout)
    response = http.client.HTTPResponse(sock)
    response.begin()
    response.read()
    return response


def declare_body(url: str, length: int) -> socket.socket:
    """A connection that has sent the head of an embeddings request declaring `length` body bytes, and no body."""
    sock = connect(url)
    sock.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n"
                 b"Content-Length: %d\r\n\r\n" % length)
    return sock


def test_a_trickled_or_silent_request_head_is_a_408_and_a_closed_connection(tmp_path):
    service, url = gateway(tmp_path)
    try:
        tricklers = [connect(url) for _ in range(40)]
        silent = [connect(url) for _ in range(10)]
        for sock in tricklers:
            sock.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: gateway\r\n")
        started = time.monotonic()
        # One header line at a time, each well inside the bound, the whole head never.
        while time.monotonic() - started < HEADER_TIMEOUT_S * 0.8:
            time.sleep(HEADER_TIMEOUT_S / 4)
            for sock in tricklers:
                sock.sendall(b"X-Trickle: 1\r\n")
        with httpx.Client(base_url=url, timeout=10) as client:
            assert client.get("/health/live").status_code == 200
        for sock in tricklers + silent:
            answer = read_until_closed(sock, timeout=HEADER_TIMEOUT_S * 5)
            assert answer.startswith(b"HTTP/1.1 408 "), answer[:80]
            assert time.monotonic() - started < HEADER_TIMEOUT_S * 5
            sock.close()
        with httpx.Client(base_url=url, timeout=10) as client:
            metrics = client.get("/metrics").text
        assert "torchgate_gateway_header_timeouts_total 50.0" in metrics
    finally:
        service.stop()


def test_a_slow_head_within_the_bound_and_a_keep_alive_pause_longer_than_it_still_work(tmp_path):
    service, url = gateway(tmp_path)
    try:
        sock = connect(url)
        for line in (b"GET /health/live HTTP/1.1\r\n", b"Host: gateway\r\n", b"\r\n"):
            sock.sendall(line)
            time.sleep(HEADER_TIMEOUT_S / 4)
        assert read_response(sock, timeout=10).status == 200
        # Between requests the keep-alive timeout (uvicorn's 5 s) governs, not the header timeout.
        time.sleep(HEADER_TIMEOUT_S * 1.5)
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: gateway\r\n\r\n")
        assert read_response(sock, timeout=10).status == 200
        sock.close()
    finally:
        service.stop()


def test_a_body_declared_too_large_is_a_413_before_a_byte_of_it_is_read(tmp_path):
    service, url = gateway(tmp_path)
    try:
        too_large = declare_body(url, MAX_BODY_BYTES + 1)
        assert read_response(too_large, timeout=5).status == 413

        # At the limit the gateway waits for the body it was promised, and then answers it.
        body = b'{"input": "' + b"x" * (MAX_BODY_BYTES - 13) + b'"}'
        assert len(body) == MAX_BODY_BYTES
        at_limit = declare_body(url, MAX_BODY_BYTES)
        at_limit.settimeout(HEADER_TIMEOUT_S * 2)
        try:
            early = at_limit.recv(65536)
        except TimeoutError:
            early = b""
        assert early == b"", early[:80]
        at_limit.sendall(body)
        # No worker is behind this gateway: a body it read and accepted meets the dead upstream.
        assert read_response(at_limit, timeout=10).status == 503
    finally:
        service.stop()
