"""Batch jobs: OpenAI's Files and Batches API over a durable store, answered by a runner in every gateway process.

- files.py: an uploaded JSONL file checked whole (every line's body by its route's contract) before it is kept;
- store.py: files, batches and their lines in one database, claims with leases, exactly-once results;
- database.py: SQLite in WAL mode under TORCHGATE_GATEWAY_JOBS_DIR (default), or PostgreSQL at JOBS_URL;
- runner.py: slices of running batches through the same routes and call pipeline as interactive requests, at
  background priority.
The HTTP routes are gateway/routes/jobs.py; docs/batches.md says how it is used and operated.
"""

import asyncio
import logging
from pathlib import Path

from gateway.errors import ApiError
from gateway.jobs.database import SqliteDatabase, database_for
from gateway.jobs.runner import JobRunner
from gateway.jobs.store import JobStore

log = logging.getLogger(__name__)
STORE_RETRY_S = 5


class Jobs:
    """The store and the runner of one gateway process. The embedded database is created on first use; one that
    exists (or PostgreSQL) is opened at start, so batches left running by a stopped gateway resume at once."""

    def __init__(self, app, settings):
        self.database = database_for(settings.jobs_url, Path(settings.jobs_dir))
        self.store = JobStore(self.database)
        self.runner = JobRunner(self.store, app, settings)
        self._opening = asyncio.Lock()
        self._open = False

    async def start(self) -> None:
        """Open the store that exists; one that cannot be opened now (PostgreSQL down) is tried again on first use,
        and the gateway serves everything else meanwhile."""
        if not isinstance(self.database, SqliteDatabase) or self.database.path.exists():
            try:
                await self.ready()
            except ApiError as error:
                log.warning("batch jobs wait for their store: %s", error.message)

    async def ready(self) -> JobStore:
        """The store, opened (and the runner started) on first use; 503 while it cannot be opened."""
        async with self._opening:
            if not self._open:
                try:
                    await self.store.open()
                except Exception as error:  # any reason it cannot open: a bad URL, refused, no such database
                    await self.store.close()
                    log.warning("the batch job store did not open", exc_info=error)
                    raise ApiError(503, "jobs_unavailable", "the batch job store is unavailable; retry shortly",
                                   None, STORE_RETRY_S) from None
                self.runner.start()
                self._open = True
        return self.store

    async def close(self) -> None:
        if self._open:
            await self.runner.close()
            await self.store.close()
            self._open = False
