"""POST /v1/chunk (ours: JSON or multipart) and Docling Serve's POST /v1/chunk/hybrid/file, /v1/chunk/hybrid/source
and /v1/convert/file: each translates its body into the chunk or convert task's call (gateway/tasks/documents.py)."""

import base64
import binascii
import json
import time
from typing import Annotated, ClassVar, Literal

from fastapi import APIRouter, Request
from pydantic import Field
from pydantic.json_schema import SkipJsonSchema

from gateway import pipeline
from gateway.contract import LIMIT_KEY, NON_BLANK, UINT32_MAX, ModelRequest, Name, RequestBody, json_int
from gateway.errors import MODEL_ROUTE_ERRORS, ApiError
from gateway.responses import JSONResponse
from gateway.tasks.documents import CHUNK, CONVERT, ChunkCall, Chunked, ConvertCall

router = APIRouter(responses=MODEL_ROUTE_ERRORS)

TextFormat = Literal["text", "markdown", "html", "asciidoc", "csv", "docling"]
ExportFormat = Literal["md", "json", "text"]


MAX_TOKENS_LIMIT = {LIMIT_KEY: "embedding.max_tokens"}


class ChunkRequest(ModelRequest):
    """JSON carries the document as `input`; multipart/form-data as the `file` part (form_contract)."""

    FORM_FILE: ClassVar[str] = "file"
    TEXT_FIELD: ClassVar[str] = "input"

    input: Annotated[str, Field(min_length=1, pattern=NON_BLANK, description="The document as text (in `format`); "
                                                                              "or send `file`.")] | None = None
    file: bytes | None = Field(None, description="The file (PDF, DOCX, PPTX, XLSX, HTML, Markdown, AsciiDoc, CSV, "
                                                 "text), its type read from its bytes.")
    file_filename: SkipJsonSchema[str] = Field("", max_length=255)  # the multipart part's filename
    format: TextFormat | None = Field(None, description="How to read `input` (default markdown), or a text file.")
    max_tokens: json_int(1, UINT32_MAX) | None = Field(
        None, json_schema_extra=MAX_TOKENS_LIMIT,
        description="Most tokens of a chunk's contextualized_text by the model's tokenizer, special tokens "
                    "included; default and most: the model's window.")
    overlap: json_int(0, UINT32_MAX) = Field(
        0, description="Tokens of the previous chunk repeated at a chunk's start; at most under half of max_tokens.")
    embed: bool = Field(False, description="Also embed each chunk's contextualized_text (as /v1/embeddings would).")
    user: Name | None = Field(None, description="The end user: keeps them on one version of a model alias.")

    def content(self) -> bytes:
        if (self.input is None) == (self.file is None):
            raise ApiError(422, "invalid_request_error", "send the document as `input` (text) or as a multipart "
                                                         "`file`, exactly one")
        return self.file if self.file is not None else self.input.encode()


def _chunk_call(request: Request, content: bytes, filename: str, format_: str, model: str | None,
                max_tokens: int | None, overlap: int, embed: bool, timeout: float | None = None,
                user: str | None = None) -> ChunkCall:
    return ChunkCall(content=content, filename=filename, format=format_, model=model, user=user, timeout=timeout,
                     max_tokens=max_tokens or 0, overlap=overlap, embed=embed,
                     documents=pipeline.upstream(request, "documents"))


@router.post("/v1/chunk", response_class=JSONResponse)
async def chunk(body: ChunkRequest, request: Request):
    """A document in, its chunks out: structure first, then bounded by the served model's tokenizer."""
    content = body.content()
    chunked = await pipeline.run(request, CHUNK, _chunk_call(
        request, content, body.file_filename, body.format or ("" if body.file is not None else "markdown"),
        body.model, body.max_tokens, body.overlap, body.embed, body.timeout, body.user))
    data = []
    for chunk, vector in zip(chunked.chunks, _vectors(chunked), strict=True):
        item = {"index": chunk.index, "text": chunk.text, "contextualized_text": chunk.contextualized_text,
                "tokens": chunk.tokens, "start": chunk.start if chunk.HasField("start") else None,
                "end": chunk.end if chunk.HasField("end") else None, "headings": list(chunk.headings),
                "pages": list(chunk.pages)}
        if vector is not None:
            item["embedding"] = vector
        data.append(item)
    return JSONResponse({"object": "list", "model": chunked.model, "format": chunked.format, "pages": chunked.pages,
                         "data": data, "usage": {"prompt_tokens": chunked.tokens, "total_tokens": chunked.tokens}})


def _vectors(chunked: Chunked) -> list:
    return list(chunked.vectors) if chunked.vectors is not None else [None] * len(chunked.chunks)


class DoclingFileRequest(RequestBody):
    """Docling Serve's multipart fields (the ones that apply here; the others are accepted and ignored)."""

    FORM_FILE: ClassVar[str] = "files"

    files: bytes = Field(description="The file (one per request here).")
    files_filename: SkipJsonSchema[str] = ""
    chunking_max_tokens: json_int(1, UINT32_MAX) | None = Field(None, json_schema_extra=MAX_TOKENS_LIMIT,
                                                                description="Most tokens of a chunk.")
    chunking_tokenizer: Name | None = Field(None, description="The served embedding model whose tokenizer bounds "
                                                              "the chunks (default: the default model).")
    chunking_include_raw_text: bool = Field(True, description="Add each chunk's text without its headings.")
    to_formats: ExportFormat | list[ExportFormat] = Field("md", description="/v1/convert/file: md, json and/or "
                                                                           "text.")

    def one_file(self) -> tuple[bytes, str]:
        return self.files, self.files_filename


class DoclingSource(RequestBody):
    kind: Literal["file", "http"]
    base64_string: str = ""
    filename: str = Field("document", max_length=255)
    url: str = ""


class DoclingChunkingOptions(RequestBody):
    max_tokens: json_int(1, UINT32_MAX) | None = Field(None, json_schema_extra=MAX_TOKENS_LIMIT)
    tokenizer: Name | None = None
    include_raw_text: bool = True


class DoclingSourceRequest(RequestBody):
    sources: list[DoclingSource] = Field(min_length=1, max_length=1, description="One source per request here.")
    chunking_options: DoclingChunkingOptions = Field(default_factory=DoclingChunkingOptions)

    def one_file(self) -> tuple[bytes, str]:
        source = self.sources[0]
        if source.kind != "file":
            raise ApiError(400, "invalid_request_error", "sources.0: the gateway does not fetch URLs; send the "
                                                         "file as {kind: file, base64_string, filename}")
        try:
            return base64.b64decode(source.base64_string, validate=True), source.filename
        except (binascii.Error, ValueError):
            raise ApiError(400, "invalid_request_error", "sources.0.base64_string: not valid base64") from None


@router.post("/v1/chunk/hybrid/file", response_class=JSONResponse)
async def docling_chunk_file(body: DoclingFileRequest, request: Request):
    """Docling Serve's hybrid chunking of an uploaded file."""
    content, filename = body.one_file()
    return await _docling_chunks(request, content, filename, body.chunking_tokenizer, body.chunking_max_tokens,
                                 body.chunking_include_raw_text)


@router.post("/v1/chunk/hybrid/source", response_class=JSONResponse)
async def docling_chunk_source(body: DoclingSourceRequest, request: Request):
    """Docling Serve's hybrid chunking of a base64 file source."""
    content, filename = body.one_file()
    options = body.chunking_options
    return await _docling_chunks(request, content, filename, options.tokenizer, options.max_tokens,
                                 options.include_raw_text)


async def _docling_chunks(request: Request, content: bytes, filename: str, model: str | None,
                          max_tokens: int | None, include_raw_text: bool) -> JSONResponse:
    started = time.perf_counter()
    chunked = await pipeline.run(request, CHUNK, _chunk_call(request, content, filename, "", model, max_tokens, 0,
                                                             False))
    chunks = [{"filename": filename, "chunk_index": chunk.index, "text": chunk.contextualized_text,
               "raw_text": chunk.text if include_raw_text else None, "num_tokens": chunk.tokens,
               "headings": list(chunk.headings) or None, "captions": None, "doc_items": [],
               "page_numbers": list(chunk.pages) or None, "metadata": None} for chunk in chunked.chunks]
    return JSONResponse({"chunks": chunks, "documents": [_export(filename, {})],
                         "processing_time": time.perf_counter() - started})


@router.post("/v1/convert/file", response_class=JSONResponse)
async def docling_convert_file(body: DoclingFileRequest, request: Request):
    """Docling Serve's conversion of an uploaded file to Markdown, Docling's JSON and/or text."""
    started = time.perf_counter()
    content, filename = body.one_file()
    formats = set(body.to_formats if isinstance(body.to_formats, list) else [body.to_formats])
    converted = await pipeline.run(request, CONVERT, ConvertCall(content=content, filename=filename))
    reply = converted.reply
    exported = _export(filename, {"md_content": reply.markdown if "md" in formats else None,
                                  "json_content": json.loads(reply.docling_json) if "json" in formats else None,
                                  "text_content": reply.text if "text" in formats else None})
    return JSONResponse({"document": exported["content"], "status": "success", "errors": [],
                         "processing_time": time.perf_counter() - started, "timings": {}})


def _export(filename: str, content: dict) -> dict:
    return {"kind": "ExportResult", "status": "success", "errors": [], "timings": {},
            "content": {"filename": filename, "md_content": None, "json_content": None, "html_content": None,
                        "text_content": None, "doctags_content": None, **content}}
