"""Requests that reach one upstream in the same event-loop turn, asking the same thing of different inputs,
travel as one call.

Why: a worker pays ~0.45 ms of event-loop time per RPC (grpc.aio), and the gateway ~0.1 ms, whatever the RPC
carries. Under many single-text clients that was a tenth of a 2-core machine, taken from the model. Merging
waits for nothing: the first request of a turn schedules the send for the next turn, and whoever arrived by
then rides along. The worker still batches across calls; merging only removes per-call cost. Calls stay
small (`max_requests`, 8 by default): a merged call is one request to the worker, and one split over two
device streams answers its callers only when both parts are done, which ties the streams' callers together.

Each caller keeps what was its own: its slice of the reply (`Mergeable.split`), its error (a merged call
refused as invalid input is sent again one request at a time, so one client's bad input fails only that
client), its deadline and priority (only requests with the same deadline and priority merge) and its
disconnect (the merged call is cancelled when its last caller has gone).
"""

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from google.protobuf.message import Message

from gateway.errors import ApiError
from torchgate.priority import background_work

# A refusal of the input, which may concern one caller's part only; any other failure is every caller's.
INPUT_ERROR_STATUSES = frozenset({400, 422})


@dataclass(frozen=True)
class Mergeable:
    """How calls of one method merge: the repeated input field they concatenate, and how a merged reply
    splits into the reply one caller's request would have had (`split(reply, start, stop)`)."""

    field: str
    split: Callable[[Message, int, int], Message]


class _Merge:
    """Requests waiting for one merged call."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.requests: list[Message] = []
        self.request_ids: list[str] = []
        self.items = 0
        self.waiting = 0
        self.reply: asyncio.Future = loop.create_future()
        self.task: asyncio.Task | None = None

    def join(self, request: Message, request_id: str, items: int) -> int:
        """Add a request; its inputs start at the returned offset of the merged field."""
        start = self.items
        self.requests.append(request)
        self.request_ids.append(request_id)
        self.items += items
        return start

    def deliver(self, task: asyncio.Task) -> None:
        if task.cancelled():
            self.reply.cancel()
        elif task.exception() is not None:
            self.reply.set_exception(task.exception())
        else:
            self.reply.set_result(task.result())


Send = Callable[[str, Message, float, tuple[str, ...]], Awaitable[Message]]


class CallMerger:
    """Merges one upstream's concurrent calls; `send(method, request, timeout, request_ids)` makes a call."""

    def __init__(self, send: Send, max_requests: int):
        self.send = send
        self.max_requests = max_requests
        self._open: dict[tuple, _Merge] = {}

    async def call(self, method: str, request: Message, timeout: float, merge: Mergeable, request_id: str,
                   max_items: int) -> Message:
        options = _options(request, merge.field)
        if options is None:
            return await self.send(method, request, timeout, (request_id,))
        items = len(getattr(request, merge.field))
        key = (method, merge.field, timeout, background_work.get(), options)
        pending = self._open.get(key)
        if pending is None or len(pending.requests) >= self.max_requests or pending.items + items > max_items:
            pending = _Merge(asyncio.get_running_loop())
            self._open[key] = pending
            asyncio.get_running_loop().call_soon(self._dispatch, key, pending, method, timeout, merge.field)
        start = pending.join(request, request_id, items)
        pending.waiting += 1
        try:
            reply = await asyncio.shield(pending.reply)
        except ApiError as error:
            if len(pending.requests) > 1 and error.status in INPUT_ERROR_STATUSES:
                return await self.send(method, request, timeout, (request_id,))
            raise
        finally:
            pending.waiting -= 1
            if pending.waiting == 0 and pending.task is not None:
                pending.task.cancel()
        return reply if len(pending.requests) == 1 else merge.split(reply, start, start + items)

    def _dispatch(self, key: tuple, pending: _Merge, method: str, timeout: float, field: str) -> None:
        if self._open.get(key) is pending:
            del self._open[key]
        if pending.waiting == 0:
            pending.reply.cancel()
            return
        merged = pending.requests[0]
        if len(pending.requests) > 1:
            merged = type(merged)()
            merged.CopyFrom(pending.requests[0])
            inputs = getattr(merged, field)
            for request in pending.requests[1:]:
                inputs.extend(getattr(request, field))
        pending.task = asyncio.ensure_future(self.send(method, merged, timeout, tuple(pending.request_ids)))
        pending.task.add_done_callback(pending.deliver)


def _options(request: Message, field: str) -> tuple | None:
    """Everything a request asks but its inputs (requests merge only when this is equal), read without
    copying the inputs; None when another repeated field is set too: such a request travels alone."""
    options = []
    for descriptor, value in request.ListFields():
        if descriptor.name == field:
            continue
        if descriptor.is_repeated:
            return None
        options.append((descriptor.name,
                        value.SerializeToString(deterministic=True) if descriptor.message_type else value))
    return tuple(options)
