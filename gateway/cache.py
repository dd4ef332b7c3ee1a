"""The response cache: per input, in this process's memory and, when configured, in Redis shared by every
gateway process and replica.

An entry is one input's canonical result (an embedding's full float32 vector, a (query, document) pair's scores,
a text's classification) with the tokens the model saw for it, filed under a hash of everything that changes
that result: the task, the serving model's id and Info fingerprint (its weights, configuration, example file,
precision), the options that change the output, and the input itself. Routes derive every output format from
the canonical result, so one entry serves them all; no text ever reaches a key, a value's name or a log.

A request's inputs are looked up in memory, then in Redis (one MGET under a short deadline); identical inputs
already being computed by a concurrent request are awaited rather than computed twice (and when that computation
fails for the upstream's reasons, such as an open breaker, its waiters get the same error at once); what is left
goes to the worker in one call (merged with other requests' misses by gateway/merging.py). Results are kept only when
the worker's reply names the fingerprint they were looked up under, so a model changed behind the gateway
never files its results under the old model's name, nor is served from it.
"""

import asyncio
import hashlib
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from opentelemetry import trace

from gateway.errors import ApiError
from gateway.metrics import CACHE_BYTES, CACHE_EVICTIONS, CACHE_HITS, CACHE_MISSES
from gateway.redis_client import SharedRedis

log = logging.getLogger(__name__)

CACHE_HEADER = "X-Torchgate-Cache"
# Measured with tracemalloc: what an entry costs beyond its key and value bytes (two bytes objects, the tuple
# that pairs the value with its labels, the ordered dict's slot and link).
ENTRY_OVERHEAD_BYTES = 232
# An entry larger than this share of the bound is not kept, so one huge input cannot empty the cache.
MAX_ENTRY_SHARE = 64
# Redis writes run after the answer; past this many pending ones new results are kept in memory only.
MAX_PENDING_WRITES = 64
# Nor is an entry larger than this stored in Redis (a classification with 100 intents is ~3 KB).
MAX_REDIS_ENTRY_BYTES = 1 << 20
REDIS_PREFIX = b"tgc1:"
_CHECKSUM_BYTES = 8
KEY_BYTES = 32


@dataclass(frozen=True)
class CacheOutcome:
    """How a request's inputs were answered: `hits` from the cache, `misses` by a worker."""

    hits: int
    misses: int

    def headers(self) -> dict[str, str]:
        return {CACHE_HEADER: f"hits={self.hits} misses={self.misses}"}


@dataclass(frozen=True)
class Computed:
    """A worker's results for the inputs it was sent, and the fingerprint its reply named."""

    values: list[bytes]
    fingerprint: str


# compute(indices, timeout): the worker's results for those inputs, within `timeout` seconds.
Compute = Callable[[list[int], float], Awaitable[Computed]]


class Scope:
    """The key space of one request: task, model, fingerprint and the options that change results."""

    def __init__(self, task: str, model_id: str, fingerprint: str, options: tuple):
        self.task, self.model_id, self.fingerprint = task, model_id, fingerprint
        self.labels = (task, model_id)
        self._digest = hashlib.blake2b(digest_size=KEY_BYTES)
        for part in (task, model_id, fingerprint, repr(options)):
            self._digest.update(part.encode() + b"\0")

    def key(self, item: bytes) -> bytes:
        digest = self._digest.copy()
        digest.update(item)
        return digest.digest()


def _sealed(key: bytes, value: bytes) -> bytes:
    """The value as stored in Redis: followed by a checksum over key and value."""
    return value + hashlib.blake2b(key + value, digest_size=_CHECKSUM_BYTES).digest()


def _unsealed(key: bytes, stored: bytes | None) -> bytes | None:
    """The value, or None for a missing, truncated or foreign one."""
    if stored is None or len(stored) <= _CHECKSUM_BYTES:
        return None
    value, checksum = stored[:-_CHECKSUM_BYTES], stored[-_CHECKSUM_BYTES:]
    return value if hashlib.blake2b(key + value, digest_size=_CHECKSUM_BYTES).digest() == checksum else None


class MemoryTier:
    """Least recently used entries first out, bounded by their bytes (ENTRY_OVERHEAD_BYTES included)."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.max_entry_bytes = max_bytes // MAX_ENTRY_SHARE
        self.bytes = 0
        self._entries: OrderedDict[bytes, tuple[bytes, tuple[str, str]]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        return entry[0]

    def put(self, key: bytes, value: bytes, labels: tuple[str, str]) -> None:
        cost = len(key) + len(value) + ENTRY_OVERHEAD_BYTES
        if cost > self.max_entry_bytes or key in self._entries:
            return
        self._entries[key] = (value, labels)
        self.bytes += cost
        CACHE_BYTES.labels(*labels).inc(cost)
        while self.bytes > self.max_bytes:
            old_key, (old_value, old_labels) = self._entries.popitem(last=False)
            freed = len(old_key) + len(old_value) + ENTRY_OVERHEAD_BYTES
            self.bytes -= freed
            CACHE_BYTES.labels(*old_labels).dec(freed)
            CACHE_EVICTIONS.labels(*old_labels).inc()


class ResponseCache:
    """Resolves a request's inputs to results: from memory, Redis, concurrent computations, or the worker."""

    def __init__(self, max_bytes: int, redis: SharedRedis | None = None, ttl_s: int = 0):
        self.memory = MemoryTier(max_bytes)
        self.redis = redis
        self.ttl_s = ttl_s
        self._computing: dict[bytes, asyncio.Future] = {}
        self._writes: set[asyncio.Task] = set()

    async def resolve(self, scope: Scope, items: list[bytes], compute: Compute, timeout: float, read: bool = True,
                      valid: Callable[[bytes], bool] = bool) -> tuple[list[bytes], CacheOutcome]:
        """Every item's value, in order, within `timeout` seconds; `compute` is called for the items nobody has
        (first occurrences only). `read=False` (Cache-Control: no-cache) neither reads nor waits, but still
        stores. `valid` vets values read from Redis; one it refuses is a miss."""
        loop = asyncio.get_running_loop()
        expires = loop.time() + timeout
        keys = [scope.key(item) for item in items]
        first = {}
        for index, key in enumerate(keys):
            first.setdefault(key, index)
        found: dict[bytes, bytes] = {}
        hits = {"local": len(items) - len(first), "redis": 0, "shared": 0}  # a repeat within the request is local
        if read:
            for key in first:
                value = self.memory.get(key)
                if value is not None:
                    found[key] = value
            hits["local"] += len(found)
            remote = [key for key in first if key not in found and key not in self._computing]
            if remote and self.redis is not None:
                fetched = await self._fetch(remote, valid)
                for key, value in fetched.items():
                    found[key] = value
                    self.memory.put(key, value, scope.labels)
                hits["redis"] = len(fetched)
        awaited = {key: self._computing[key] for key in first if read and key not in found and key in self._computing}
        missing = [key for key in first if key not in found and key not in awaited]
        if missing:  # the whole deadline, as without the cache: requests merge only when their deadlines are equal
            found.update(await self._compute(scope, missing, first, compute, timeout, share=True))
        if awaited:
            await asyncio.wait(awaited.values(), timeout=max(0.0, expires - loop.time()),
                               return_when=asyncio.FIRST_EXCEPTION)
        retry = [key for key, future in awaited.items() if not future.done() or future.cancelled()]
        failed = next((future.exception() for key, future in awaited.items() if key not in retry
                       and future.exception() is not None), None)
        if failed is not None:
            raise failed
        found.update((key, future.result()) for key, future in awaited.items() if key not in retry)
        hits["shared"] = len(awaited) - len(retry)
        if retry:
            if expires - loop.time() <= 0:
                raise ApiError(504, "timeout", "the request's deadline passed while an identical input was computed "
                                               "for another request", scope.task)
            found.update(await self._compute(scope, retry, first, compute, expires - loop.time(), share=False))
        computed = len(missing) + len(retry)
        outcome = CacheOutcome(len(items) - computed, computed)
        self._record(scope, hits, outcome)
        return [found[key] for key in keys], outcome

    async def _compute(self, scope: Scope, keys: list[bytes], first: dict[bytes, int], compute: Compute,
                       timeout: float, share: bool) -> dict[bytes, bytes]:
        """The worker's values for `keys`; with `share`, concurrent requests for the same keys await them."""
        loop = asyncio.get_running_loop()
        owned = {}
        if share:
            for key in keys:
                if key not in self._computing:
                    owned[key] = self._computing[key] = loop.create_future()
        try:
            computed = await compute([first[key] for key in keys], max(timeout, 0.001))
        except BaseException as error:
            for future in owned.values():
                if isinstance(error, ApiError) and error.shared:
                    future.set_exception(error)  # the upstream's state: every waiter would meet it too, now
                    future.exception()  # retrieved here, so a future nobody waits on logs nothing
                else:
                    future.cancel()  # this caller's own end (its deadline, its input, its disconnect)
            raise
        finally:
            for key, future in owned.items():
                if self._computing.get(key) is future:
                    del self._computing[key]
        values = dict(zip(keys, computed.values, strict=True))
        for key, future in owned.items():
            future.set_result(values[key])
        if computed.fingerprint == scope.fingerprint:
            self._store(scope, values)
        return values

    def _store(self, scope: Scope, values: dict[bytes, bytes]) -> None:
        for key, value in values.items():
            self.memory.put(key, value, scope.labels)
        if self.redis is None or len(self._writes) >= MAX_PENDING_WRITES:
            return
        stored = {REDIS_PREFIX + key: _sealed(key, value) for key, value in values.items()
                  if len(value) <= MAX_REDIS_ENTRY_BYTES}
        if stored:
            task = asyncio.ensure_future(self._write(stored))
            self._writes.add(task)
            task.add_done_callback(self._writes.discard)

    async def _write(self, stored: dict[bytes, bytes]) -> None:
        async def write(client):
            async with client.pipeline(transaction=False) as pipe:
                for name, value in stored.items():
                    pipe.set(name, value, ex=self.ttl_s)
                await pipe.execute()

        await self.redis.run("cache_set", write)

    async def _fetch(self, keys: list[bytes], valid: Callable[[bytes], bool]) -> dict[bytes, bytes]:
        stored = await self.redis.run("cache_get", lambda client: client.mget([REDIS_PREFIX + key for key in keys]))
        if stored is None:
            return {}
        fetched = {}
        for key, value in zip(keys, stored, strict=True):
            value = _unsealed(key, value)
            if value is not None and valid(value):
                fetched[key] = value
        return fetched

    @staticmethod
    def _record(scope: Scope, hits: dict[str, int], outcome: CacheOutcome) -> None:
        for tier, count in hits.items():
            if count:
                CACHE_HITS.labels(*scope.labels, tier).inc(count)
        if outcome.misses:
            CACHE_MISSES.labels(*scope.labels).inc(outcome.misses)
        span = trace.get_current_span()
        span.set_attribute("torchgate.cache.hits", outcome.hits)
        span.set_attribute("torchgate.cache.misses", outcome.misses)

    async def close(self) -> None:
        if self._writes:
            await asyncio.wait(self._writes, timeout=1.0)
