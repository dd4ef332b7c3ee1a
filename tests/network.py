"""Loopback plumbing for tests: gRPC channels whose every call has a deadline, and a port that refuses."""

import json
import socket

import grpc

TEST_RPC_DEADLINE_S = 30

# An empty name matches every method of every service: the channel's default deadline.
_DEFAULT_DEADLINE = json.dumps({"methodConfig": [{"name": [{}], "timeout": f"{TEST_RPC_DEADLINE_S}s"}]})

# Bound for the whole session and never listening: connections are refused and no other process can take the
# port (a port bound, released and passed on could be taken by anything before the test used it).
_REFUSING = socket.socket()
_REFUSING.bind(("127.0.0.1", 0))


def worker_channel(port: int, host: str = "127.0.0.1") -> grpc.aio.Channel:
    """A hung worker fails the test at the deadline instead of stalling CI."""
    return grpc.aio.insecure_channel(f"{host}:{port}", options=[("grpc.service_config", _DEFAULT_DEADLINE)])


def released_port(host: str = "127.0.0.1") -> int:
    """A port free on `host` a moment ago, for servers that have no port-0 mode (Prometheus' 0 switches it off).

    Bind-and-release can race with other processes; use it only where nothing else works.
    """
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def refusing_port() -> int:
    """A loopback port that refuses connections: a dead upstream."""
    return _REFUSING.getsockname()[1]
