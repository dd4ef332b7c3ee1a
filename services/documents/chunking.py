"""Chunks bounded by the served model's tokenizer (runs in the conversion child, services/documents/isolation.py).

Docling's HybridChunker splits the document along its structure, then merges and splits by tokens, counting with
the embedding model's own tokenizer (a `tokenizers` definition fetched from the embedding worker). What the
embedding model sees of a chunk, its `contextualized_text` (the headings above it, then its text), is then held
to `max_tokens` with the model's special tokens counted: a chunk over it is cut again at the last whitespace that
fits. For text and Markdown each chunk is a slice of the source (`source[start:end]`): the chunker's chunks are
found in the source in order, and the slices between them partition it, so every non-space character is in
exactly one chunk before overlap is added.
"""

import re
from dataclasses import dataclass, field

from docling_core.transforms.chunker.hybrid_chunker import HybridChunker
from docling_core.transforms.chunker.tokenizer.base import BaseTokenizer
from docling_core.types.doc import DoclingDocument
from pydantic import ConfigDict
from tokenizers import Tokenizer

from services.documents.formats import TooLarge

WORD = re.compile(r"\w+")
# How far past the last match a chunk's next word is looked for: words the chunker's serialization adds (a table
# row's "column = value") are skipped, not matched to a later occurrence.
SEARCH_WINDOW = 2000
# Most characters looked at per token allowed when a chunk is cut (a token spans a character or more).
CHARS_PER_TOKEN_CAP = 200


class ServedTokenizer(BaseTokenizer):
    """The embedding model's tokenizer as HybridChunker counts with it: tokens of the text alone."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    tokenizer: Tokenizer
    max_tokens: int

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def get_max_tokens(self) -> int:
        return self.max_tokens

    def get_tokenizer(self):
        """What semchunk splits long text by: this token count (a `tokenizers.Tokenizer` would count special
        tokens too)."""
        return self.count_tokens


@dataclass
class Piece:
    """A chunk under way: `source[start:end]` of its own source (the document's, or the chunker's text)."""

    source: str
    start: int
    end: int
    headings: list[str]
    pages: list[int] = field(default_factory=list)

    @property
    def text(self) -> str:
        return self.source[self.start:self.end]


def chunk(document: DoclingDocument, source: str | None, tokenizer_json: str, max_tokens: int, overlap: int,
          max_chunks: int) -> list[dict]:
    """The document's chunks, each a dict of the ChunkResponse's Chunk fields; `source` is the text the document
    was read from when its chunks are slices of it (text, Markdown)."""
    tokenizer = Tokenizer.from_str(tokenizer_json)
    tokenizer.no_truncation()
    tokenizer.no_padding()
    budget = max_tokens - tokenizer.num_special_tokens_to_add(False)
    counter = ServedTokenizer(tokenizer=tokenizer, max_tokens=budget - overlap)
    chunker = HybridChunker(tokenizer=counter)
    chunks = list(chunker.chunk(document))
    if source is None:
        pieces = [Piece(text, 0, len(text), list(item.meta.headings or []), _pages(item))
                  for item in chunks if (text := item.text.strip())]
    else:
        pieces = [Piece(source, start, end, headings) for start, end, headings in
                  _source_spans(source, [item.text for item in chunks], [item.meta.headings or [] for item in chunks])]
    fitted = [part for piece in pieces for part in _fit(piece, budget - overlap, budget, counter)]
    if len(fitted) > max_chunks:
        raise TooLarge(f"the document gives {len(fitted)} chunks; at most {max_chunks} are allowed: raise "
                       f"max_tokens or split the document")
    answer = []
    for index, piece in enumerate(fitted):
        text = piece.text
        if overlap and index:
            text = _with_overlap(fitted[index - 1], piece, overlap, budget, counter)
        contextualized = _contextualized(piece.headings, text, budget, counter)
        item = {"index": index, "text": text, "contextualized_text": contextualized,
                "tokens": len(tokenizer.encode(contextualized).ids), "headings": piece.headings, "pages": piece.pages}
        if source is not None:
            item["start"], item["end"] = piece.end - len(text), piece.end
        answer.append(item)
    return answer


def _pages(item) -> list[int]:
    return sorted({provenance.page_no for doc_item in item.meta.doc_items for provenance in doc_item.prov})


def _contextualized(headings: list[str], text: str, budget: int, counter: ServedTokenizer) -> str:
    """What the embedding model sees: the headings the text does not hold itself, then the text; the headings
    are left out when they would take more than half the budget (the chunk's text was fitted to the rest)."""
    if headings and counter.count_tokens("\n".join(headings)) <= budget // 2:
        return "\n".join([*(heading for heading in headings if heading not in text), text])
    return text


def _source_spans(source: str, texts: list[str], headings: list[list[str]]) -> list[tuple[int, int, list[str]]]:
    """Each chunk's slice of `source`: it starts at the line after the previous chunk's last word (so a heading's
    line goes with the chunk under it) and runs to the next one's start; the first starts at the beginning."""
    found = []
    cursor = 0
    for text, chunk_headings in zip(texts, headings, strict=True):
        first = last = None
        for word in WORD.findall(text):
            position = source.find(word, cursor, cursor + SEARCH_WINDOW + len(word))
            if position < 0:
                continue
            first = position if first is None else first
            cursor = last = position + len(word)
        if first is not None:
            found.append((first, last, list(chunk_headings)))
    if not found:
        return [(0, len(source), [])] if source.strip() else []
    bounds = [0]
    for (_, previous_last, _), (first, _, _) in zip(found, found[1:], strict=False):
        newline = source.find("\n", previous_last, first)
        bounds.append(newline + 1 if newline >= 0 else first)
    bounds.append(len(source))
    spans = []
    for (start, end), (_, _, chunk_headings) in zip(zip(bounds, bounds[1:], strict=False), found, strict=True):
        start, end = _stripped(source, start, end)
        if start < end:
            spans.append((start, end, chunk_headings))
    return spans


def _stripped(source: str, start: int, end: int) -> tuple[int, int]:
    while start < end and source[start].isspace():
        start += 1
    while end > start and source[end - 1].isspace():
        end -= 1
    return start, end


def _fit(piece: Piece, limit: int, budget: int, counter: ServedTokenizer) -> list[Piece]:
    """The piece cut, at the last whitespace that fits, into parts whose contextualized text has at most `limit`
    tokens besides the special ones."""
    parts = []
    start, end = piece.start, piece.end
    room = limit - _heading_tokens(piece.headings, budget, counter)
    while start < end:
        cut = _cut(piece.source, start, end, room, counter)
        part_start, part_end = _stripped(piece.source, start, cut)
        # A cut inside what a tokenizer merges across whitespace can count differently alone: cut shorter.
        excess = counter.count_tokens(piece.source[part_start:part_end]) - room
        if excess > 0:
            cut = _cut(piece.source, start, end, max(1, room - excess), counter)
            part_start, part_end = _stripped(piece.source, start, cut)
        if part_start < part_end:
            parts.append(Piece(piece.source, part_start, part_end, piece.headings, piece.pages))
        start = cut
    return parts


def _cut(source: str, start: int, end: int, room: int, counter: ServedTokenizer) -> int:
    """Where the part of source[start:end] that starts at `start` and holds at most `room` tokens ends."""
    window = min(end, start + CHARS_PER_TOKEN_CAP * room)
    encoding = counter.tokenizer.encode(source[start:window], add_special_tokens=False)
    if len(encoding.ids) <= room:
        return window
    cut = start + encoding.offsets[room][0]
    space = _last_whitespace(source, start, cut)
    return space if space > start else max(cut, start + 1)


def _heading_tokens(headings: list[str], budget: int, counter: ServedTokenizer) -> int:
    """Tokens the headings (and the line break after them) take of a chunk; 0 when they are left out."""
    if not headings:
        return 0
    tokens = counter.count_tokens("\n".join(headings)) + 1
    return tokens if tokens - 1 <= budget // 2 else 0


def _last_whitespace(text: str, start: int, stop: int) -> int:
    for position in range(stop - 1, start, -1):
        if text[position].isspace():
            return position
    return -1


def _with_overlap(previous: Piece, piece: Piece, overlap: int, budget: int, counter: ServedTokenizer) -> str:
    """The piece's text preceded by about `overlap` tokens of the previous piece's end, from a word's start, as
    far as the contextualized text stays within the budget."""
    encoding = counter.tokenizer.encode(previous.text, add_special_tokens=False)
    if not encoding.ids:
        return piece.text
    offset = encoding.offsets[max(0, len(encoding.ids) - overlap)][0]
    while 0 < offset < len(previous.text) and not previous.text[offset - 1].isspace():
        offset += 1
    while offset < len(previous.text) and previous.text[offset].isspace():
        offset += 1
    if offset >= len(previous.text):
        return piece.text
    same_source = previous.source is piece.source and previous.end <= piece.start
    text = (piece.source[previous.start + offset:piece.end] if same_source
            else previous.text[offset:] + " " + piece.text)
    if counter.count_tokens(_contextualized(piece.headings, text, budget, counter)) > budget:
        return piece.text
    return text
