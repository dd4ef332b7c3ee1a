"""One document's work, as its conversion child runs it: read, then chunk or export."""

from services.documents.chunking import chunk
from services.documents.formats import SOURCE_FORMATS, TooLarge, decoded
from services.documents.job import Job
from services.documents.reading import read


def run(job: Job) -> dict:
    """{"pages", "chunks"} when chunking, {"pages", "markdown", "text", "docling_json"} when converting."""
    document = read(job.content, job.format, job.filename, job.max_pages)
    pages = len(document.pages)
    if job.tokenizer_json is not None:
        source = decoded(job.content) if job.format in SOURCE_FORMATS else None
        return {"pages": pages, "chunks": chunk(document, source, job.tokenizer_json, job.max_tokens, job.overlap,
                                                job.max_chunks)}
    exported = {"pages": pages, "markdown": document.export_to_markdown(), "text": document.export_to_text(),
                "docling_json": document.model_dump_json()}
    size = sum(len(value) for key, value in exported.items() if key != "pages")
    if size > job.max_export_bytes:
        raise TooLarge(f"the converted document takes {size} bytes; at most {job.max_export_bytes} can be returned")
    return exported

