"""What a document is, read from its bytes (never from its name), and the refusals that say why not.

Binary formats are told by their signatures; a ZIP archive by the parts its directory names (DOCX, PPTX, XLSX),
whose declared sizes are summed before anything unpacks. Text is what decodes as UTF-8; among the text formats
the caller's `format` decides, else the markup (HTML, a DoclingDocument's JSON), else Markdown.
"""

import io
import json
import zipfile

from services.runtime.errors import InvalidInput

TEXT_FORMATS = ("text", "markdown", "html", "asciidoc", "csv", "docling")
BINARY_FORMATS = ("pdf", "docx", "pptx", "xlsx")
FORMATS = TEXT_FORMATS + BINARY_FORMATS
# The text formats with a source whose characters the chunks index (start/end).
SOURCE_FORMATS = ("text", "markdown")

# The part of an Office archive that says which application wrote it.
_OFFICE_PARTS = {"word/document.xml": "docx", "ppt/presentation.xml": "pptx", "xl/workbook.xml": "xlsx"}
_IMAGE_SIGNATURES = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"II*\x00", b"MM\x00*", b"BM")
_OLE2 = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
_HTML_MARKERS = ("<!doctype html", "<html", "<head", "<body", "<h1", "<p>", "<div", "<table")


class UnsupportedType(InvalidInput):
    reason = "unsupported_media_type"


class Unprocessable(InvalidInput):
    reason = "unprocessable_document"


class TooLarge(InvalidInput):
    reason = "document_too_large"


def sniff(content: bytes, declared: str, max_decompressed_bytes: int) -> str:
    """The format `content` is read as; `declared` (a caller's format) only chooses among text formats."""
    if declared and declared not in FORMATS:
        raise InvalidInput(f"format {declared[:40]!r} is not one of: {', '.join(TEXT_FORMATS)} (files of the other "
                           f"formats, {', '.join(BINARY_FORMATS)}, are recognised from their bytes)")
    if not content.strip():
        raise Unprocessable("the document is empty: send a file or text with content")
    binary = _binary_format(content, max_decompressed_bytes)
    if binary:
        return binary
    text = decoded(content)
    if declared and declared in TEXT_FORMATS:
        return declared
    head = text.lstrip()[:1024].lower()
    if head.startswith("{") and _is_docling_json(text):
        return "docling"
    if any(marker in head for marker in _HTML_MARKERS):
        return "html"
    return "markdown"


def decoded(content: bytes) -> str:
    """The bytes as UTF-8 text, or 415: binary data of no supported type."""
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UnsupportedType("the document is neither UTF-8 text nor a PDF, DOCX, PPTX or XLSX file (its "
                              "bytes tell no supported type)") from None
    if "\x00" in text:
        raise UnsupportedType("the document holds NUL characters: binary data of no supported type")
    return text


def _binary_format(content: bytes, max_decompressed_bytes: int) -> str | None:
    if content.startswith(b"%PDF-"):
        return "pdf"
    if content.startswith(b"PK\x03\x04"):
        return _office_format(content, max_decompressed_bytes)
    if content.startswith(_IMAGE_SIGNATURES) or content[8:12] == b"WEBP":
        raise Unprocessable("the document is an image: reading its text needs OCR model weights this worker "
                            "does not have; send a PDF with a text layer or the text itself")
    if content.startswith(_OLE2):
        raise UnsupportedType("legacy Office files (doc, xls, ppt) are not supported: save it as DOCX, XLSX or "
                              "PPTX")
    return None


def _office_format(content: bytes, max_decompressed_bytes: int) -> str:
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as archive:
            entries = archive.infolist()
    except (zipfile.BadZipFile, ValueError, EOFError):
        raise Unprocessable("the document is a damaged ZIP archive (truncated or corrupt): send the whole file") \
            from None
    unpacked = sum(entry.file_size for entry in entries)
    if unpacked > max_decompressed_bytes:
        raise TooLarge(f"the archive unpacks to {unpacked} bytes; at most {max_decompressed_bytes} are allowed")
    names = {entry.filename for entry in entries}
    for part, format_ in _OFFICE_PARTS.items():
        if part in names:
            return format_
    raise UnsupportedType("the document is a ZIP archive but no DOCX, PPTX or XLSX file")


def _is_docling_json(text: str) -> bool:
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):
        return False
    return isinstance(document, dict) and document.get("schema_name") == "DoclingDocument"
