"""The batch runner of one gateway process: claims slices of running batches and answers their lines through the
same routes and call pipeline as interactive requests, as background work.

Each line runs the JSON route its `url` names, in-process (no HTTP, no socket): the body is validated by the
route's model, the pipeline takes the batch's tenant (its daily token quota, not its request rate: the runner
sets the pace), the response cache answers what it knows, and the upstream calls carry the background priority,
so the workers serve interactive requests first and give the batch what is left (services/runtime/batcher.py).
A line answered 429, 503 or 504 (overload, a worker down, a deadline) is put back for a later attempt, up to
`max_attempts`; any other answer is final and written to the output file (2xx) or the error file.
"""

import asyncio
import contextlib
import json
import logging
import time

from opentelemetry import trace

from gateway.jobs.store import ClaimedLine, JobStore, LineResult, Slice
from gateway.metrics import JOB_BATCHES, JOB_LINES, JOB_OLDEST_QUEUED, JOB_QUEUED_LINES, JOB_RETRIES
from gateway.tenants import Tenant, current_tenant
from torchgate.priority import background_work
from torchgate.telemetry import request_id

log = logging.getLogger(__name__)
tracer = trace.get_tracer("torchgate.jobs")

RETRIED_STATUSES = frozenset({429, 503, 504})
MAX_BACKOFF_S = 60.0
# How often an idle runner looks for work another process queued, and refreshes the backlog gauges.
POLL_S = 0.5
# An interactive call this recent makes the runner yield (as the workers' batcher does).
YIELD_S = 1.0
METRICS_S = 5.0
_REQUEST = {"type": "http.request", "body": b"", "more_body": False}


def line_request_id(batch_id: str, line_no: int) -> str:
    """The same id on every attempt of a line: the output's `id` and the request id of its calls."""
    return f"batch_req_{batch_id.removeprefix('batch_')}_{line_no}"


def output_line(request_id_: str, custom_id: str, status: int, body: bytes) -> str:
    """A line of the output or error file, as OpenAI writes it (the route's answer kept byte for byte)."""
    return (f'{{"id":{json.dumps(request_id_)},"custom_id":{json.dumps(custom_id)},"response":{{"status_code":'
            f'{status},"request_id":{json.dumps(request_id_)},"body":{body.decode()}}},"error":null}}')


def expired_line(batch_id: str, custom_id: str, line_no: int) -> str:
    return json.dumps({"id": line_request_id(batch_id, line_no), "custom_id": custom_id, "response": None,
                       "error": {"code": "batch_expired",
                                 "message": "This request could not be executed before the completion window "
                                            "expired."}}, separators=(",", ":"))


class JobRunner:
    def __init__(self, store: JobStore, app, settings):
        self.store = store
        self.app = app
        self.settings = settings
        self._slices: dict[asyncio.Task, Slice] = {}
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._metrics_at = 0.0
        # Batches may have changed state (created, cancelled, fully answered): look before the next claim.
        self._states_changed = True
        self._states_at = 0.0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    def wake(self) -> None:
        """A batch was created, cancelled or fully answered in this process: start, finish and claim now."""
        self._states_changed = True
        self._wakeup.set()

    async def close(self) -> None:
        """Stop claiming, stop the slices in flight and give their lines back for the next claimer."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        held = list(self._slices.items())
        for task, _ in held:
            task.cancel()
        await asyncio.gather(*(task for task, _ in held), return_exceptions=True)
        for _, claimed in held:
            with contextlib.suppress(Exception):
                await self.store.release(claimed.token)

    async def _run(self) -> None:
        while True:
            self._wakeup.clear()
            try:
                await self._step()
            except Exception:
                log.exception("the batch runner's step failed; trying again")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), POLL_S)

    async def _step(self) -> None:
        """Start and finish the batches that are due (when something changed here, else once a poll), then
        claim slices up to JOBS_SLICES."""
        store = self.store
        if self._states_changed or time.monotonic() - self._states_at >= POLL_S:
            self._states_changed, self._states_at = False, time.monotonic()
            await store.start_waiting(self.settings.jobs_batches_per_tenant)
            for batch_id in await store.finish_due(expired_line):
                log.info("batch finished", extra={"batch": batch_id})
        while (size := self._room()) > 0:
            claimed = await store.claim(size, self.settings.jobs_lease_s)
            if claimed is None:
                break
            task = asyncio.create_task(self._run_slice(claimed))
            self._slices[task] = claimed
            task.add_done_callback(self._slice_done)
        if time.monotonic() - self._metrics_at >= METRICS_S:
            self._metrics_at = time.monotonic()
            backlog = await store.backlog()
            for status, count in backlog.batches.items():
                JOB_BATCHES.labels(status).set(count)
            JOB_QUEUED_LINES.set(backlog.queued_lines)
            JOB_OLDEST_QUEUED.set(backlog.oldest_queued_s)

    def _room(self) -> int:
        """The size of the next slice to claim, 0 for none: JOBS_SLICES slices of JOBS_SLICE_LINES while the
        upstreams are idle, one of JOBS_YIELD_LINES while interactive requests arrive (lines in flight queue
        in the workers and their answers take the event loops, which interactive requests wait for)."""
        now = time.monotonic()
        if any(now - upstream.interactive_at < YIELD_S for upstream in self.app.state.upstreams.values()):
            return self.settings.jobs_yield_lines if not self._slices else 0
        return self.settings.jobs_slice_lines if len(self._slices) < self.settings.jobs_slices else 0

    def _slice_done(self, task: asyncio.Task) -> None:
        self._slices.pop(task, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("a batch slice failed; its lines return when their lease ends", exc_info=task.exception())
        self._wakeup.set()

    async def _run_slice(self, claimed: Slice) -> None:
        renewing = asyncio.create_task(self._renew(claimed))
        try:
            with tracer.start_as_current_span("batch slice", attributes={
                    "torchgate.batch": claimed.batch_id, "torchgate.tenant": claimed.tenant,
                    "torchgate.batch.lines": len(claimed.lines),
                    "torchgate.batch.first_line": claimed.lines[0].line_no}):
                tenant = self.app.state.tenants.named(claimed.tenant)
                results = await asyncio.gather(*(self._answer(claimed, line, tenant) for line in claimed.lines))
        finally:
            renewing.cancel()
        if await self.store.commit(claimed, results):
            self.wake()

    async def _renew(self, claimed: Slice) -> None:
        """Keep the slice's lease while its lines run (a document's conversion may take a minute)."""
        while True:
            await asyncio.sleep(self.settings.jobs_lease_s / 3)
            await self.store.renew(claimed, self.settings.jobs_lease_s)

    async def _answer(self, claimed: Slice, line: ClaimedLine, tenant: Tenant | None) -> LineResult:
        rid = line_request_id(claimed.batch_id, line.line_no)
        request = json.loads(line.line)
        url = request["url"]
        if tenant is None:
            status, headers, body = 403, {}, json.dumps({"error": {
                "type": "permission_denied",
                "message": f"tenant {claimed.tenant!r} that created this batch is no longer in the tenants file"}
            }).encode()
        else:
            status, headers, body = await self._call(url, request["body"], tenant, rid)
        if status in RETRIED_STATUSES and line.attempts < self.settings.jobs_max_attempts:
            JOB_RETRIES.labels(str(status)).inc()
            wait = max(float(headers.get("retry-after", 0) or 0), min(MAX_BACKOFF_S, 2.0 ** line.attempts))
            return LineResult(line.line_no, False, retry_at=time.time() + wait)
        ok = 200 <= status < 300
        JOB_LINES.labels("completed" if ok else "failed", url).inc()
        return LineResult(line.line_no, ok, output_line(rid, line.custom_id, status, body))

    async def _call(self, url: str, body: dict, tenant: Tenant, rid: str) -> tuple[int, dict[str, str], bytes]:
        """The route's answer to one line, run in-process as the batch's tenant, with background priority."""
        request_id.set(rid)
        background_work.set(True)
        current_tenant.set(tenant.name)
        state = {"tenant": tenant, "route": url, "background": True}
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                 "scheme": "http", "path": url, "raw_path": url.encode(), "query_string": b"", "root_path": "",
                 "headers": [(b"content-type", b"application/json")], "client": None, "server": None,
                 "app": self.app, "state": state}
        started: dict = {}
        chunks: list[bytes] = []

        async def receive():
            return _REQUEST

        async def send(message):
            if message["type"] == "http.response.start":
                started.update(message)
            else:
                chunks.append(message.get("body", b""))

        await self.app.state.json_routes[url](scope, body, receive, send)
        status = started.get("status", 500)
        headers = {name.decode().lower(): value.decode() for name, value in started.get("headers", ())}
        self.app.state.tenants.record(tenant, url, state.get("model", ""), state.get("inputs", 0),
                                      state.get("tokens", 0), status)
        return status, headers, b"".join(chunks)
