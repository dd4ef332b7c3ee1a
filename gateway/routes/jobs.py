"""OpenAI's Files and Batches API (`/v1/files`, `/v1/batches`): what the `openai` SDK's `files.*` and `batches.*`
call. Every file and batch belongs to the tenant that created it; another tenant's ids are unknown (404)."""

import asyncio
import re
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import ClientDisconnect

from gateway.errors import ApiError, documented_errors
from gateway.jobs import files
from gateway.jobs.store import CANCELLING, COMPLETION_WINDOW_S, FINISHED, JobStore, StoredFile
from gateway.responses import JSONResponse

FILES_PATH = "/v1/files"
MAX_LIST = 10_000
# The upload's small form fields (purpose); the file itself spools to disk past a megabyte.
MAX_FIELD_BYTES = 64 * 1024
UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]")
MAX_FILENAME_CHARS = 128


async def admitted(request: Request):
    """A job request counts against the tenant's request rate and concurrency like any request that is no task's
    call (the edge admits those it answers with GET and DELETE)."""
    state = request.scope["state"]
    admission = await request.app.state.tenants.admit(state["tenant"], 0, state.get("route", "other"))
    state.setdefault("response_headers", {}).update(admission.headers)
    try:
        yield
    finally:
        admission.release()


router = APIRouter(responses=documented_errors(400, 401, 404, 409, 413, 415, 422, 429))
ADMITTED = [Depends(admitted)]


async def _store(request: Request) -> JobStore:
    return await request.app.state.jobs.ready()


def _tenant(request: Request) -> str:
    return request.scope["state"]["tenant"].name


def _not_found(kind: str, id_: str) -> ApiError:
    return ApiError(404, "not_found_error", f"no {kind} {id_[:80]!r} (ids are per tenant)")


def _page(items: list, limit: int) -> dict:
    shown = items[:limit]
    return {"object": "list", "data": [item.as_openai() for item in shown],
            "first_id": shown[0].id if shown else None, "last_id": shown[-1].id if shown else None,
            "has_more": len(items) > limit}


@router.post(FILES_PATH, dependencies=ADMITTED, response_class=JSONResponse, status_code=200,
             openapi_extra={"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                 "type": "object", "required": ["file", "purpose"],
                 "properties": {"file": {"type": "string", "format": "binary"},
                                "purpose": {"type": "string", "enum": ["batch"]}}}}}}})
async def upload_file(request: Request):
    """Upload a JSONL batch file: one `{custom_id, method, url, body}` request per line, checked whole."""
    if request.headers.get("content-type", "").split(";", 1)[0].strip().lower() != "multipart/form-data":
        raise ApiError(415, "unsupported_media_type", "send the file as multipart/form-data: fields file, purpose")
    settings = request.app.state.settings
    try:
        form = await request.form(max_files=1, max_fields=4, max_part_size=MAX_FIELD_BYTES)
    except ClientDisconnect:
        raise ApiError(400, "invalid_request_error", "the upload ended before its last byte") from None
    try:
        upload, purpose = form.get("file"), form.get("purpose")
        if purpose != "batch":
            raise ApiError(400, "invalid_request_error", "purpose must be \"batch\"")
        if upload is None or isinstance(upload, str):
            raise ApiError(400, "invalid_request_error", "file: missing; send the JSONL file in the field `file`")
        routes = {url: request.app.state.json_routes[url] for url in files.BATCH_URLS
                  if url in request.app.state.json_routes}
        limits = files.FileLimits(settings.jobs_max_file_bytes, settings.jobs_max_lines, settings.max_body_bytes)
        checked = await asyncio.to_thread(files.check, upload.file, upload.size or 0, routes, limits)
        store = await _store(request)
        stored = await store.add_file(_tenant(request), purpose, _safe_filename(upload.filename), upload.size or 0,
                                      checked.endpoints, files.pages(upload.file))
    finally:
        await form.close()
    return JSONResponse(stored.as_openai())


def _safe_filename(name: str | None) -> str:
    """The client's file name as it is kept and sent back (a Content-Disposition header): plain characters."""
    return UNSAFE_FILENAME.sub("_", name or "")[:MAX_FILENAME_CHARS] or "batch.jsonl"


@router.get(FILES_PATH, response_class=JSONResponse)
async def list_files(request: Request, purpose: str | None = None,
                     limit: Annotated[int, Query(ge=1, le=MAX_LIST)] = MAX_LIST, after: str | None = None,
                     order: Literal["asc", "desc"] = "desc"):
    store = await _store(request)
    found = await store.files(_tenant(request), limit + 1, after, purpose, order == "desc")
    return JSONResponse(_page(found, limit))


async def _file(request: Request, file_id: str) -> StoredFile:
    stored = await (await _store(request)).file(_tenant(request), file_id)
    if stored is None:
        raise _not_found("file", file_id)
    return stored


@router.get(FILES_PATH + "/{file_id}", response_class=JSONResponse)
async def retrieve_file(file_id: str, request: Request):
    return JSONResponse((await _file(request, file_id)).as_openai())


@router.get(FILES_PATH + "/{file_id}/content")
async def file_content(file_id: str, request: Request):
    """The file's JSONL: an upload as it came, a batch's output or errors in line order."""
    stored = await _file(request, file_id)
    store = await _store(request)

    async def lines():
        async for line in store.content(stored):
            yield line.encode() + b"\n"

    return StreamingResponse(lines(), media_type="application/jsonl",
                             headers={"Content-Disposition": f'attachment; filename="{stored.filename}"'})


@router.delete(FILES_PATH + "/{file_id}", response_class=JSONResponse)
async def delete_file(file_id: str, request: Request):
    if not await (await _store(request)).delete_file(_tenant(request), file_id):
        raise _not_found("file", file_id)
    return JSONResponse({"id": file_id, "object": "file", "deleted": True})


class BatchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    input_file_id: str = Field(max_length=128, description="An uploaded file (purpose batch).")
    endpoint: Literal[files.BATCH_URLS] = Field(description="The url every line of the file names.")
    completion_window: Literal[tuple(COMPLETION_WINDOW_S)] = Field(
        description="Lines not answered within it end the batch as `expired`.")
    metadata: dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=512)]] | None = Field(
        None, max_length=16, description="Up to 16 string pairs, returned with the batch.")


@router.post("/v1/batches", dependencies=ADMITTED, response_class=JSONResponse)
async def create_batch(body: BatchRequest, request: Request):
    store = await _store(request)
    stored = await _file(request, body.input_file_id)
    if stored.purpose != "batch" or stored.batch_id is not None:
        raise ApiError(400, "invalid_request_error", f"input_file_id {stored.id!r} is not a file uploaded with "
                                                     "purpose \"batch\"")
    endpoints = await store.file_endpoints(stored.id)
    if endpoints != {body.endpoint}:
        raise ApiError(400, "invalid_request_error", f"the file's lines name {', '.join(sorted(endpoints))}; a "
                                                     f"batch runs one endpoint ({body.endpoint}): split the file")
    batch = await store.create_batch(_tenant(request), stored.id, body.endpoint, body.completion_window,
                                     body.metadata)
    request.app.state.jobs.runner.wake()
    return JSONResponse(batch.as_openai())


@router.get("/v1/batches", response_class=JSONResponse)
async def list_batches(request: Request, limit: Annotated[int, Query(ge=1, le=100)] = 20, after: str | None = None):
    found = await (await _store(request)).batches(_tenant(request), limit + 1, after)
    return JSONResponse(_page(found, limit))


@router.get("/v1/batches/{batch_id}", response_class=JSONResponse)
async def retrieve_batch(batch_id: str, request: Request):
    batch = await (await _store(request)).batch(_tenant(request), batch_id)
    if batch is None:
        raise _not_found("batch", batch_id)
    return JSONResponse(batch.as_openai())


@router.post("/v1/batches/{batch_id}/cancel", dependencies=ADMITTED, response_class=JSONResponse)
async def cancel_batch(batch_id: str, request: Request):
    """Stop a batch: lines already answered stay in its output; it ends `cancelled`."""
    batch = await (await _store(request)).cancel(_tenant(request), batch_id)
    if batch is None:
        raise _not_found("batch", batch_id)
    if batch.status in FINISHED and batch.cancelling_at is None:
        raise ApiError(409, "invalid_state", f"batch {batch_id!r} is already {batch.status}; only a batch still "
                                             "validating or in progress can be cancelled")
    if batch.status == CANCELLING:
        request.app.state.jobs.runner.wake()
    return JSONResponse(batch.as_openai())
