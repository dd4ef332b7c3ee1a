"""Long documents in rerank, scored over windows of themselves, each document by its best window.

A cross-encoder reads the query and a window together, so its windows are as large as the model allows (the
query kept whole in each). The cosine fallback embeds a window apart from the query, and mean pooling dilutes one
answering sentence in a long window: a 425-word document whose last sentence answers the query ranked below a
one-sentence distractor with 256-token windows. Measured on 72 documents (6 questions, 4 fillers, the answer at
the start, middle or end): the document beat its distractor 13 times with 254-token windows, 24 with 128, 37 with
64, 59 with 32, 70 with 16, and 72 with one sentence a window; two sentences a window: 67. So the fallback scores
the document whole (when it fits the model) and each sentence, a sentence longer than PASSAGE_TOKENS as
overlapping windows of that many tokens. Each passage is an input in the worker's queue: a document gets at
most PASSAGES_PER_WINDOW times the cross-encoder's window count (windows of a quarter the size or less), so a
document of many tiny sentences costs no more queue room than that.
"""

import re

# Consecutive windows share a quarter of their tokens, so a sentence cut by one window's edge is whole in the next.
OVERLAP = 0.25
PASSAGE_TOKENS = 32
PASSAGES_PER_WINDOW = 4
_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s+|\n\s*")


def _token_windows(document: str, offsets: list[tuple[int, int]], budget: int, max_windows: int) -> list[str]:
    """Overlapping windows of at most `budget` tokens over `offsets`, at most `max_windows` from the start."""
    stride = max(1, int(budget * (1 - OVERLAP)))
    windows = []
    for start in range(0, len(offsets), stride):
        chunk = offsets[start : start + budget]
        windows.append(document[chunk[0][0] : chunk[-1][1]])
        if start + budget >= len(offsets) or len(windows) == max_windows:
            break
    return windows


def _offsets(tokenizer, document: str, max_tokens: int) -> list[tuple[int, int]]:
    encoded = tokenizer(document, add_special_tokens=False, return_offsets_mapping=True, truncation=False)
    offsets = [tuple(offset) for offset in encoded["offset_mapping"]]
    return offsets[:max_tokens] if max_tokens else offsets


def split_document(tokenizer, document: str, budget: int, max_windows: int, max_tokens: int = 0) -> list[str]:
    """The document as is when its tokens fit `budget`, else overlapping windows of at most `budget` tokens,
    at most `max_windows` of them from its start; `max_tokens` > 0 first cuts the document to that many tokens.
    """
    # A token spans at least one character: a document of at most `budget` characters fits whole.
    if not max_tokens and len(document) <= budget:
        return [document]
    offsets = _offsets(tokenizer, document, max_tokens)
    if len(offsets) <= budget:
        return [document[: offsets[-1][1]] if offsets and max_tokens else document]
    return _token_windows(document, offsets, budget, max_windows)


def split_passages(tokenizer, document: str, whole_budget: int, max_passages: int, max_tokens: int = 0) -> list[str]:
    """The document whole when it fits `whole_budget` tokens, and each of its sentences (one longer than
    PASSAGE_TOKENS as overlapping windows of that size), at most `max_passages` of them from its start;
    `max_tokens` > 0 first cuts the document to that many tokens."""
    if not max_tokens and len(document) <= PASSAGE_TOKENS:
        return [document]
    offsets = _offsets(tokenizer, document, max_tokens)
    if not offsets:
        return [document]
    text = document[: offsets[-1][1]]
    whole = [text] if len(offsets) <= whole_budget else []
    passages: list[str] = []
    cuts = [0, *(match.end() for match in _SENTENCE_END.finditer(text)), len(text)]
    token = 0
    for start, end in zip(cuts, cuts[1:], strict=False):
        while token < len(offsets) and offsets[token][0] < start:
            token += 1
        first = token
        while token < len(offsets) and offsets[token][1] <= end:
            token += 1
        sentence = offsets[first:token]
        if len(sentence) > PASSAGE_TOKENS:
            passages.extend(_token_windows(text, sentence, PASSAGE_TOKENS, len(sentence)))
        elif sentence:
            passages.append(text[sentence[0][0] : sentence[-1][1]])
        if len(passages) >= max_passages:
            break
    return list(dict.fromkeys(whole + passages[:max_passages]))
