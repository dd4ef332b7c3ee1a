"""Real worker runtimes in the test process, on free loopback ports."""

from contextlib import asynccontextmanager

from services.runtime.worker import Worker


async def started(servicer) -> Worker:
    """A real worker runtime around `servicer` (built from its settings), SERVING on a free loopback port."""
    worker = Worker(servicer, servicer.settings)
    await worker.start()
    await worker.wait_serving()
    return worker


@asynccontextmanager
async def serving(servicer):
    """`started(servicer)` until the block ends, then stopped at once."""
    worker = await started(servicer)
    try:
        yield worker
    finally:
        await worker.stop(0)
