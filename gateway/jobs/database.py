"""The two databases a job store runs on, behind one small interface: SQLite in WAL mode (embedded, one file,
several processes of one host) and PostgreSQL (several processes and hosts).

The store's SQL is written once, with `?` placeholders, `{lock}` where a claim's row lock goes and `{row_lock}`
where a transaction waits for one row: PostgreSQL takes `FOR UPDATE SKIP LOCKED` (two claimers never wait for,
nor take, each other's rows), `FOR UPDATE` and `$n` placeholders; SQLite takes nothing, since `BEGIN
IMMEDIATE` already makes a writing transaction the only one.
"""

import asyncio
import re
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
  id TEXT PRIMARY KEY, tenant TEXT NOT NULL, purpose TEXT NOT NULL, filename TEXT NOT NULL,
  bytes BIGINT NOT NULL, lines INTEGER NOT NULL, created_at BIGINT NOT NULL,
  batch_id TEXT, outcome INTEGER, endpoints TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS file_lines (
  file_id TEXT NOT NULL, line_no INTEGER NOT NULL, custom_id TEXT NOT NULL, line TEXT NOT NULL,
  PRIMARY KEY (file_id, line_no));
CREATE TABLE IF NOT EXISTS batches (
  id TEXT PRIMARY KEY, tenant TEXT NOT NULL, input_file_id TEXT NOT NULL, endpoint TEXT NOT NULL,
  completion_window TEXT NOT NULL, metadata TEXT, status TEXT NOT NULL, total INTEGER NOT NULL,
  completed INTEGER NOT NULL DEFAULT 0, failed INTEGER NOT NULL DEFAULT 0, created_at BIGINT NOT NULL,
  in_progress_at BIGINT, finalizing_at BIGINT, completed_at BIGINT, failed_at BIGINT, cancelling_at BIGINT,
  cancelled_at BIGINT, expires_at BIGINT NOT NULL, expired_at BIGINT, output_file_id TEXT, error_file_id TEXT,
  claimed_at DOUBLE PRECISION NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS batches_by_status ON batches (status, claimed_at);
CREATE TABLE IF NOT EXISTS batch_lines (
  batch_id TEXT NOT NULL, line_no INTEGER NOT NULL, custom_id TEXT NOT NULL, line TEXT NOT NULL,
  done INTEGER NOT NULL DEFAULT 0, ok INTEGER, output TEXT, out_bytes INTEGER NOT NULL DEFAULT 0,
  claim TEXT, lease_until DOUBLE PRECISION NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0,
  not_before DOUBLE PRECISION NOT NULL DEFAULT 0,
  PRIMARY KEY (batch_id, line_no));
CREATE INDEX IF NOT EXISTS batch_lines_open ON batch_lines (batch_id, done, line_no);
"""


class Transaction(ABC):
    """Statements inside one transaction."""

    @abstractmethod
    async def fetch(self, sql: str, *args) -> list[Sequence]:
        """The rows the statement returns (SELECT, or RETURNING)."""

    @abstractmethod
    async def execute(self, sql: str, *args) -> int:
        """Run the statement; the number of rows it changed."""

    @abstractmethod
    async def executemany(self, sql: str, rows: list[Sequence]) -> None:
        """Run the statement once per row of arguments."""

    async def fetchone(self, sql: str, *args) -> Sequence | None:
        rows = await self.fetch(sql, *args)
        return rows[0] if rows else None


class Database(ABC):
    """A connection (pool) to one database; `transaction()` is the only way statements run."""

    lock = ""
    row_lock = ""

    @abstractmethod
    async def open(self) -> None:
        """Connect and create the schema where it is missing."""

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    def transaction(self) -> "asynccontextmanager[Transaction]":
        """A writing transaction: committed when the block ends, rolled back when it raises."""

    def sql(self, statement: str) -> str:
        return statement.replace("{lock}", self.lock).replace("{row_lock}", self.row_lock)


class _SqliteTransaction(Transaction):
    def __init__(self, connection, database: "SqliteDatabase"):
        self.connection = connection
        self.database = database

    async def fetch(self, sql: str, *args) -> list[Sequence]:
        async with self.connection.execute(self.database.sql(sql), args) as cursor:
            return list(await cursor.fetchall())

    async def execute(self, sql: str, *args) -> int:
        async with self.connection.execute(self.database.sql(sql), args) as cursor:
            return cursor.rowcount

    async def executemany(self, sql: str, rows: list[Sequence]) -> None:
        if rows:
            await self.connection.executemany(self.database.sql(sql), rows)


class SqliteDatabase(Database):
    """One file in WAL mode: readers never wait for the writer, and `BEGIN IMMEDIATE` makes writers take turns,
    across the processes of one host too (a busy database is waited for, up to BUSY_TIMEOUT_MS)."""

    BUSY_TIMEOUT_MS = 30_000

    def __init__(self, path: Path):
        self.path = path
        self._connection = None
        # One connection per process; its transactions take turns here, the processes' in SQLite.
        self._turn = asyncio.Lock()

    async def open(self) -> None:
        import aiosqlite

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._connection = await aiosqlite.connect(self.path, isolation_level=None)
        await self._connection.execute(f"PRAGMA busy_timeout = {self.BUSY_TIMEOUT_MS}")
        await self._connection.execute("PRAGMA journal_mode = WAL")
        await self._connection.execute("PRAGMA synchronous = NORMAL")
        async with self.transaction() as transaction:
            for statement in filter(str.strip, SCHEMA.split(";")):
                await transaction.execute(statement)

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()
            self._connection = None

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        async with self._turn:
            await self._connection.execute("BEGIN IMMEDIATE")
            try:
                yield _SqliteTransaction(self._connection, self)
            except BaseException:
                await self._connection.execute("ROLLBACK")
                raise
            await self._connection.execute("COMMIT")


_PLACEHOLDER = re.compile(r"\?")


class _PostgresTransaction(Transaction):
    def __init__(self, connection, database: "PostgresDatabase"):
        self.connection = connection
        self.database = database

    async def fetch(self, sql: str, *args) -> list[Sequence]:
        return await self.connection.fetch(self.database.sql(sql), *args)

    async def execute(self, sql: str, *args) -> int:
        status = await self.connection.execute(self.database.sql(sql), *args)
        return int(status.rsplit(" ", 1)[-1]) if status[-1:].isdigit() else 0

    async def executemany(self, sql: str, rows: list[Sequence]) -> None:
        if rows:
            await self.connection.executemany(self.database.sql(sql), rows)


class PostgresDatabase(Database):
    """A pool of connections to PostgreSQL; claims lock their rows and skip the rows others hold."""

    lock = "FOR UPDATE SKIP LOCKED"
    row_lock = "FOR UPDATE"
    POOL_SIZE = 4

    def __init__(self, url: str):
        self.url = url
        self._pool = None

    def sql(self, statement: str) -> str:
        count = iter(range(1, 1000))
        return _PLACEHOLDER.sub(lambda _: f"${next(count)}", super().sql(statement))

    async def open(self) -> None:
        import asyncpg

        self._pool = await asyncpg.create_pool(self.url, min_size=1, max_size=self.POOL_SIZE)
        async with self._pool.acquire() as connection:
            # Created once, by one gateway at a time: DDL on tables in use would wait on (and deadlock with) the
            # other gateways' claims.
            async with connection.transaction():
                await connection.execute("SELECT pg_advisory_xact_lock(7140)")
                if await connection.fetchval("SELECT to_regclass('batch_lines')") is None:
                    await connection.execute(SCHEMA)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        async with self._pool.acquire() as connection, connection.transaction():
            yield _PostgresTransaction(connection, self)


def database_for(url: str, directory: Path) -> Database:
    """PostgreSQL for a postgresql:// URL, else SQLite in `directory`."""
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresDatabase(url)
    return SqliteDatabase(directory / "jobs.sqlite3")
