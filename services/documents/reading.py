"""Bytes of a sniffed format into a DoclingDocument (runs in the conversion child, services/documents/isolation.py).

Office, web and text formats go through Docling's declarative backends, which is all Docling's simple pipeline
does for them; no layout or OCR weights are involved. A PDF is read from its text layer with pypdfium2, a page
at a time, blank-line separated paragraphs becoming paragraphs of that page. Plain text becomes paragraphs the
same way; a DoclingDocument's JSON is read as it is.
"""

import io
import re

from docling.backend.asciidoc_backend import AsciiDocBackend
from docling.backend.csv_backend import CsvDocumentBackend
from docling.backend.html_backend import HTMLDocumentBackend
from docling.backend.md_backend import MarkdownDocumentBackend
from docling.backend.msexcel_backend import MsExcelDocumentBackend
from docling.backend.mspowerpoint_backend import MsPowerpointDocumentBackend
from docling.backend.msword_backend import MsWordDocumentBackend
from docling.datamodel.base_models import InputFormat
from docling.datamodel.document import InputDocument
from docling_core.types.doc import BoundingBox, DocItemLabel, DoclingDocument, ProvenanceItem, Size

from services.documents.formats import TooLarge, Unprocessable, decoded

BACKENDS = {
    "markdown": (InputFormat.MD, MarkdownDocumentBackend),
    "html": (InputFormat.HTML, HTMLDocumentBackend),
    "asciidoc": (InputFormat.ASCIIDOC, AsciiDocBackend),
    "csv": (InputFormat.CSV, CsvDocumentBackend),
    "docx": (InputFormat.DOCX, MsWordDocumentBackend),
    "pptx": (InputFormat.PPTX, MsPowerpointDocumentBackend),
    "xlsx": (InputFormat.XLSX, MsExcelDocumentBackend),
}
PARAGRAPH_BREAK = re.compile(r"\n[ \t\r\f\v]*\n")
ENTITY_DECLARATION = re.compile(rb"<!ENTITY", re.IGNORECASE)


def read(content: bytes, format_: str, filename: str, max_pages: int) -> DoclingDocument:
    """The document; Unprocessable or TooLarge saying what is wrong with it."""
    if format_ == "pdf":
        return _pdf(content, filename, max_pages)
    if format_ == "text":
        return _paragraphs(DoclingDocument(name=filename), decoded(content))
    if format_ == "docling":
        try:
            return DoclingDocument.model_validate_json(content)
        except ValueError as error:
            raise Unprocessable(f"not a valid DoclingDocument: {str(error).splitlines()[0][:200]}") from None
    if format_ == "html" and ENTITY_DECLARATION.search(content):
        raise Unprocessable("the HTML declares entities (<!ENTITY ...>), which can expand without bound: remove "
                            "the DOCTYPE's internal subset")
    input_format, backend = BACKENDS[format_]
    document = InputDocument(path_or_stream=io.BytesIO(content), format=input_format, backend=backend,
                             filename=filename)
    if not document.valid:
        raise Unprocessable(f"Docling cannot read this {format_} document: it is damaged or not what it claims")
    try:
        return document._backend.convert()
    except (KeyError, ValueError, TypeError, IndexError, AttributeError, OSError, LookupError) as error:
        raise Unprocessable(f"Docling cannot read this {format_} document ({type(error).__name__}): it is "
                            f"damaged or not what it claims") from None


def _paragraphs(document: DoclingDocument, text: str, page: int | None = None,
                size: Size | None = None) -> DoclingDocument:
    for paragraph in PARAGRAPH_BREAK.split(text):
        if paragraph.strip():
            provenance = ([ProvenanceItem(page_no=page, bbox=BoundingBox(l=0, t=0, r=size.width, b=size.height),
                                          charspan=(0, len(paragraph)))] if page is not None else None)
            document.add_text(label=DocItemLabel.PARAGRAPH, text=paragraph.strip(), prov=provenance and provenance[0])
    return document


def _pdf(content: bytes, filename: str, max_pages: int) -> DoclingDocument:
    import pypdfium2

    try:
        pdf = pypdfium2.PdfDocument(content)
    except pypdfium2.PdfiumError:
        raise Unprocessable("the PDF cannot be opened: it is damaged, truncated or encrypted") from None
    try:
        if len(pdf) > max_pages:
            raise TooLarge(f"the PDF has {len(pdf)} pages; at most {max_pages} are allowed")
        document = DoclingDocument(name=filename)
        found_text = False
        for index in range(len(pdf)):
            page = pdf[index]
            width, height = page.get_size()
            size = Size(width=width, height=height)
            document.add_page(page_no=index + 1, size=size)
            text = page.get_textpage().get_text_bounded().replace("\r\n", "\n").replace("\r", "\n")
            found_text = found_text or bool(text.strip())
            _paragraphs(document, text, index + 1, size)
        if not found_text:
            raise Unprocessable("the PDF has no text layer (a scan?): reading it needs OCR model weights this "
                                "worker does not have")
        return document
    finally:
        pdf.close()
