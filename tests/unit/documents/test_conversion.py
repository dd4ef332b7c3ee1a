"""Documents through real conversion children (services/documents/isolation.py), chunked by a tiny WordPiece
tokenizer trained in the test: the bounds, the source slices and the headings hold for every format; hostile
files cost their child only. Torch-free: runs in the documents worker's own environment too."""

import re
import tempfile
from pathlib import Path

import pytest
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers

from services.documents.formats import TooLarge, Unprocessable, UnsupportedType, sniff
from services.documents.isolation import ChildLimits, Conversions
from services.documents.job import Job
from tests.unit.documents.documents_files import BILLION_LAUGHS_HTML, docx_file, pdf_file, xlsx_file, zip_bomb_docx

WORDS = ("alpha beta gamma delta epsilon zeta theta lambda kappa sigma omega river mountain forest ocean desert "
         "valley harbour meadow glacier").split()
MAX_TOKENS = 40
TIMEOUT = 60


def prose(seed: int, words: int) -> str:
    return " ".join(WORDS[(seed * 7 + i * 3) % len(WORDS)] + ("." if i % 11 == 10 else "") for i in range(words))


MARKDOWN = "\n\n".join([
    "# Field guide", prose(1, 30),
    "## Rivers", prose(2, 120), "- " + prose(3, 8) + "\n- " + prose(4, 9),
    "### Deltas", prose(5, 60),
    "## Mountains", "| peak | height |\n|---|---|\n| alpha | 8848 |\n| beta | 8611 |", prose(6, 45),
])


@pytest.fixture(scope="module")
def tokenizer() -> Tokenizer:
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    # A small vocabulary: most words take several tokens, so the bounds are tight.
    tokenizer.train_from_iterator([MARKDOWN, prose(9, 200)], trainers.WordPieceTrainer(
        vocab_size=120, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]"]))
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", tokenizer.token_to_id("[CLS]")),
                                                 ("[SEP]", tokenizer.token_to_id("[SEP]"))])
    return tokenizer


@pytest.fixture(scope="module")
async def conversions() -> Conversions:
    pool = Conversions(ChildLimits(memory_mb=1536, cpu_s=20, wall_s=30), slots=2, max_waiting=4)
    await pool.start()
    return pool


async def chunks_of(conversions, tokenizer, content: bytes, format_: str, max_tokens: int = MAX_TOKENS,
                    overlap: int = 0) -> list[dict]:
    job = Job(content=content, format=sniff(content, format_, 64 * 1024 * 1024), filename="doc",
              max_pages=50, max_chunks=1000, tokenizer_json=tokenizer.to_str(), max_tokens=max_tokens,
              overlap=overlap)
    return (await conversions.run(job))["chunks"]


def assert_bounded(chunks: list[dict], tokenizer: Tokenizer, max_tokens: int = MAX_TOKENS) -> None:
    assert chunks
    for chunk in chunks:
        counted = len(tokenizer.encode(chunk["contextualized_text"]).ids)
        assert counted == chunk["tokens"] and counted <= max_tokens, chunk


@pytest.mark.parametrize("format_", ["markdown", "text"])
async def test_text_chunks_are_bounded_slices_that_cover_the_source(conversions, tokenizer, format_):
    chunks = await chunks_of(conversions, tokenizer, MARKDOWN.encode(), format_)
    assert_bounded(chunks, tokenizer)
    covered = set()
    for chunk in chunks:
        assert MARKDOWN[chunk["start"]:chunk["end"]] == chunk["text"]
        covered.update(range(chunk["start"], chunk["end"]))
    assert all(i in covered for i, character in enumerate(MARKDOWN) if not character.isspace())
    assert [chunk["start"] for chunk in chunks] == sorted(chunk["start"] for chunk in chunks)


async def test_every_markdown_heading_reaches_the_chunks_under_it(conversions, tokenizer):
    chunks = await chunks_of(conversions, tokenizer, MARKDOWN.encode(), "markdown")
    sections = {"Rivers": prose(2, 120), "Deltas": prose(5, 60), "Mountains": prose(6, 45)}
    for heading, body in sections.items():
        start = MARKDOWN.index(body)
        under = [chunk for chunk in chunks if start <= chunk["start"] < start + len(body)]
        assert under and all(heading in chunk["headings"] for chunk in under), heading
    assert all(chunk["headings"][0] == "Field guide" for chunk in chunks)


async def test_overlap_repeats_the_end_of_the_previous_chunk_within_the_bound(conversions, tokenizer):
    chunks = await chunks_of(conversions, tokenizer, MARKDOWN.encode(), "markdown", overlap=6)
    assert_bounded(chunks, tokenizer)
    overlapping = [(a, b) for a, b in zip(chunks, chunks[1:], strict=False) if b["start"] < a["end"]]
    assert len(overlapping) >= len(chunks) // 2
    for chunk in chunks:
        assert MARKDOWN[chunk["start"]:chunk["end"]] == chunk["text"]


async def test_every_docx_paragraph_appears_under_its_heading(conversions, tokenizer):
    paragraphs = [("h1", "Annual report"), ("p", prose(1, 25)), ("h2", "Findings"), ("p", prose(2, 70)),
                  ("p", prose(3, 12)), ("h2", "Outlook"), ("p", prose(4, 30))]
    chunks = await chunks_of(conversions, tokenizer, docx_file(paragraphs), "")
    assert_bounded(chunks, tokenizer)
    words = " ".join(chunk["text"] for chunk in chunks).split()
    for style, text in paragraphs:
        if style == "p":
            assert " ".join(text.split()) in " ".join(words), text[:40]
    assert any(chunk["headings"] == ["Annual report", "Outlook"] for chunk in chunks)


async def test_html_xlsx_and_a_text_layer_pdf_are_read(conversions, tokenizer):
    html = f"<html><body><h1>Guide</h1><p>{prose(1, 20)}</p><h2>Rivers</h2><p>{prose(2, 40)}</p></body></html>"
    html_chunks = await chunks_of(conversions, tokenizer, html.encode(), "")
    assert_bounded(html_chunks, tokenizer)
    assert any(chunk["headings"] == ["Guide", "Rivers"] for chunk in html_chunks)

    xlsx_chunks = await chunks_of(conversions, tokenizer, xlsx_file([["river", "length"], ["nile", 6650],
                                                                      ["amazon", 6400]]), "")
    assert_bounded(xlsx_chunks, tokenizer)
    assert "amazon" in " ".join(chunk["text"] for chunk in xlsx_chunks)

    pdf_chunks = await chunks_of(conversions, tokenizer, pdf_file(["alpha river page one", "beta forest page two"]),
                                 "")
    assert_bounded(pdf_chunks, tokenizer)
    pages = {page for chunk in pdf_chunks for page in chunk["pages"]}
    assert pages == {1, 2}
    assert "forest" in " ".join(chunk["text"] for chunk in pdf_chunks if 2 in chunk["pages"])


def leftovers() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob("torchgate-document-*"))


@pytest.mark.parametrize(("content", "refusal", "says"), [
    (b"", Unprocessable, "empty"),
    (b"%PDF-1.7\n this is no PDF at all", Unprocessable, "PDF"),
    (b"\x89PNG\r\n\x1a\n" + bytes(64), Unprocessable, "OCR"),
    (bytes(range(256)) * 4, UnsupportedType, "UTF-8"),
    (BILLION_LAUGHS_HTML, Unprocessable, "entities"),
    (pdf_file([" "]), Unprocessable, "text layer"),
])
async def test_hostile_and_broken_files_are_refused_saying_why(conversions, tokenizer, content, refusal, says):
    before = leftovers()
    with pytest.raises(refusal, match=re.compile(says, re.IGNORECASE)):
        await chunks_of(conversions, tokenizer, content, "")
    assert leftovers() <= before
    assert_bounded(await chunks_of(conversions, tokenizer, MARKDOWN.encode(), "markdown"), tokenizer)


async def test_a_truncated_docx_and_a_zip_bomb_are_refused(conversions, tokenizer):
    whole = docx_file([("p", prose(1, 40))])
    with pytest.raises(Unprocessable):
        await chunks_of(conversions, tokenizer, whole[: len(whole) // 2], "")
    with pytest.raises(TooLarge, match="unpacks to"):
        sniff(zip_bomb_docx(80 * 1024 * 1024), "", 64 * 1024 * 1024)


async def test_a_zip_bomb_past_the_declared_size_check_costs_only_its_child(conversions, tokenizer):
    bomb = zip_bomb_docx(256 * 1024 * 1024)
    with pytest.raises(Unprocessable):
        await conversions.run(Job(content=bomb, format=sniff(bomb, "", 1024 * 1024 * 1024), filename="bomb.docx",
                                  max_pages=10, max_chunks=10, tokenizer_json=tokenizer.to_str(),
                                  max_tokens=MAX_TOKENS))
    assert_bounded(await chunks_of(conversions, tokenizer, MARKDOWN.encode(), "markdown"), tokenizer)


async def test_a_document_over_the_wall_time_is_killed(tokenizer):
    pool = Conversions(ChildLimits(memory_mb=1536, cpu_s=20, wall_s=0.05), slots=1, max_waiting=1)
    with pytest.raises(Unprocessable, match="longer than"):
        await pool.run(Job(content=(prose(1, 20000)).encode(), format="markdown", filename="long.md",
                           max_pages=10, max_chunks=100000, tokenizer_json=tokenizer.to_str(),
                           max_tokens=MAX_TOKENS))
