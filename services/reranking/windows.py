"""Long documents in rerank: a document longer than the model's window is scored over overlapping windows of
itself (the query kept whole in each), and gets its best window's score."""

# Consecutive windows share a quarter of their tokens, so a sentence cut by one window's edge is whole in the next.
OVERLAP = 0.25


def split_document(tokenizer, document: str, budget: int, max_windows: int, max_tokens: int = 0) -> list[str]:
    """The document as is when its tokens fit `budget`, else overlapping windows of at most `budget` tokens,
    at most `max_windows` of them from its start; `max_tokens` > 0 first cuts the document to that many tokens.
    """
    encoded = tokenizer(document, add_special_tokens=False, return_offsets_mapping=True, truncation=False)
    offsets = encoded["offset_mapping"]
    if max_tokens:
        offsets = offsets[:max_tokens]
    if len(offsets) <= budget:
        return [document[: offsets[-1][1]] if offsets and max_tokens else document]
    stride = max(1, int(budget * (1 - OVERLAP)))
    windows = []
    for start in range(0, len(offsets), stride):
        chunk = offsets[start : start + budget]
        windows.append(document[chunk[0][0] : chunk[-1][1]])
        if start + budget >= len(offsets) or len(windows) == max_windows:
            break
    return windows
