"""The gateway's one Redis client, shared by the response cache and the rate limits when Redis is configured.

Redis only ever speeds the gateway up or shares its state; it never decides whether a request is served. Every
operation runs under a short deadline (TORCHGATE_GATEWAY_REDIS_TIMEOUT_S) and a circuit breaker: Redis slow or
down costs a request at most that deadline, and only until the breaker opens; then callers skip Redis at once
until a trial call succeeds. The connection pool reconnects by itself.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pybreaker
import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.maint_notifications import MaintNotificationsConfig

from gateway.metrics import REDIS_ERRORS

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_CONNECTIONS = 32
BREAKER_FAIL_MAX = 3
BREAKER_RESET_S = 2.0


class _Announcer(pybreaker.CircuitBreakerListener):
    def state_change(self, cb, old_state, new_state) -> None:
        if new_state.name == pybreaker.STATE_OPEN and (old_state is None or old_state.name != pybreaker.STATE_OPEN):
            log.warning("redis unreachable or slow: going on without it, trying again in %.0f s", cb.reset_timeout)
        elif new_state.name == pybreaker.STATE_CLOSED and old_state is not None:
            log.warning("redis answers again")


class SharedRedis:
    """`run(operation, call)`: call(client) under the deadline and the breaker; None when Redis cannot answer."""

    def __init__(self, url: str, timeout_s: float):
        # A bounded pool: a burst of requests shares MAX_CONNECTIONS connections (waiting within the deadline)
        # rather than opening one each; connections skip the handshake extras (client name, maintenance events).
        pool = redis.BlockingConnectionPool.from_url(
            url, max_connections=MAX_CONNECTIONS, timeout=timeout_s, socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s, retry=Retry(NoBackoff(), 0), health_check_interval=30,
            lib_name=None, lib_version=None)
        self.client = redis.Redis(connection_pool=pool,
                                  maint_notifications_config=MaintNotificationsConfig(enabled=False))
        self.timeout_s = timeout_s
        self.breaker = pybreaker.CircuitBreaker(fail_max=BREAKER_FAIL_MAX, reset_timeout=BREAKER_RESET_S,
                                                listeners=[_Announcer()], name="redis",
                                                throw_new_error_on_trip=False)

    async def run(self, operation: str, call: Callable[[redis.Redis], Awaitable[T]]) -> T | None:
        try:
            with self.breaker.calling():
                async with asyncio.timeout(self.timeout_s):
                    return await call(self.client)
        except pybreaker.CircuitBreakerError:
            return None
        except (redis.RedisError, OSError, TimeoutError) as error:
            REDIS_ERRORS.labels(operation).inc()
            log.debug("redis %s failed: %s %s", operation, type(error).__name__, error)
            return None

    async def close(self) -> None:
        await self.client.aclose()
