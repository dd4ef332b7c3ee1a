"""Files and batches, durable: every change of state is one transaction of the database (gateway/jobs/database.py).

A batch's lines are claimed in slices, each claim under a token of its own with a lease. A slice's results are
written with the batch's counts in one transaction, and only over lines the slice's token still holds: a
claimer that died (kill -9) or stalled past its lease loses its lines to the next claimer, and whatever it
would write afterwards changes nothing. So every line is answered exactly once, whoever crashes when.

A file's content is its lines: an uploaded file's are stored as they came, a batch's output and error files
are the results of its answered lines, read in line order when downloaded (nothing is copied at the end).
"""

import json
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from gateway.jobs.database import Database

COMPLETION_WINDOW_S = {"24h": 24 * 3600}
# A batch's states (OpenAI's): where each can go is in the store's transitions below.
VALIDATING, IN_PROGRESS, FINALIZING, COMPLETED = "validating", "in_progress", "finalizing", "completed"
FAILED, EXPIRED, CANCELLING, CANCELLED = "failed", "expired", "cancelling", "cancelled"
FINISHED = frozenset({COMPLETED, FAILED, EXPIRED, CANCELLED})
STATUSES = (VALIDATING, IN_PROGRESS, FINALIZING, COMPLETED, FAILED, EXPIRED, CANCELLING, CANCELLED)
# Rows written per statement when a file's lines are stored or read back.
PAGE_LINES = 1000

BATCH_COLUMNS = ("id, tenant, input_file_id, endpoint, completion_window, metadata, status, total, completed, "
                 "failed, created_at, in_progress_at, finalizing_at, completed_at, failed_at, cancelling_at, "
                 "cancelled_at, expires_at, expired_at, output_file_id, error_file_id")
FILE_COLUMNS = "id, tenant, purpose, filename, bytes, created_at, batch_id, outcome"


def new_id(prefix: str) -> str:
    """Ids that sort by creation (lists page by id), unguessable past the clock."""
    return f"{prefix}_{time.time_ns() // 1000:014x}{secrets.token_hex(6)}"


@dataclass(frozen=True)
class StoredFile:
    id: str
    tenant: str
    purpose: str
    filename: str
    bytes: int
    created_at: int
    batch_id: str | None
    outcome: int | None  # a batch's output (1) or error (0) file; None: uploaded

    def as_openai(self) -> dict:
        return {"id": self.id, "object": "file", "bytes": self.bytes, "created_at": self.created_at,
                "filename": self.filename, "purpose": self.purpose, "status": "processed", "expires_at": None,
                "status_details": None}


@dataclass(frozen=True)
class Batch:
    id: str
    tenant: str
    input_file_id: str
    endpoint: str
    completion_window: str
    metadata: str | None
    status: str
    total: int
    completed: int
    failed: int
    created_at: int
    in_progress_at: int | None
    finalizing_at: int | None
    completed_at: int | None
    failed_at: int | None
    cancelling_at: int | None
    cancelled_at: int | None
    expires_at: int
    expired_at: int | None
    output_file_id: str | None
    error_file_id: str | None

    def as_openai(self) -> dict:
        return {"id": self.id, "object": "batch", "endpoint": self.endpoint, "errors": None,
                "input_file_id": self.input_file_id, "completion_window": self.completion_window,
                "status": self.status, "output_file_id": self.output_file_id, "error_file_id": self.error_file_id,
                "created_at": self.created_at, "in_progress_at": self.in_progress_at,
                "expires_at": self.expires_at, "finalizing_at": self.finalizing_at,
                "completed_at": self.completed_at, "failed_at": self.failed_at, "expired_at": self.expired_at,
                "cancelling_at": self.cancelling_at, "cancelled_at": self.cancelled_at,
                "request_counts": {"total": self.total, "completed": self.completed, "failed": self.failed},
                "metadata": json.loads(self.metadata) if self.metadata else None}


@dataclass(frozen=True)
class ClaimedLine:
    line_no: int
    custom_id: str
    line: str
    attempts: int


@dataclass(frozen=True)
class Slice:
    """Lines of one batch held under one claim token until `commit` or the lease ends."""

    batch_id: str
    tenant: str
    endpoint: str
    token: str
    lines: list[ClaimedLine]


@dataclass(frozen=True)
class LineResult:
    """One line's answer (`output`: its line of the output or error file), or a retry after `retry_at`."""

    line_no: int
    ok: bool
    output: str = ""
    retry_at: float | None = None


@dataclass(frozen=True)
class Backlog:
    """What the metrics export: batches by status, lines waiting, and the age of the oldest waiting line."""

    batches: dict[str, int]
    queued_lines: int
    oldest_queued_s: float


class JobStore:
    def __init__(self, database: Database):
        self.database = database

    async def open(self) -> None:
        await self.database.open()

    async def close(self) -> None:
        await self.database.close()

    # Files.

    async def add_file(self, tenant: str, purpose: str, filename: str, size: int, endpoints: set[str],
                       lines: AsyncIterator[list[tuple[int, str, str]]]) -> StoredFile:
        """Store an uploaded file from its validated lines (pages of (line_no, custom_id, line)), whole or not
        at all."""
        stored = StoredFile(new_id("file"), tenant, purpose, filename, size, int(time.time()), None, None)
        async with self.database.transaction() as transaction:
            count = 0
            async for page in lines:
                await transaction.executemany(
                    "INSERT INTO file_lines (file_id, line_no, custom_id, line) VALUES (?, ?, ?, ?)",
                    [(stored.id, *row) for row in page])
                count += len(page)
            await transaction.execute(
                "INSERT INTO files (id, tenant, purpose, filename, bytes, lines, created_at, endpoints) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                stored.id, tenant, purpose, filename, size, count, stored.created_at, ",".join(sorted(endpoints)))
        return stored

    async def file(self, tenant: str, file_id: str) -> StoredFile | None:
        async with self.database.transaction() as transaction:
            row = await transaction.fetchone(f"SELECT {FILE_COLUMNS} FROM files WHERE id = ? AND tenant = ?",
                                             file_id, tenant)
        return StoredFile(*row) if row else None

    async def file_endpoints(self, file_id: str) -> set[str]:
        """The routes the uploaded file's lines name."""
        async with self.database.transaction() as transaction:
            (endpoints,) = await transaction.fetchone("SELECT endpoints FROM files WHERE id = ?", file_id)
        return set(filter(None, endpoints.split(",")))

    async def files(self, tenant: str, limit: int, after: str | None, purpose: str | None,
                    newest_first: bool) -> list[StoredFile]:
        compare, order = ("<", "DESC") if newest_first else (">", "ASC")
        sql = f"SELECT {FILE_COLUMNS} FROM files WHERE tenant = ?"
        args: list = [tenant]
        if after:
            sql += f" AND id {compare} ?"
            args.append(after)
        if purpose:
            sql += " AND purpose = ?"
            args.append(purpose)
        async with self.database.transaction() as transaction:
            rows = await transaction.fetch(f"{sql} ORDER BY id {order} LIMIT ?", *args, limit)
        return [StoredFile(*row) for row in rows]

    async def delete_file(self, tenant: str, file_id: str) -> bool:
        async with self.database.transaction() as transaction:
            deleted = await transaction.execute("DELETE FROM files WHERE id = ? AND tenant = ?", file_id, tenant)
            if deleted:
                await transaction.execute("DELETE FROM file_lines WHERE file_id = ?", file_id)
        return bool(deleted)

    async def content(self, stored: StoredFile) -> AsyncIterator[str]:
        """The file's lines in order, a page at a time (an output file of 50,000 vectors is never in memory)."""
        if stored.batch_id is None:
            sql = ("SELECT line_no, line FROM file_lines WHERE file_id = ? AND line_no > ? ORDER BY line_no LIMIT ?")
            key: tuple = (stored.id,)
        else:
            sql = ("SELECT line_no, output FROM batch_lines WHERE batch_id = ? AND done = 1 AND ok = ? "
                   "AND line_no > ? ORDER BY line_no LIMIT ?")
            key = (stored.batch_id, stored.outcome)
        last = -1
        while True:
            async with self.database.transaction() as transaction:
                rows = await transaction.fetch(sql, *key, last, PAGE_LINES)
            for _, line in rows:
                yield line
            if len(rows) < PAGE_LINES:
                return
            last = rows[-1][0]

    # Batches.

    async def create_batch(self, tenant: str, input_file_id: str, endpoint: str, completion_window: str,
                           metadata: dict | None) -> Batch:
        """A batch over every line of the input file, queued (`validating`) until its tenant may run it."""
        now = int(time.time())
        batch_id = new_id("batch")
        async with self.database.transaction() as transaction:
            await transaction.execute(
                "INSERT INTO batch_lines (batch_id, line_no, custom_id, line) "
                "SELECT ?, line_no, custom_id, line FROM file_lines WHERE file_id = ?", batch_id, input_file_id)
            (total,) = await transaction.fetchone("SELECT lines FROM files WHERE id = ?", input_file_id)
            await transaction.execute(
                "INSERT INTO batches (id, tenant, input_file_id, endpoint, completion_window, metadata, status, "
                "total, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                batch_id, tenant, input_file_id, endpoint, completion_window,
                json.dumps(metadata) if metadata else None, VALIDATING, total, now,
                now + COMPLETION_WINDOW_S[completion_window])
        return await self.batch(tenant, batch_id)

    async def batch(self, tenant: str, batch_id: str) -> Batch | None:
        async with self.database.transaction() as transaction:
            row = await transaction.fetchone(f"SELECT {BATCH_COLUMNS} FROM batches WHERE id = ? AND tenant = ?",
                                             batch_id, tenant)
        return Batch(*row) if row else None

    async def batches(self, tenant: str, limit: int, after: str | None) -> list[Batch]:
        sql, args = f"SELECT {BATCH_COLUMNS} FROM batches WHERE tenant = ?", [tenant]
        if after:
            sql += " AND id < ?"
            args.append(after)
        async with self.database.transaction() as transaction:
            rows = await transaction.fetch(f"{sql} ORDER BY id DESC LIMIT ?", *args, limit)
        return [Batch(*row) for row in rows]

    async def cancel(self, tenant: str, batch_id: str) -> Batch | None:
        """`cancelling` (its answered lines are kept; the runner finishes it as `cancelled`); a finished batch
        is returned as it is, for the caller to refuse."""
        async with self.database.transaction() as transaction:
            await transaction.execute(
                "UPDATE batches SET status = ?, cancelling_at = ? WHERE id = ? AND tenant = ? "
                "AND status IN (?, ?, ?)", CANCELLING, int(time.time()), batch_id, tenant, VALIDATING, IN_PROGRESS,
                FINALIZING)
        return await self.batch(tenant, batch_id)

    async def start_waiting(self, batches_per_tenant: int) -> int:
        """Move batches from `validating` to `in_progress`, oldest first, while their tenant runs fewer than
        `batches_per_tenant`; how many started."""
        started = 0
        while True:
            async with self.database.transaction() as transaction:
                row = await transaction.fetchone(
                    "SELECT id FROM batches AS waiting WHERE status = ? AND (SELECT count(*) FROM batches AS running "
                    "WHERE running.tenant = waiting.tenant AND running.status IN (?, ?)) < ? "
                    "ORDER BY id LIMIT 1", VALIDATING, IN_PROGRESS, FINALIZING, batches_per_tenant)
                if row is None:
                    return started
                await transaction.execute("UPDATE batches SET status = ?, in_progress_at = ? WHERE id = ?",
                                          IN_PROGRESS, int(time.time()), row[0])
                started += 1

    async def claim(self, size: int, lease_s: float) -> Slice | None:
        """Up to `size` open lines of the running batch served longest ago, under a new token, leased for
        `lease_s`; None when no line is open."""
        now = time.time()
        token = secrets.token_hex(8)
        open_line = ("done = 0 AND (claim IS NULL OR lease_until < ?) AND not_before <= ?")
        async with self.database.transaction() as transaction:
            batch = await transaction.fetchone(
                "SELECT id, tenant, endpoint FROM batches WHERE status = ? AND EXISTS (SELECT 1 FROM batch_lines "
                f"WHERE batch_id = batches.id AND {open_line}) ORDER BY claimed_at LIMIT 1", IN_PROGRESS, now, now)
            if batch is None:
                return None
            batch_id, tenant, endpoint = batch
            rows = await transaction.fetch(
                "UPDATE batch_lines SET claim = ?, lease_until = ?, attempts = attempts + 1 WHERE batch_id = ? AND "
                f"line_no IN (SELECT line_no FROM batch_lines WHERE batch_id = ? AND {open_line} "
                "ORDER BY line_no LIMIT ? {lock}) RETURNING line_no, custom_id, line, attempts",
                token, now + lease_s, batch_id, batch_id, now, now, size)
            await transaction.execute("UPDATE batches SET claimed_at = ? WHERE id = ?", now, batch_id)
        if not rows:
            return None
        lines = sorted((ClaimedLine(*row) for row in rows), key=lambda line: line.line_no)
        return Slice(batch_id, tenant, endpoint, token, lines)

    async def renew(self, claimed: Slice, lease_s: float) -> None:
        async with self.database.transaction() as transaction:
            await transaction.execute("UPDATE batch_lines SET lease_until = ? WHERE batch_id = ? AND claim = ? "
                                      "AND done = 0", time.time() + lease_s, claimed.batch_id, claimed.token)

    async def commit(self, claimed: Slice, results: list[LineResult]) -> bool:
        """Write the slice's answers and the batch's counts in one transaction, over the lines its token still
        holds; lines to retry are released until their retry time. Whether the batch is now fully answered."""
        async with self.database.transaction() as transaction:
            held = {line_no for (line_no,) in await transaction.fetch(
                "SELECT line_no FROM batch_lines WHERE batch_id = ? AND claim = ? AND done = 0 {row_lock}",
                claimed.batch_id, claimed.token)}
            answers = [result for result in results if result.line_no in held and result.retry_at is None]
            retries = [result for result in results if result.line_no in held and result.retry_at is not None]
            await transaction.executemany(
                "UPDATE batch_lines SET done = 1, ok = ?, output = ?, out_bytes = ?, claim = NULL "
                "WHERE batch_id = ? AND line_no = ?",
                [(int(result.ok), result.output, len(result.output.encode()) + 1, claimed.batch_id, result.line_no)
                 for result in answers])
            await transaction.executemany(
                "UPDATE batch_lines SET claim = NULL, not_before = ? WHERE batch_id = ? AND line_no = ?",
                [(result.retry_at, claimed.batch_id, result.line_no) for result in retries])
            completed = sum(result.ok for result in answers)
            failed = len(answers) - completed
            row = await transaction.fetchone(
                "UPDATE batches SET completed = completed + ?, failed = failed + ? WHERE id = ? "
                "RETURNING completed + failed >= total AND status = ?", completed, failed, claimed.batch_id,
                IN_PROGRESS)
            answered = bool(row and row[0])
            if answered:
                await transaction.execute("UPDATE batches SET status = ?, finalizing_at = ? WHERE id = ?",
                                          FINALIZING, int(time.time()), claimed.batch_id)
        return answered

    async def release(self, token: str) -> None:
        """Give back the lines a claim still holds (a graceful stop)."""
        async with self.database.transaction() as transaction:
            await transaction.execute("UPDATE batch_lines SET claim = NULL WHERE claim = ? AND done = 0", token)

    async def finish_due(self, expired_output) -> list[str]:
        """Finish every batch that is due: fully answered (`finalizing` -> `completed`), cancelled with none
        of its lines still held (-> `cancelled`), or past its window (-> `expired`, each open line answered
        with `expired_output(batch_id, custom_id, line_no)`). The batch's output and error files are named here. Returns
        the finished batches' ids."""
        now = time.time()
        async with self.database.transaction() as transaction:
            due = await transaction.fetch(
                "SELECT id, status FROM batches WHERE status = ? OR (status = ? AND NOT EXISTS (SELECT 1 FROM "
                "batch_lines WHERE batch_id = batches.id AND done = 0 AND claim IS NOT NULL AND lease_until >= ?)) "
                "OR (status = ? AND expires_at < ?)", FINALIZING, CANCELLING, now, IN_PROGRESS, int(now))
        finished = []
        for batch_id, status in due:
            if await self._finish(batch_id, status, expired_output):
                finished.append(batch_id)
        return finished

    async def _finish(self, batch_id: str, status: str, expired_output) -> bool:
        now = int(time.time())
        final, stamp = {FINALIZING: (COMPLETED, "completed_at"), CANCELLING: (CANCELLED, "cancelled_at"),
                        IN_PROGRESS: (EXPIRED, "expired_at")}[status]
        async with self.database.transaction() as transaction:
            row = await transaction.fetchone("SELECT tenant, status FROM batches WHERE id = ? {row_lock}", batch_id)
            if row is None or row[1] != status:
                return False
            tenant = row[0]
            if final == EXPIRED:
                open_lines = await transaction.fetch(
                    "SELECT line_no, custom_id FROM batch_lines WHERE batch_id = ? AND done = 0", batch_id)
                outputs = [(expired_output(batch_id, custom_id, line_no), line_no) for line_no, custom_id in open_lines]
                await transaction.executemany(
                    "UPDATE batch_lines SET done = 1, ok = 0, output = ?, out_bytes = ?, claim = NULL "
                    "WHERE batch_id = ? AND line_no = ?",
                    [(output, len(output.encode()) + 1, batch_id, line_no) for output, line_no in outputs])
                await transaction.execute("UPDATE batches SET failed = failed + ? WHERE id = ?", len(outputs),
                                          batch_id)
            sizes = dict(((ok, (lines, size)) for ok, lines, size in await transaction.fetch(
                "SELECT ok, count(*), sum(out_bytes) FROM batch_lines WHERE batch_id = ? AND done = 1 GROUP BY ok",
                batch_id)))
            names = {}
            for ok, label in ((1, "output"), (0, "errors")):
                if ok not in sizes:
                    continue
                names[ok] = new_id("file")
                await transaction.execute(
                    "INSERT INTO files (id, tenant, purpose, filename, bytes, lines, created_at, batch_id, outcome) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", names[ok], tenant, "batch_output",
                    f"{batch_id}_{label}.jsonl", int(sizes[ok][1] or 0), int(sizes[ok][0]), now, batch_id, ok)
            await transaction.execute(
                f"UPDATE batches SET status = ?, {stamp} = ?, output_file_id = ?, error_file_id = ? WHERE id = ?",
                final, now, names.get(1), names.get(0), batch_id)
        return True

    async def backlog(self) -> Backlog:
        now = time.time()
        async with self.database.transaction() as transaction:
            counts = dict(await transaction.fetch("SELECT status, count(*) FROM batches GROUP BY status"))
            queued, oldest = await transaction.fetchone(
                "SELECT count(*), min(batches.created_at) FROM batch_lines JOIN batches ON batches.id = "
                "batch_lines.batch_id WHERE batch_lines.done = 0 AND batches.status IN (?, ?)", VALIDATING,
                IN_PROGRESS)
        return Backlog({status: int(counts.get(status, 0)) for status in STATUSES}, int(queued),
                       max(0.0, now - oldest) if oldest is not None else 0.0)
