"""POST /v1/chunk (ours: JSON or multipart) and Docling Serve's POST /v1/chunk/hybrid/file, /v1/chunk/hybrid/source
and /v1/convert/file: each translates its body into the chunk or convert task's call (gateway/tasks/documents.py)."""

import base64
import binascii
import json
import time
from typing import Any, ClassVar, Literal

from fastapi import APIRouter, Request
from pydantic import Field, model_validator

from gateway import pipeline
from gateway.contract import UINT32_MAX, ModelRequest, Name, RequestBody, json_int
from gateway.errors import MODEL_ROUTE_ERRORS, ApiError
from gateway.responses import JSONResponse
from gateway.tasks.documents import CHUNK, CONVERT, ChunkCall, Chunked, ConvertCall

router = APIRouter(responses=MODEL_ROUTE_ERRORS)

TextFormat = Literal["text", "markdown", "html", "asciidoc", "csv", "docling"]


class ChunkRequest(ModelRequest):
    ACCEPTS_FORM: ClassVar[bool] = True

    input: str | None = Field(None, min_length=1, description="The document as text (in `format`); or send `file`.")
    file: bytes | None = Field(None, description="multipart/form-data only: the file (PDF, DOCX, PPTX, XLSX, HTML, "
                                                 "Markdown, AsciiDoc, CSV, text), its type read from its bytes.")
    file_filename: str = Field("", max_length=255, description="Set from the multipart part's filename.")
    format: TextFormat | None = Field(None, description="How to read `input` (default markdown), or a text file.")
    max_tokens: json_int(1, UINT32_MAX) | None = Field(
        None, description="Most tokens of a chunk's contextualized_text by the model's tokenizer, special tokens "
                          "included; default and most: the model's window.")
    overlap: json_int(0, UINT32_MAX) = Field(0, description="Tokens of the previous chunk repeated at a chunk's start.")
    embed: bool = Field(False, description="Also embed each chunk's contextualized_text (as /v1/embeddings would).")
    user: Name | None = Field(None, description="The end user: keeps them on one version of a model alias.")

    @model_validator(mode="after")
    def one_source(self):
        if (self.input is None) == (self.file is None):
            raise ValueError("send the document as `input` (text) or as a multipart `file`, exactly one")
        return self


def _chunk_call(request: Request, content: bytes, filename: str, format_: str, model: str | None,
                max_tokens: int | None, overlap: int, embed: bool, timeout: float | None = None,
                user: str | None = None) -> ChunkCall:
    return ChunkCall(content=content, filename=filename, format=format_, model=model, user=user, timeout=timeout,
                     max_tokens=max_tokens or 0, overlap=overlap, embed=embed,
                     documents=pipeline.upstream(request, "documents"))


@router.post("/v1/chunk", response_class=JSONResponse)
async def chunk(body: ChunkRequest, request: Request):
    """A document in, its chunks out: structure first, then bounded by the served model's tokenizer."""
    content = body.file if body.file is not None else body.input.encode()
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

    ACCEPTS_FORM: ClassVar[bool] = True

    files: bytes | list[bytes] = Field(description="The file (one per request here).")
    files_filename: str | list[str] = ""
    chunking_max_tokens: json_int(1, UINT32_MAX) | None = Field(None, description="Most tokens of a chunk.")
    chunking_tokenizer: Name | None = Field(None, description="The served embedding model whose tokenizer bounds "
                                                              "the chunks (default: the default model).")
    chunking_include_raw_text: bool = Field(True, description="Add each chunk's text without its headings.")
    to_formats: str | list[str] = Field("md", description="/v1/convert/file: md, json and/or text.")

    def one_file(self) -> tuple[bytes, str]:
        files = self.files if isinstance(self.files, list) else [self.files]
        names = self.files_filename if isinstance(self.files_filename, list) else [self.files_filename]
        if len(files) != 1:
            raise ApiError(400, "invalid_request_error", f"send one file per request ({len(files)} were sent)")
        return files[0], names[0]


class DoclingSource(RequestBody):
    kind: Literal["file", "http"]
    base64_string: str = ""
    filename: str = Field("document", max_length=255)
    url: str = ""


class DoclingChunkingOptions(RequestBody):
    max_tokens: json_int(1, UINT32_MAX) | None = None
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
    unknown = formats - {"md", "json", "text"}
    if unknown:
        raise ApiError(400, "invalid_request_error", f"to_formats: {', '.join(sorted(unknown))[:80]} not supported "
                                                     f"here; md, json and text are")
    converted = await pipeline.run(request, CONVERT, ConvertCall(content=content, filename=filename))
    reply = converted.reply
    exported = _export(filename, {"md_content": reply.markdown if "md" in formats else None,
                                  "json_content": _json(reply.docling_json) if "json" in formats else None,
                                  "text_content": reply.text if "text" in formats else None})
    return JSONResponse({"document": exported["content"], "status": "success", "errors": [],
                         "processing_time": time.perf_counter() - started, "timings": {}})


def _json(text: str) -> Any:
    return json.loads(text)


def _export(filename: str, content: dict) -> dict:
    return {"kind": "ExportResult", "status": "success", "errors": [], "timings": {},
            "content": {"filename": filename, "md_content": None, "json_content": None, "html_content": None,
                        "text_content": None, "doctags_content": None, **content}}
