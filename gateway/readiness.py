"""Readiness, one definition for every protocol's probe: an upstream is ready when the gRPC health protocol,
asked now through its channel, says SERVING (some replica serves); a set of them when every one is."""

import asyncio
from collections.abc import Iterable

from fastapi import Request

from gateway.upstream import Upstream


async def readiness(request: Request, upstreams: Iterable[Upstream]) -> tuple[bool, dict[str, dict]]:
    """Whether every one of `upstreams` is ready, and each one's probe (status, breaker, failures, latency)."""
    upstreams = list(upstreams)
    timeout = request.app.state.settings.health_timeout_s
    probes = await asyncio.gather(*(client.probe(timeout) for client in upstreams))
    return all(probe["status"] == "SERVING" for probe in probes), {
        client.name: probe for client, probe in zip(upstreams, probes, strict=True)}


def model_pools(request: Request) -> list[Upstream]:
    """Every pool that serves a model (the GPU service serves none)."""
    return [pool for pools in request.app.state.pools.values() for pool in pools.pools]
