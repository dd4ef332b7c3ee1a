"""What an embedding request can hold besides texts: token ids, prompts, and the tokens of a text."""

import grpc
import numpy as np
import pytest

from services.embedding.servicer import build
from services.embedding.settings import EmbeddingSettings
from services.runtime.models import resolve_model
from tests.integration.test_embedding_worker import FP32_TOLERANCE, TEXTS, unpack
from tests.network import worker_channel
from tests.workers import serving
from torchgate.v1 import common_pb2, embedding_pb2, embedding_pb2_grpc

PROMPTS = {"query": "query: ", "document": "passage: ", "classification": "classify: "}


@pytest.fixture(scope="module")
async def stub():
    settings = EmbeddingSettings(port=0, metrics_port=0, prompts=PROMPTS, grace_period_s=1)
    async with serving(build(settings)) as worker, worker_channel(worker.port) as channel:
        yield embedding_pb2_grpc.EmbeddingServiceStub(channel)


async def embed(stub, **fields) -> np.ndarray:
    return unpack(await stub.Embed(embedding_pb2.EmbedRequest(normalize=True, truncate=True, **fields)))


async def test_tokenize_gives_the_tokenizers_ids_with_offsets_into_the_text(stub):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(resolve_model("sentence-transformers/all-MiniLM-L6-v2")))
    reply = await stub.Tokenize(embedding_pb2.TokenizeRequest(texts=TEXTS, add_special_tokens=True))
    for text, tokens in zip(TEXTS, reply.results, strict=True):
        assert [t.id for t in tokens.tokens] == tokenizer(text)["input_ids"]
        assert [t.special for t in tokens.tokens] == [True] + [False] * (len(tokens.tokens) - 2) + [True]
        for token in tokens.tokens[1:-1]:
            assert token.text == text[token.start:token.stop] and token.text.lower().startswith(
                tokenizer.convert_ids_to_tokens(token.id).removeprefix("##")[:1])
        assert tokens.tokens[0].text == "[CLS]"
    bare = await stub.Tokenize(embedding_pb2.TokenizeRequest(texts=["hello world"], add_special_tokens=False))
    assert [t.id for t in bare.results[0].tokens] == tokenizer("hello world", add_special_tokens=False)["input_ids"]


async def test_token_ids_embed_exactly_as_the_text_they_encode(stub):
    tokenized = await stub.Tokenize(embedding_pb2.TokenizeRequest(texts=TEXTS, add_special_tokens=True))
    ids = [embedding_pb2.TokenIds(ids=[t.id for t in tokens.tokens]) for tokens in tokenized.results]
    np.testing.assert_allclose(await embed(stub, token_ids=ids), await embed(stub, texts=TEXTS), atol=FP32_TOLERANCE)
    np.testing.assert_allclose(await embed(stub, token_ids=ids, prompt_name="query"), await embed(stub, texts=TEXTS),
                               atol=FP32_TOLERANCE, err_msg="token ids are embedded as they are, prompt or not")
    reply = await stub.Embed(embedding_pb2.EmbedRequest(token_ids=ids[:1], normalize=True))
    assert reply.usage.prompt_tokens == len(ids[0].ids)


@pytest.mark.parametrize(("request_fields", "message"), [
    ({"token_ids": [embedding_pb2.TokenIds(ids=[101, 10**6, 102])]}, "token_ids[0][1] is 1000000, outside the vocab"),
    ({"token_ids": [embedding_pb2.TokenIds(ids=[])]}, "token_ids[0] is empty"),
    ({"token_ids": [embedding_pb2.TokenIds(ids=[101] * 300)], "truncate": False}, "has 300 tokens"),
    ({"token_ids": [embedding_pb2.TokenIds(ids=[101])], "texts": ["x"]}, "not both"),
    ({"texts": ["x"], "prompt_name": "nope"}, "unknown prompt_name 'nope'; this model knows: 'classification', "),
])
async def test_bad_token_ids_and_prompt_names_say_what_to_fix(stub, request_fields, message):
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.Embed(embedding_pb2.EmbedRequest(**request_fields))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in refused.value.details()


async def test_prompts_prefix_the_texts_by_name_or_by_cohere_input_type(stub):
    text = ["how do solar panels work?"]
    prefixed = await embed(stub, texts=["query: " + text[0]])
    np.testing.assert_allclose(await embed(stub, texts=text, prompt_name="query"), prefixed, atol=FP32_TOLERANCE)
    np.testing.assert_allclose(await embed(stub, texts=text, input_type="search_query"), prefixed,
                               atol=FP32_TOLERANCE)
    np.testing.assert_allclose(await embed(stub, texts=text, input_type="search_document"),
                               await embed(stub, texts=["passage: " + text[0]]), atol=FP32_TOLERANCE)
    plain = await embed(stub, texts=text)
    np.testing.assert_allclose(await embed(stub, texts=text, input_type="clustering"), plain, atol=FP32_TOLERANCE)
    assert not np.allclose(prefixed, plain, atol=1e-3), "the prompt changes the vector"


async def test_info_lists_the_prompts_and_the_vocabulary(stub):
    info = await stub.Info(common_pb2.InfoRequest())
    assert dict(info.prompts) == PROMPTS and info.vocab_size == 30522
