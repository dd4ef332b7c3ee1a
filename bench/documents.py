"""Chunk + embed of a Markdown corpus of about 200 pages: through the gateway (`POST /v1/chunk`, `embed: true`)
against the same HybridChunker and sentence-transformers encode in one process, measured in one run (a row of
`make bench`, or alone against a running mesh):

    make start && .venv/bin/python -m bench.documents [GATEWAY_URL]

A page is 500 words; the corpus is the bench's own texts (bench/corpus.py) under headings, 10 pages a chapter.
"""

import sys
import time

import httpx

from bench.corpus import build_corpus

PAGES = 200
WORDS_PER_PAGE = 500
MAX_TOKENS = 256


def corpus() -> str:
    pool = build_corpus(6000, seed=7)
    words, parts, page = [], ["# Corpus"], 0
    for text in pool:
        words += text.split()
        while len(words) >= WORDS_PER_PAGE and page < PAGES:
            if page % 10 == 0:
                parts.append(f"## Chapter {page // 10 + 1}")
            parts += [" ".join(words[i:i + 100]) for i in range(0, WORDS_PER_PAGE, 100)]
            words, page = words[WORDS_PER_PAGE:], page + 1
    return "\n\n".join(parts)


def in_process(markdown: str) -> tuple[float, int]:
    from docling_core.transforms.chunker.hybrid_chunker import HybridChunker
    from docling_core.transforms.chunker.tokenizer.huggingface import HuggingFaceTokenizer
    from sentence_transformers import SentenceTransformer

    from services.documents.reading import read
    from services.runtime.models import resolve_model

    model = SentenceTransformer(str(resolve_model("sentence-transformers/all-MiniLM-L6-v2")), device="cpu")
    chunker = HybridChunker(tokenizer=HuggingFaceTokenizer(tokenizer=model.tokenizer, max_tokens=MAX_TOKENS - 2))
    model.encode(["warm up"] * 8)
    started = time.perf_counter()
    chunks = [chunker.contextualize(chunk) for chunk in chunker.chunk(read(markdown.encode(), "markdown", "c.md", 1))]
    model.encode(chunks, batch_size=64)
    return time.perf_counter() - started, len(chunks)


def served(url: str, markdown: str) -> tuple[float, int]:
    with httpx.Client(base_url=url, timeout=600) as client:
        client.post("/v1/chunk", json={"input": markdown[:5000], "embed": True}).raise_for_status()
        started = time.perf_counter()
        reply = client.post("/v1/chunk", json={"input": markdown, "embed": True, "max_tokens": MAX_TOKENS})
        reply.raise_for_status()
        return time.perf_counter() - started, len(reply.json()["data"])


def report(served_run: tuple[float, int], local_run: tuple[float, int], words: int) -> dict:
    (served_s, served_chunks), (local_s, local_chunks) = served_run, local_run
    return {"pages": PAGES, "words": words, "served_s": served_s, "served_chunks": served_chunks,
            "in_process_s": local_s, "in_process_chunks": local_chunks, "ratio": local_s / served_s}


def print_report(result: dict) -> None:
    print(f"chunk+embed, {result['pages']} pages ({result['words']} words): served {result['served_s']:.2f} s "
          f"({result['pages'] / result['served_s']:.1f} pages/s, {result['served_chunks']} chunks); in-process "
          f"{result['in_process_s']:.2f} s ({result['pages'] / result['in_process_s']:.1f} pages/s, "
          f"{result['in_process_chunks']} chunks): {result['ratio']:.2f}x")


def main() -> None:
    url = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8000"
    markdown = corpus()
    print_report(report(served(url, markdown), in_process(markdown), len(markdown.split())))


if __name__ == "__main__":
    main()
