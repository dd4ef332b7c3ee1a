"""Each document in a child process of its own, with limits, so a hostile file costs that child only.

Children fork from a forkserver that imported Docling once (services/documents/work.py): a child starts in
milliseconds and the worker process itself never parses a document. A child runs with an address-space and a
CPU-seconds limit, in a private temporary directory removed after it, and is killed at the wall-time limit or
when its caller leaves. What it answers, or how it died, becomes the caller's 4xx; the worker keeps serving.
"""

import asyncio
import contextlib
import logging
import multiprocessing
import os
import resource
import shutil
import tempfile
from dataclasses import dataclass

from services.documents.formats import Unprocessable
from services.documents.job import Job
from services.runtime.errors import InvalidInput, Overloaded

log = logging.getLogger(__name__)

CONTEXT = multiprocessing.get_context("forkserver")
CONTEXT.set_forkserver_preload(["services.documents.work"])


@dataclass(frozen=True)
class ChildLimits:
    memory_mb: int
    cpu_s: int
    wall_s: float


class Conversions:
    """At most `slots` children at once, `max_waiting` documents queued for a slot, more refused."""

    def __init__(self, limits: ChildLimits, slots: int, max_waiting: int):
        self.limits = limits
        self.slots = asyncio.Semaphore(slots)
        self.max_waiting = max_waiting
        self.waiting = 0

    async def start(self) -> None:
        """Start the forkserver and run one document through it, so the first caller waits for neither."""
        await self.run(Job(content=b"# Warm\n\nup", format="markdown", filename="warm.md", max_pages=1,
                           max_chunks=1, tokenizer_json=None))

    async def run(self, job: Job) -> dict:
        if self.slots.locked() and self.waiting >= self.max_waiting:
            raise Overloaded(f"{self.waiting} documents are waiting for a conversion slot: retry later")
        self.waiting += 1
        try:
            await self.slots.acquire()
        finally:
            self.waiting -= 1
        try:
            return await self._in_child(job)
        finally:
            self.slots.release()

    async def _in_child(self, job: Job) -> dict:
        receiving, sending = CONTEXT.Pipe(duplex=False)
        directory = tempfile.mkdtemp(prefix="torchgate-document-")
        child = CONTEXT.Process(target=_child, args=(sending, job, self.limits, directory), daemon=True)
        try:
            child.start()
            sending.close()
            message = await asyncio.wait_for(_receive(receiving), self.limits.wall_s)
        except TimeoutError:
            raise Unprocessable(f"converting the document took longer than {self.limits.wall_s:g} s: it is too "
                                f"large or too complex; split it") from None
        except EOFError:
            child.join(5)
            raise Unprocessable(_death(child.exitcode, self.limits)) from None
        finally:
            if child.pid is not None:
                child.kill()
                await asyncio.to_thread(child.join, 5)
            receiving.close()
            shutil.rmtree(directory, ignore_errors=True)
        outcome, payload = message
        if outcome == "ok":
            return payload
        error_class, text = payload
        raise error_class(text)


async def _receive(connection) -> tuple:
    """The child's one message; EOFError when it died without one."""
    loop = asyncio.get_running_loop()
    readable = loop.create_future()
    loop.add_reader(connection.fileno(), lambda: readable.done() or readable.set_result(None))
    try:
        await readable
    finally:
        loop.remove_reader(connection.fileno())
    return await asyncio.to_thread(connection.recv)


def _death(exitcode: int | None, limits: ChildLimits) -> str:
    if exitcode in (-9, -24):  # SIGKILL, SIGXCPU: the CPU limit (or the kernel's out-of-memory killer)
        return (f"converting the document exceeded its limits ({limits.cpu_s} CPU seconds, "
                f"{limits.memory_mb} MB): it is too large or hostile")
    return "the document could not be converted: it is damaged or not what it claims"


def _child(connection, job: Job, limits: ChildLimits, directory: str) -> None:
    """In the child: limits first, then the work; one message back, the document's refusal or its result."""
    memory = limits.memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_s, limits.cpu_s + 1))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    os.environ["TMPDIR"] = directory
    tempfile.tempdir = directory
    os.chdir(directory)
    from services.documents.work import run

    try:
        message = ("ok", run(job))
    except InvalidInput as error:
        message = ("refused", (type(error), str(error)))
    except MemoryError:
        message = ("refused", (Unprocessable, f"converting the document needs more than {limits.memory_mb} MB: "
                                              f"it is too large or hostile"))
    except RecursionError:
        message = ("refused", (Unprocessable, "the document is nested too deeply to convert"))
    except Exception as error:  # noqa: BLE001 - whatever a hostile file makes a parser raise is the file's fault
        log.info("document conversion failed", extra={"error": type(error).__name__})
        message = ("refused", (Unprocessable, f"the document could not be converted ({type(error).__name__}): it "
                                              f"is damaged or not what it claims"))
    with contextlib.suppress(BrokenPipeError):
        connection.send(message)
    connection.close()
