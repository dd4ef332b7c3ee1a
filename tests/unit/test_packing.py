"""Sequence packing gives each input exactly what it gets when run alone, at fp32 tolerance."""

from contextlib import nullcontext

import numpy as np
import pytest

from services.runtime.packing import (
    PackedEncoder,
    first_fit_decreasing,
    first_token_states,
    mean_pool,
    pack,
    plan_rows,
    rows_cost,
)

torch = pytest.importorskip("torch")

FP32_TOLERANCE = 1e-5
MINILM_HIDDEN = 384
TINY_HIDDEN = 32


def random_inputs(rng, count: int, longest: int, vocab: int = 1000) -> list[list[int]]:
    return [rng.integers(1, vocab, size=int(rng.integers(1, longest + 1))).tolist() for _ in range(count)]


@pytest.fixture(scope="module")
def tiny_bert():
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(vocab_size=1000, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128, type_vocab_size=2)
    return BertModel(config, add_pooling_layer=False).eval()


def alone(model, ids: list[int], types: list[int] | None = None):
    """The model's last hidden state for one input, unpadded: (length, dim)."""
    with torch.inference_mode():
        return model(input_ids=torch.tensor([ids]),
                     token_type_ids=torch.tensor([types]) if types is not None else None).last_hidden_state[0]


def run_packed(model, batch):
    with torch.inference_mode():
        return model(input_ids=batch.input_ids, position_ids=batch.position_ids,
                     attention_mask=batch.attention_mask, token_type_ids=batch.token_type_ids).last_hidden_state


@pytest.mark.parametrize(("seed", "longest", "most_inputs", "row_length"), [(1, 59, 39, 64), (4, 119, 47, 128)])
def test_rows_hold_every_input_once_and_never_cost_more_than_at_the_row_length(seed, longest, most_inputs,
                                                                               row_length):
    rng = np.random.default_rng(seed)
    for _ in range(200):
        lengths = rng.integers(1, longest + 1, size=int(rng.integers(1, most_inputs + 1))).tolist()
        rows = plan_rows(lengths, row_length, MINILM_HIDDEN)
        assert sorted(i for row in rows for i in row) == list(range(len(lengths)))
        assert all(sum(lengths[i] for i in row) <= row_length for row in rows)
        fixed = first_fit_decreasing(lengths, row_length)
        assert rows_cost(lengths, rows, MINILM_HIDDEN) <= rows_cost(lengths, fixed, MINILM_HIDDEN)


def test_rows_are_first_fit_decreasing():
    # Decreasing: 5 opens row 0, 4 does not fit beside it and opens row 1, 3 fills row 0, 2 joins row 1.
    assert first_fit_decreasing([5, 3, 4, 2], 8) == [[0, 1], [2, 3]]
    # Longest first: 6 opens row 0 whatever its position in the input; 2 fills the first row with room.
    assert first_fit_decreasing([5, 6, 2], 8) == [[1, 2], [0]]


def test_the_row_width_is_chosen_to_leave_less_padding():
    # At 128 tokens the four 60s pair up and the 10 pads a third row: 3 x 128 token slots.
    lengths = [60, 60, 60, 60, 10]
    assert len(first_fit_decreasing(lengths, 128)) == 3
    batch = pack([[1] * n for n in lengths], row_length=128, hidden_size=MINILM_HIDDEN)
    assert tuple(batch.input_ids.shape) == (5, 64), "each input alone in a row of 64: 5 x 64 token slots"


def test_an_input_longer_than_a_row_widens_every_row():
    # Every row is padded to the 20-token input, so the short inputs share a row of that width.
    assert plan_rows([3, 20, 2], 8, MINILM_HIDDEN) == [[1], [0, 2]]
    assert plan_rows([3, 20, 9, 2], 8, MINILM_HIDDEN) == [[1], [2, 0, 3]]


def test_the_mask_lets_each_token_see_exactly_its_own_input():
    ids = [[11, 12, 13], [21, 22], [31, 32, 33, 34]]
    batch = pack(ids, row_length=8, hidden_size=TINY_HIDDEN)
    mask = batch.attention_mask[:, 0].numpy()
    owner = np.full(batch.input_ids.shape, -1)
    owner.reshape(-1)[batch.token_index.numpy()] = batch.token_owner.numpy()
    for r in range(mask.shape[0]):
        for i in range(mask.shape[1]):
            for j in range(mask.shape[2]):
                if owner[r, i] >= 0:
                    assert mask[r, i, j] == (owner[r, i] == owner[r, j]), (r, i, j)
                else:
                    assert mask[r, i, j] == (i == j), "padding attends to itself only"


def test_packed_rows_carry_ids_restarted_positions_segments_and_first_tokens():
    ids = [[11, 12, 13], [21, 22], [31, 32, 33, 34, 35, 36]]
    types = [[0, 0, 1], [0, 1], [0, 0, 0, 1, 1, 1]]
    batch = pack(ids, row_length=8, hidden_size=TINY_HIDDEN, pad_id=7, token_type_ids=types)
    flat_ids = batch.input_ids.reshape(-1).numpy()
    flat_positions = batch.position_ids.reshape(-1).numpy()
    flat_types = batch.token_type_ids.reshape(-1).numpy()
    owners = batch.token_owner.numpy()
    for index, (input_ids, input_types) in enumerate(zip(ids, types, strict=True)):
        where = batch.token_index.numpy()[owners == index]
        assert flat_ids[where].tolist() == input_ids
        assert flat_types[where].tolist() == input_types
        assert flat_positions[where].tolist() == list(range(len(input_ids)))
        assert batch.first_token[index] == where[0]
    padding = np.setdiff1d(np.arange(flat_ids.size), batch.token_index.numpy())
    assert (flat_ids[padding] == 7).all()
    assert batch.lengths == [3, 2, 6]
    assert batch.input_ids.shape[0] == 2, "three inputs of 11 tokens fit two rows of 8"


def test_packed_inputs_match_the_model_run_on_each_alone(tiny_bert):
    rng = np.random.default_rng(2)
    ids = random_inputs(rng, 23, 40)
    types = [rng.integers(0, 2, size=len(row)).tolist() for row in ids]
    batch = pack(ids, row_length=64, hidden_size=TINY_HIDDEN, token_type_ids=types)
    assert batch.input_ids.shape[0] < len(ids), "the inputs share rows"
    hidden = run_packed(tiny_bert, batch)
    flat = hidden.reshape(-1, hidden.shape[-1])
    owners = batch.token_owner
    for index, (row, row_types) in enumerate(zip(ids, types, strict=True)):
        expected = alone(tiny_bert, row, row_types)
        torch.testing.assert_close(flat[batch.token_index[owners == index]], expected,
                                   atol=FP32_TOLERANCE, rtol=FP32_TOLERANCE)


def test_pooling_over_packed_rows_matches_pooling_each_input_alone(tiny_bert):
    rng = np.random.default_rng(3)
    ids = random_inputs(rng, 17, 50)
    batch = pack(ids, row_length=128, hidden_size=TINY_HIDDEN)
    hidden = run_packed(tiny_bert, batch)
    pooled, first = mean_pool(hidden, batch), first_token_states(hidden, batch)
    assert pooled.shape == first.shape == (len(ids), hidden.shape[-1])
    for index, row in enumerate(ids):
        expected = alone(tiny_bert, row)
        torch.testing.assert_close(pooled[index], expected.mean(dim=0), atol=FP32_TOLERANCE, rtol=FP32_TOLERANCE)
        torch.testing.assert_close(first[index], expected[0], atol=FP32_TOLERANCE, rtol=FP32_TOLERANCE)


def test_device_copies_keep_the_layout():
    batch = pack([[1, 2], [3]], row_length=4, hidden_size=TINY_HIDDEN)
    copied = batch.map_tensors(lambda tensor: tensor.clone())
    for name in ("input_ids", "token_type_ids", "position_ids", "attention_mask", "token_index", "token_owner",
                 "first_token"):
        assert torch.equal(getattr(copied, name), getattr(batch, name)), name
    assert copied.lengths == batch.lengths


def test_the_traced_encoder_reproduces_the_module_on_batches_of_every_shape(tiny_bert):
    rng = np.random.default_rng(11)
    encoder = PackedEncoder(tiny_bert, "cpu")
    samples = [pack(random_inputs(rng, count, 40), 64, TINY_HIDDEN) for count in (12, 3)]
    assert encoder.trace(samples, nullcontext) == "traced TorchScript graph"
    assert encoder.graph is not None
    for count, longest, row_length in [(1, 5, 16), (7, 60, 64), (40, 30, 128), (2, 100, 32)]:
        batch = pack(random_inputs(rng, count, longest), row_length, TINY_HIDDEN)
        with torch.inference_mode():
            traced = encoder(batch)
        torch.testing.assert_close(traced, run_packed(tiny_bert, batch), rtol=0, atol=FP32_TOLERANCE)


class ShapeBound(torch.nn.Module):
    """An encoder whose result depends on a Python number taken from its input's shape: a trace freezes it."""

    def forward(self, input_ids, position_ids, attention_mask, token_type_ids):
        from transformers.modeling_outputs import BaseModelOutput

        rows = float(input_ids.shape[0])
        return BaseModelOutput(last_hidden_state=(input_ids[..., None] * rows).float())


class Untraceable(torch.nn.Module):
    def forward(self, input_ids, position_ids, attention_mask, token_type_ids):
        if torch.jit.is_tracing():
            raise RuntimeError("cannot be traced")
        raise AssertionError("the eager module is not called while tracing fails")


@pytest.mark.parametrize(("module", "reason"), [
    (ShapeBound(), "eager (the traced graph differed from the module by"),
    (Untraceable(), "eager (tracing failed: RuntimeError: cannot be traced)"),
])
def test_an_encoder_the_trace_does_not_reproduce_stays_eager(module, reason):
    rng = np.random.default_rng(12)
    encoder = PackedEncoder(module, "cpu")
    samples = [pack(random_inputs(rng, count, 40), 64, TINY_HIDDEN) for count in (12, 30)]
    assert encoder.trace(samples, nullcontext).startswith(reason)
    assert encoder.graph is None


def test_on_cuda_the_encoder_stays_eager(tiny_bert):
    encoder = PackedEncoder(tiny_bert, "cuda")
    assert encoder.trace([], nullcontext) == "eager (traced graphs are used on CPU only)"
    assert encoder.graph is None
