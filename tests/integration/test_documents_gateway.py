"""/v1/chunk and Docling Serve's routes through a real gateway, a real documents worker and the real bundled
MiniLM: chunks bounded by the served tokenizer (counted by the gateway's own /tokenize), vectors equal to
/v1/embeddings', hostile files refused while embeddings keep answering, the worker's memory back at its baseline."""

import asyncio
import base64
import hashlib
import os

import httpx
import numpy as np
import pytest
import yaml

from gateway.app import create_app
from gateway.config import (
    ClassifierUpstream,
    DocumentsUpstream,
    EmbeddingUpstream,
    GatewaySettings,
    GpuUpstream,
    RerankingUpstream,
)
from services.documents.servicer import build as build_documents
from services.documents.settings import DocumentsSettings
from tests.network import refusing_port
from tests.unit.documents.documents_files import BILLION_LAUGHS_HTML, docx_file, pdf_file, zip_bomb_docx
from tests.workers import started

MARKDOWN = "\n\n".join(
    ["# Handbook", "Welcome to the team handbook. " * 6]
    + [part for n in range(1, 9) for part in (f"## Chapter {n}", " ".join(
        f"Chapter {n} sentence {i} explains how the on-call rotation, reviews and deployments work."
        for i in range(14)))])


@pytest.fixture(scope="module")
async def documents_worker(embedding_worker):
    settings = DocumentsSettings(port=0, metrics_port=0, grace_period_s=1, conversions=2,
                                 embedding_addresses=f"127.0.0.1:{embedding_worker.port}",
                                 max_document_bytes=4 * 1024 * 1024)
    worker = await started(build_documents(settings))
    yield worker
    await worker.stop(0)


DOORS = {
    "/v1/chunk": lambda pdf, model: {"files": {"file": ("a.pdf", pdf)}, "data": {"model": model}},
    "/v1/chunk/hybrid/file": lambda pdf, model: {"files": {"files": ("a.pdf", pdf)},
                                                 "data": {"chunking_tokenizer": model}},
    "/v1/chunk/hybrid/source": lambda pdf, model: {"json": {
        "sources": [{"kind": "file", "base64_string": base64.b64encode(pdf).decode(), "filename": "a.pdf"}],
        "chunking_options": {"tokenizer": model}}},
    "/v1/convert/file": lambda pdf, model: {"files": {"files": ("a.pdf", pdf)}},
}
KEYS = {"open": {}, "requests": {"requests_per_second": 0.001, "burst": 1}}


@pytest.fixture(scope="module")
async def gateway(embedding_worker, documents_worker, tmp_path_factory):
    dead = f"127.0.0.1:{refusing_port()}"
    tenants_file = tmp_path_factory.mktemp("tenants") / "tenants.yaml"
    tenants_file.write_text(yaml.safe_dump({"tenants": {
        f"{kind}-{path}": {"keys_sha256": [hashlib.sha256(f"{kind}-{path}".encode()).hexdigest()], **limits}
        for path in [*DOORS, "other"] for kind, limits in KEYS.items()}}))
    settings = GatewaySettings(embedding=EmbeddingUpstream(addresses=f"127.0.0.1:{embedding_worker.port}"),
                               documents=DocumentsUpstream(addresses=f"127.0.0.1:{documents_worker.port}"),
                               reranking=RerankingUpstream(addresses=dead),
                               classifier=ClassifierUpstream(addresses=dead),
                               gpu=GpuUpstream(addresses=dead), cache=False, max_body_bytes=2 * 1024 * 1024,
                               tenants_file=str(tenants_file))
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway",
                                     timeout=60, headers={"Authorization": "Bearer open-other"}) as client:
            client.app = app
            yield client


async def served_tokens(gateway, texts: list[str]) -> list[int]:
    reply = await gateway.post("/tokenize", json={"inputs": texts})
    assert reply.status_code == 200, reply.text
    return [len(tokens) for tokens in reply.json()]


async def test_markdown_chunks_fit_the_served_tokenizer_and_embed_as_embeddings_do(gateway):
    reply = await gateway.post("/v1/chunk", json={"input": MARKDOWN, "max_tokens": 64, "embed": True})
    assert reply.status_code == 200, reply.text
    answer = reply.json()
    chunks = answer["data"]
    assert answer["model"] == "sentence-transformers/all-MiniLM-L6-v2" and len(chunks) > 8
    counted = await served_tokens(gateway, [chunk["contextualized_text"] for chunk in chunks])
    assert counted == [chunk["tokens"] for chunk in chunks] and max(counted) <= 64
    assert all(MARKDOWN[chunk["start"]:chunk["end"]] == chunk["text"] for chunk in chunks)
    for n in range(1, 9):
        body = MARKDOWN.index(f"Chapter {n} sentence 0")
        assert any(f"Chapter {n}" in chunk["headings"] and chunk["start"] <= body < chunk["end"] for chunk in chunks)
    embedded = await gateway.post("/v1/embeddings", json={"input": [chunk["contextualized_text"] for chunk in chunks]})
    expected = np.array([item["embedding"] for item in embedded.json()["data"]])
    np.testing.assert_allclose(np.array([chunk["embedding"] for chunk in chunks]), expected, atol=1e-6)
    assert answer["usage"]["prompt_tokens"] == embedded.json()["usage"]["prompt_tokens"]


async def test_a_docx_upload_keeps_every_paragraph(gateway):
    paragraphs = [("h1", "Quarterly review"), *[("p", f"Paragraph {i} reports figure {i * 17} for region {i}.")
                                                for i in range(12)], ("h2", "Next steps"), ("p", "Hire two people.")]
    reply = await gateway.post("/v1/chunk", files={"file": ("review.docx", docx_file(paragraphs))},
                               data={"max_tokens": "48"})
    assert reply.status_code == 200, reply.text
    text = " ".join(chunk["text"] for chunk in reply.json()["data"])
    assert reply.json()["format"] == "docx"
    assert all(paragraph in text for style, paragraph in paragraphs if style == "p")


async def test_docling_serve_clients_get_its_shapes(gateway):
    pdf = pdf_file(["The first page talks about rivers.", "The second page talks about mountains."])
    by_file = await gateway.post("/v1/chunk/hybrid/file", files={"files": ("atlas.pdf", pdf)},
                                 data={"chunking_max_tokens": "32"})
    assert by_file.status_code == 200, by_file.text
    chunk = by_file.json()["chunks"][0]
    assert {"filename", "chunk_index", "text", "raw_text", "num_tokens", "headings", "page_numbers"} <= set(chunk)
    assert chunk["filename"] == "atlas.pdf" and chunk["page_numbers"]
    by_source = await gateway.post("/v1/chunk/hybrid/source", json={
        "sources": [{"kind": "file", "base64_string": base64.b64encode(pdf).decode(), "filename": "atlas.pdf"}],
        "chunking_options": {"max_tokens": 32}})
    assert by_source.json()["chunks"] == by_file.json()["chunks"]
    converted = await gateway.post("/v1/convert/file", files={"files": ("atlas.pdf", pdf)},
                                   data={"to_formats": ["md", "json"]})
    assert converted.status_code == 200, converted.text
    document = converted.json()["document"]
    assert "mountains" in document["md_content"] and document["json_content"]["schema_name"] == "DoclingDocument"


async def test_limits_are_errors_that_say_what_to_fix(gateway):
    too_many = await gateway.post("/v1/chunk", json={"input": "some text", "max_tokens": 100000})
    assert too_many.status_code == 400 and "at most 256" in too_many.json()["error"]["message"]
    capped = await gateway.post("/v1/chunk", json={"input": MARKDOWN, "overlap": 4000, "max_tokens": 64})
    assert capped.status_code == 200 and max(chunk["tokens"] for chunk in capped.json()["data"]) <= 64
    neither = await gateway.post("/v1/chunk", json={"format": "markdown"})
    assert neither.status_code == 422 and "exactly one" in neither.text
    huge = await gateway.post("/v1/chunk", files={"file": ("one-line.txt", b"x" * (3 * 1024 * 1024))})
    assert huge.status_code == 413


def rss_kb(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.mark.parametrize("name", ["bomb.docx", "laughs.html", "lying.pdf", "empty.txt", "truncated.docx",
                                  "binary.bin", "scan.pdf"])
async def test_hostile_files_are_4xx_while_embeddings_keep_answering(gateway, name):
    whole = docx_file([("p", "a paragraph")])
    content = {"bomb.docx": zip_bomb_docx(200 * 1024 * 1024), "laughs.html": BILLION_LAUGHS_HTML,
               "lying.pdf": b"%PDF-1.4\n%garbage that is no PDF", "empty.txt": b"  \n",
               "truncated.docx": whole[: len(whole) // 2], "binary.bin": os.urandom(4096),
               "scan.pdf": pdf_file([" ", " "])}[name]
    baseline = rss_kb(os.getpid())
    hostile = asyncio.create_task(gateway.post("/v1/chunk", files={"file": (name, content)}))
    while not hostile.done():
        embedded = await gateway.post("/v1/embeddings", json={"input": "still answering"})
        assert embedded.status_code == 200
        await asyncio.sleep(0.05)
    reply = await hostile
    assert reply.status_code in (413, 415, 422), reply.text
    assert reply.json()["error"]["message"] and "Traceback" not in reply.text
    # The document was parsed by a child process: this process (the worker's) holds none of it.
    assert rss_kb(os.getpid()) - baseline < 64 * 1024


@pytest.mark.parametrize("path", list(DOORS))
async def test_every_documents_door_meets_the_tenant_model_and_breaker_policies(gateway, path):
    pdf = pdf_file(["A page about rivers."])
    model = "sentence-transformers/all-MiniLM-L6-v2"

    async def send(key: str, model_name: str = model):
        return await gateway.post(path, headers={"Authorization": f"Bearer {key}-{path}"},
                                  **DOORS[path](pdf, model_name))

    first, second = await send("requests"), await send("requests")
    assert (first.status_code, second.status_code) == (200, 429), second.text
    assert "requests rate" in second.text and second.headers["Retry-After"]
    if path != "/v1/convert/file":  # conversion names no model
        unknown = await send("open", "nobody")
        assert unknown.status_code == 404 and "nobody" in unknown.text
    documents = gateway.app.state.upstreams["documents"]
    documents.breaker.open()
    try:
        refused = await send("open")
    finally:
        documents.breaker.close()
    assert refused.status_code == 503 and int(refused.headers["Retry-After"]) >= 1, refused.text
