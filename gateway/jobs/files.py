"""An uploaded batch file, checked whole before a line is stored: each line one request
`{"custom_id", "method": "POST", "url", "body"}`, its body validated by the same contract as the route it
names (gateway/json_routes.py), `custom_id`s unique, within the line and file limits. A bad file is refused at
upload with the line numbers and what to fix, not failed an hour into its batch.
"""

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from gateway.errors import ApiError
from gateway.jobs.store import PAGE_LINES
from gateway.json_routes import JsonRoute

# The routes a batch line may name: the tasks whose answers are worth computing offline.
BATCH_URLS = ("/v1/embeddings", "/v1/rerank", "/v1/classify", "/v1/chunk")
MAX_CUSTOM_ID_CHARS = 512
# Problems named in one refusal (each cut to PROBLEM_CHARS, so all fit the error's message); the count of the rest
# follows.
MAX_PROBLEMS = 8
PROBLEM_CHARS = 110


@dataclass(frozen=True)
class FileLimits:
    max_bytes: int
    max_lines: int
    max_line_bytes: int


@dataclass
class CheckedFile:
    """What the check learned: the lines' count and the routes they name."""

    lines: int
    endpoints: set[str]


def _lines(upload: BinaryIO) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, line) of every line with content; blank lines are skipped but counted."""
    upload.seek(0)
    for number, raw in enumerate(upload, 1):
        if raw.strip():
            yield number, raw.rstrip(b"\r\n")


def _problem(line: bytes, routes: dict[str, JsonRoute], limits: FileLimits) -> tuple[str | None, str, str | None]:
    """(custom_id, url, the problem or None) of one line."""
    if len(line) > limits.max_line_bytes:
        return None, "", f"{len(line)} bytes; a line (one request) may have at most {limits.max_line_bytes}"
    try:
        request = json.loads(line)
    except (ValueError, RecursionError):
        return None, "", "not a JSON object: each line is one {custom_id, method, url, body} request"
    if not isinstance(request, dict):
        return None, "", "not a JSON object: each line is one {custom_id, method, url, body} request"
    custom_id, url, body = request.get("custom_id"), request.get("url"), request.get("body")
    if not isinstance(custom_id, str) or not custom_id.strip() or len(custom_id) > MAX_CUSTOM_ID_CHARS:
        return None, "", f"custom_id must be a non-empty string of at most {MAX_CUSTOM_ID_CHARS} characters"
    if request.get("method") != "POST":
        return custom_id, "", "method must be \"POST\""
    if url not in routes:
        return custom_id, "", f"url {str(url)[:80]!r} is not one a batch runs: use one of {', '.join(routes)}"
    if not isinstance(body, dict):
        return custom_id, url, "body must be a JSON object: the request body of its url"
    try:
        routes[url].validate(body)
    except ApiError as error:
        return custom_id, url, f"body: {error.message}"
    return custom_id, url, None


def check(upload: BinaryIO, size: int, routes: dict[str, JsonRoute], limits: FileLimits) -> CheckedFile:
    """The file's lines checked; 400 naming the lines at fault (the first MAX_PROBLEMS), 413 past a limit."""
    if size > limits.max_bytes:
        raise ApiError(413, "request_too_large", f"the file has {size} bytes; a batch file may have at most "
                                                 f"{limits.max_bytes}")
    problems, seen, endpoints, count = [], {}, set(), 0
    for number, line in _lines(upload):
        count += 1
        if count > limits.max_lines:
            raise ApiError(413, "request_too_large", f"the file has more than {limits.max_lines} requests, the "
                                                     "most a batch may have: split it")
        custom_id, url, problem = _problem(line, routes, limits)
        if problem is None and custom_id in seen:
            problem = f"custom_id {custom_id[:80]!r} is already used on line {seen[custom_id]}"
        if problem is not None:
            problems.append(f"line {number}: {problem}"[:PROBLEM_CHARS])
            continue
        seen[custom_id] = number
        endpoints.add(url)
    if not count:
        raise ApiError(400, "invalid_request_error", "file: no requests; send one JSON request per line")
    if problems:
        more = f" (and {len(problems) - MAX_PROBLEMS} more lines)" if len(problems) > MAX_PROBLEMS else ""
        raise ApiError(400, "invalid_request_error",
                       f"file: {len(problems)} invalid lines{more}; " + "; ".join(problems[:MAX_PROBLEMS]))
    return CheckedFile(count, endpoints)


async def pages(upload: BinaryIO) -> AsyncIterator[list[tuple[int, str, str]]]:
    """A checked file's lines as the store keeps them: pages of (line_no, custom_id, line)."""
    page = []
    for number, line in _lines(upload):
        text = line.decode()
        page.append((number, json.loads(text)["custom_id"], text))
        if len(page) == PAGE_LINES:
            yield page
            page = []
    if page:
        yield page
