"""The job store on both of its databases, SQLite (WAL) and a real PostgreSQL: claims never overlap, a claim whose
lease ended writes nothing, and every line is answered exactly once."""

import asyncio
import itertools
import json
import time

import asyncpg
import pytest

from gateway.jobs.database import PostgresDatabase, SqliteDatabase
from gateway.jobs.store import JobStore, LineResult
from tests.postgres_server import PostgresServer


@pytest.fixture(scope="module")
def postgres():
    server = PostgresServer()
    server.start()
    yield server
    server.stop()


_databases = itertools.count()


@pytest.fixture(params=["sqlite", "postgresql"])
async def stores(request, tmp_path):
    """Two stores on one database, as two gateway processes have."""
    if request.param == "sqlite":
        databases = [SqliteDatabase(tmp_path / "jobs.sqlite3") for _ in range(2)]
    else:
        server = request.getfixturevalue("postgres")
        name = f"jobs_{next(_databases)}"
        admin = await asyncpg.connect(server.url)
        await admin.execute(f"CREATE DATABASE {name}")
        await admin.close()
        databases = [PostgresDatabase(server.url.rsplit("/", 1)[0] + f"/{name}") for _ in range(2)]
    opened = [JobStore(database) for database in databases]
    for store in opened:
        await store.open()
    yield opened
    for store in opened:
        await store.close()


async def running_batch(store: JobStore, lines: int, tenant: str) -> str:
    async def pages():
        yield [(i + 1, f"id-{i}", json.dumps({"custom_id": f"id-{i}"})) for i in range(lines)]

    file = await store.add_file(tenant, "batch", "f.jsonl", 10, {"/v1/embeddings"}, pages())
    batch = await store.create_batch(tenant, file.id, "/v1/embeddings", "24h", None)
    await store.start_waiting(1)
    return batch.id


async def test_concurrent_claimers_get_disjoint_lines_and_together_all_of_them(stores, request):
    first, second = stores
    tenant = request.node.name
    await running_batch(first, 40, tenant)
    claimed = []
    while True:
        slices = [s for s in await asyncio.gather(first.claim(3, 30), second.claim(3, 30)) if s is not None]
        if not slices:
            break
        claimed += [line.line_no for s in slices if s.tenant == tenant for line in s.lines]
    assert sorted(claimed) == list(range(1, 41))


async def test_a_claim_whose_lease_ended_writes_nothing_and_its_lines_are_answered_once(stores, request):
    store, other = stores
    tenant = request.node.name
    batch_id = await running_batch(store, 5, tenant)
    stale = await store.claim(3, lease_s=0.05)
    await asyncio.sleep(0.1)
    fresh = await other.claim(5, lease_s=30)
    assert [line.line_no for line in stale.lines] == [1, 2, 3]
    assert [line.line_no for line in fresh.lines] == [1, 2, 3, 4, 5]
    answers = [LineResult(line.line_no, line.line_no != 4, f'{{"n":{line.line_no}}}') for line in fresh.lines]
    assert await store.commit(stale, answers[:3]) is False
    assert await other.commit(fresh, answers) is True
    assert await store.claim(5, lease_s=30) is None
    assert batch_id in await store.finish_due(lambda *_: "")
    finished = await store.batch(tenant, batch_id)
    output = await store.file(tenant, finished.output_file_id)
    errors = await store.file(tenant, finished.error_file_id)
    content = [line async for line in store.content(output)]
    assert (finished.status, finished.completed, finished.failed) == ("completed", 4, 1)
    assert content == [f'{{"n":{n}}}' for n in (1, 2, 3, 5)]
    assert [line async for line in store.content(errors)] == ['{"n":4}']
    assert output.bytes == sum(len(line) + 1 for line in content)


async def test_a_line_put_back_is_claimed_again_only_after_its_retry_time(stores, request):
    store, _ = stores
    tenant = request.node.name
    await running_batch(store, 1, tenant)
    claimed = await store.claim(1, lease_s=30)
    await store.commit(claimed, [LineResult(1, False, retry_at=time.time() + 0.3)])
    assert await store.claim(1, lease_s=30) is None
    await asyncio.sleep(0.35)
    again = await store.claim(1, lease_s=30)
    assert again.lines[0].attempts == 2


async def test_a_batch_past_its_window_expires_with_an_error_line_for_each_open_line(stores, request):
    store, _ = stores
    tenant = request.node.name
    batch_id = await running_batch(store, 3, tenant)
    claimed = await store.claim(1, lease_s=30)
    await store.commit(claimed, [LineResult(1, True, '{"n":1}')])
    async with store.database.transaction() as transaction:
        await transaction.execute("UPDATE batches SET expires_at = ? WHERE id = ?", int(time.time()) - 1, batch_id)
    assert batch_id in await store.finish_due(lambda batch, custom_id, line_no: f"{batch}:{custom_id}:{line_no}")
    expired = await store.batch(tenant, batch_id)
    errors = [line async for line in store.content(await store.file(tenant, expired.error_file_id))]
    assert (expired.status, expired.completed, expired.failed) == ("expired", 1, 2)
    assert expired.expired_at is not None and errors == [f"{batch_id}:id-1:2", f"{batch_id}:id-2:3"]
