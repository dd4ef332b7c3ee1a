"""Sequence packing: several tokenized inputs per row, no padding between them.

A closed loop of concurrent callers never holds enough similar-length texts to batch without padding,
and on CPU the forward pass costs what its padded tokens cost. Packing puts inputs end to end in rows
(first-fit decreasing), restarts position ids at each input and gives attention a block-diagonal mask,
so each input sees only itself: the same result as running it alone, with almost no padding.
Works for encoders with absolute position embeddings that accept `position_ids` and a 4-D mask (BERT).

Rows are padded to the fullest one, and first-fit at a fixed width leaves the last rows part empty (a
fifth of a batch of 16 texts at 128 tokens), so the width is chosen per batch: at most `row_length`
(or the longest input), at whatever width the rows cost the model least, padding and attention counted,
rounded up to a multiple of WIDTH_STEP.
"""

import warnings
from dataclasses import dataclass

import numpy as np


@dataclass
class PackedBatch:
    """Row-major packed inputs (torch tensors) and where each input lies."""

    input_ids: object          # (rows, length) long
    token_type_ids: object     # (rows, length) long: segment A/B of sentence pairs, zeros otherwise
    position_ids: object       # (rows, length) long
    attention_mask: object     # (rows, 1, length, length) bool, block-diagonal
    token_index: object        # (tokens,) long: flat row*length position of every real token
    token_owner: object        # (tokens,) long: which input each real token belongs to
    first_token: object        # (inputs,) long: flat position of each input's first token
    lengths: list[int]

    def map_tensors(self, function) -> "PackedBatch":
        """The same batch with `function` applied to every tensor (device copies, pinning)."""
        tensors = (self.input_ids, self.token_type_ids, self.position_ids, self.attention_mask, self.token_index,
                   self.token_owner, self.first_token)
        return PackedBatch(*(function(tensor) for tensor in tensors), self.lengths)


# A token's attention over a row of `width` tokens costs about width / (ATTENTION_RATIO * hidden size) of
# what its linear layers cost (MiniLM-L6 on CPU: 11% of the forward pass at 126-token rows).
ATTENTION_RATIO = 2.2
# Row widths are multiples of this: every distinct tensor shape keeps allocator memory of its own (a worker
# under a rerank load grew to 1.1 GB and on with widths to the token, stayed at ~0.9 GB with steps of 16).
WIDTH_STEP = 16


def _aligned(tokens: int) -> int:
    return -(-tokens // WIDTH_STEP) * WIDTH_STEP


def row_width(lengths: list[int], rows: list[list[int]]) -> int:
    """Tokens per row of the packed tensors: the fullest row's, rounded up to a multiple of WIDTH_STEP."""
    return _aligned(max(sum(lengths[i] for i in row) for row in rows))


def rows_cost(lengths: list[int], rows: list[list[int]], hidden_size: int) -> float:
    """What the rows cost a model of `hidden_size`, in token slots of its linear layers, attention included."""
    width = row_width(lengths, rows)
    return len(rows) * width * (1 + width / (ATTENTION_RATIO * hidden_size))


def plan_rows(lengths: list[int], row_length: int, hidden_size: int) -> list[list[int]]:
    """Input indices per row, packed first-fit decreasing at the width (up to `row_length`, or the longest
    input when that is longer) whose rows cost a model of `hidden_size` least."""
    longest = max(lengths)
    widest = max(row_length, longest)
    widths = sorted({*range(_aligned(longest), widest, WIDTH_STEP), widest})
    return min((first_fit_decreasing(lengths, width) for width in widths),
               key=lambda rows: rows_cost(lengths, rows, hidden_size))


def first_fit_decreasing(lengths: list[int], width: int) -> list[list[int]]:
    """Input indices per row of `width` tokens (no input is longer), longest inputs placed first."""
    rows: list[list[int]] = []
    room: list[int] = []
    for index in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        for row, free in enumerate(room):
            if lengths[index] <= free:
                rows[row].append(index)
                room[row] -= lengths[index]
                break
        else:
            rows.append([index])
            room.append(width - lengths[index])
    return rows


def pack(token_ids: list[list[int]], row_length: int, hidden_size: int, pad_id: int = 0,
         token_type_ids: list[list[int]] | None = None) -> PackedBatch:
    """Pack tokenized inputs into rows of at most `row_length` tokens (see plan_rows)."""
    import torch

    lengths = [len(ids) for ids in token_ids]
    rows = plan_rows(lengths, row_length, hidden_size)
    width = row_width(lengths, rows)
    input_ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    types = np.zeros((len(rows), width), dtype=np.int64)
    position_ids = np.zeros((len(rows), width), dtype=np.int64)
    segment = np.full((len(rows), width), -1, dtype=np.int64)
    first_token = np.zeros(len(lengths), dtype=np.int64)
    for r, row in enumerate(rows):
        offset = 0
        for index in row:
            n = lengths[index]
            input_ids[r, offset:offset + n] = token_ids[index]
            if token_type_ids is not None:
                types[r, offset:offset + n] = token_type_ids[index]
            position_ids[r, offset:offset + n] = np.arange(n)
            segment[r, offset:offset + n] = index
            first_token[index] = r * width + offset
            offset += n
    same_input = segment[:, :, None] == segment[:, None, :]
    # Padding positions attend to themselves only, so no attention row is empty (that would give NaN).
    mask = (same_input & (segment[:, :, None] >= 0)) | np.eye(width, dtype=bool)[None]
    flat_segment = segment.reshape(-1)
    token_index = np.flatnonzero(flat_segment >= 0)
    return PackedBatch(
        input_ids=torch.from_numpy(input_ids),
        token_type_ids=torch.from_numpy(types),
        position_ids=torch.from_numpy(position_ids),
        attention_mask=torch.from_numpy(mask[:, None, :, :]),
        token_index=torch.from_numpy(token_index),
        token_owner=torch.from_numpy(flat_segment[token_index]),
        first_token=torch.from_numpy(first_token),
        lengths=lengths,
    )


def mean_pool(hidden, batch: PackedBatch):
    """Mean of each input's token states: (rows, length, dim) -> (inputs, dim)."""
    import torch

    flat = hidden.reshape(-1, hidden.shape[-1]).index_select(0, batch.token_index)
    sums = torch.zeros(len(batch.lengths), hidden.shape[-1], dtype=hidden.dtype, device=hidden.device)
    sums.index_add_(0, batch.token_owner, flat)
    counts = torch.tensor(batch.lengths, dtype=hidden.dtype, device=hidden.device)
    return sums / counts[:, None]


def first_token_states(hidden, batch: PackedBatch):
    """Each input's first token state ([CLS]): (rows, length, dim) -> (inputs, dim)."""
    return hidden.reshape(-1, hidden.shape[-1]).index_select(0, batch.first_token)


# Largest difference between the traced graph's token states and the eager module's that still counts as the
# same computation (they run the same kernels; fp32 gives exactly equal states).
TRACE_TOLERANCE = 1e-3


# What `PackedEncoder.trace` says when it keeps the traced graph.
TRACED = "traced TorchScript graph"


class PackedEncoder:
    """A BERT encoder on packed batches: a PackedBatch in, token states (rows, length, hidden) out.

    On CPU it runs as a TorchScript graph, traced once the worker's precision is settled: the eager module
    dispatches each of its ops from Python and holds the GIL between them, and a worker's two device streams
    take turns at that lock (README, design notes). The graph is kept only when it reproduces the eager
    module on sample batches of other shapes than the one it was traced on.
    """

    def __init__(self, bert, device: str):
        self.bert = bert
        self.device = device
        self.graph = None  # a compiled forward of the encoder inputs: the traced graph, or OpenVINO's (backend.py)

    def module(self):
        """The encoder with positional inputs and one output, as tracing and OpenVINO's converter take it."""
        import torch

        class LastHiddenState(torch.nn.Module):
            def __init__(self, bert):
                super().__init__()
                self.bert = bert

            def forward(self, input_ids, position_ids, attention_mask, token_type_ids):
                return self.bert(input_ids=input_ids, position_ids=position_ids, attention_mask=attention_mask,
                                 token_type_ids=token_type_ids).last_hidden_state

        return LastHiddenState(self.bert).eval()

    def __call__(self, batch: PackedBatch):
        if self.graph is not None:
            return self.graph(*encoder_inputs(batch))
        return self.bert(input_ids=batch.input_ids, position_ids=batch.position_ids,
                         attention_mask=batch.attention_mask, token_type_ids=batch.token_type_ids).last_hidden_state

    def trace(self, samples: list[PackedBatch], context) -> str:
        """Trace on `samples[0]` under `context()` (the precision's); keep the graph only if it agrees with the
        eager module on every sample. Says which forward runs, and why."""
        if self.device != "cpu":
            return "eager (traced graphs are used on CPU only)"
        import torch

        try:
            # Tracing warns of every Python value it freezes (and transformers of attributes it is asked
            # for); the comparison below is what decides.
            with torch.inference_mode(), context(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                graph = torch.jit.freeze(torch.jit.trace(self.module(),
                                                         encoder_inputs(samples[0]), check_trace=False))
                worst = max(float((graph(*encoder_inputs(sample)) - self(sample)).abs().max())
                            for sample in samples)
        except Exception as error:  # noqa: BLE001 - an encoder TorchScript cannot trace runs eager
            return f"eager (tracing failed: {type(error).__name__}: {error})"
        if worst > TRACE_TOLERANCE:
            return f"eager (the traced graph differed from the module by {worst:.2g})"
        self.graph = graph
        return TRACED


def encoder_inputs(batch: PackedBatch) -> tuple:
    """The packed encoder's inputs, in its positional order."""
    return batch.input_ids, batch.position_ids, batch.attention_mask, batch.token_type_ids
