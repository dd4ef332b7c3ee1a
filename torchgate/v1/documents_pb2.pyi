from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Source(_message.Message):
    __slots__ = ("content", "filename", "format")
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    FILENAME_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    content: bytes
    filename: str
    format: str
    def __init__(self, content: _Optional[bytes] = ..., filename: _Optional[str] = ..., format: _Optional[str] = ...) -> None: ...

class ChunkRequest(_message.Message):
    __slots__ = ("source", "model", "fingerprint", "max_tokens", "overlap")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OVERLAP_FIELD_NUMBER: _ClassVar[int]
    source: Source
    model: str
    fingerprint: str
    max_tokens: int
    overlap: int
    def __init__(self, source: _Optional[_Union[Source, _Mapping]] = ..., model: _Optional[str] = ..., fingerprint: _Optional[str] = ..., max_tokens: _Optional[int] = ..., overlap: _Optional[int] = ...) -> None: ...

class Chunk(_message.Message):
    __slots__ = ("index", "text", "contextualized_text", "tokens", "start", "end", "headings", "pages")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    CONTEXTUALIZED_TEXT_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    HEADINGS_FIELD_NUMBER: _ClassVar[int]
    PAGES_FIELD_NUMBER: _ClassVar[int]
    index: int
    text: str
    contextualized_text: str
    tokens: int
    start: int
    end: int
    headings: _containers.RepeatedScalarFieldContainer[str]
    pages: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, index: _Optional[int] = ..., text: _Optional[str] = ..., contextualized_text: _Optional[str] = ..., tokens: _Optional[int] = ..., start: _Optional[int] = ..., end: _Optional[int] = ..., headings: _Optional[_Iterable[str]] = ..., pages: _Optional[_Iterable[int]] = ...) -> None: ...

class ChunkResponse(_message.Message):
    __slots__ = ("model", "format", "chunks", "pages")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    PAGES_FIELD_NUMBER: _ClassVar[int]
    model: str
    format: str
    chunks: _containers.RepeatedCompositeFieldContainer[Chunk]
    pages: int
    def __init__(self, model: _Optional[str] = ..., format: _Optional[str] = ..., chunks: _Optional[_Iterable[_Union[Chunk, _Mapping]]] = ..., pages: _Optional[int] = ...) -> None: ...

class ConvertRequest(_message.Message):
    __slots__ = ("source",)
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    source: Source
    def __init__(self, source: _Optional[_Union[Source, _Mapping]] = ...) -> None: ...

class ConvertResponse(_message.Message):
    __slots__ = ("format", "markdown", "text", "docling_json", "pages")
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    MARKDOWN_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    DOCLING_JSON_FIELD_NUMBER: _ClassVar[int]
    PAGES_FIELD_NUMBER: _ClassVar[int]
    format: str
    markdown: str
    text: str
    docling_json: str
    pages: int
    def __init__(self, format: _Optional[str] = ..., markdown: _Optional[str] = ..., text: _Optional[str] = ..., docling_json: _Optional[str] = ..., pages: _Optional[int] = ...) -> None: ...

class DocumentsInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DocumentsInfo(_message.Message):
    __slots__ = ("version", "formats", "max_document_bytes", "max_pages", "embedding_models")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    FORMATS_FIELD_NUMBER: _ClassVar[int]
    MAX_DOCUMENT_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_PAGES_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_MODELS_FIELD_NUMBER: _ClassVar[int]
    version: str
    formats: _containers.RepeatedScalarFieldContainer[str]
    max_document_bytes: int
    max_pages: int
    embedding_models: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, version: _Optional[str] = ..., formats: _Optional[_Iterable[str]] = ..., max_document_bytes: _Optional[int] = ..., max_pages: _Optional[int] = ..., embedding_models: _Optional[_Iterable[str]] = ...) -> None: ...
