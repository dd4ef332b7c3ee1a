"""The APIs peers' clients speak, with those clients: Cohere's ClientV2, OpenAI token ids, TEI's /tokenize."""

import base64

import cohere
import httpx
import numpy as np
import pytest
from openai import OpenAI

from services.reranking.settings import RerankingSettings
from tests.e2e.conftest import running_mesh
from tests.tiny_models import MINILM

PROMPTS = '{"query": "query: ", "document": "passage: "}'
TEXTS = ["Paris is the capital of France.", "Bananas are yellow.", "The stock market fell today."]


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    with running_mesh(tmp_path_factory.mktemp("peers") / "run", TORCHGATE_EMBEDDING_PROMPTS=PROMPTS) as running:
        yield running


@pytest.fixture
def co(mesh):
    return cohere.ClientV2(api_key="unused", base_url=mesh.url)


def float_embeddings(mesh, texts: list[str], **fields) -> np.ndarray:
    reply = httpx.post(f"{mesh.url}/v1/embeddings", json={"input": texts, **fields}, timeout=30)
    assert reply.status_code == 200, reply.text
    return np.array([item["embedding"] for item in reply.json()["data"]], dtype=np.float32)


def test_cohere_v2_embed_returns_every_requested_type_consistently(mesh, co):
    reply = co.embed(model=MINILM, input_type="search_document", texts=TEXTS,
                     embedding_types=["float", "int8", "uint8", "binary", "ubinary", "base64"])
    floats = np.array(reply.embeddings.float_, dtype=np.float32)
    np.testing.assert_allclose(floats, float_embeddings(mesh, TEXTS, prompt_name="document"), atol=1e-5)
    assert floats.shape == (3, 384)
    int8 = np.array(reply.embeddings.int8)
    assert int8.min() >= -128 and int8.max() <= 127
    np.testing.assert_allclose(int8 / 127, floats, atol=0.5 / 127 + 1e-6)
    np.testing.assert_allclose(np.array(reply.embeddings.uint8) / 127.5 - 1, floats, atol=0.5 / 127.5 + 1e-6)
    ubinary = np.array(reply.embeddings.ubinary, dtype=np.uint8)
    assert ubinary.shape == (3, 384 // 8)
    np.testing.assert_array_equal(np.unpackbits(ubinary, axis=1).astype(bool), floats > 0)
    np.testing.assert_array_equal(np.array(reply.embeddings.binary), ubinary.astype(int) - 128)
    decoded = np.stack([np.frombuffer(base64.b64decode(row), dtype="<f4") for row in reply.embeddings.base64])
    np.testing.assert_array_equal(decoded, floats)
    assert reply.texts == TEXTS and reply.meta.billed_units.input_tokens > 0


def test_cohere_input_types_pick_the_prompts_and_unknown_ones_embed_as_is(mesh, co):
    query = co.embed(model=MINILM, input_type="search_query", texts=TEXTS[:1], embedding_types=["float"])
    np.testing.assert_allclose(query.embeddings.float_, float_embeddings(mesh, ["query: " + TEXTS[0]]), atol=1e-5)
    clustering = co.embed(model=MINILM, input_type="clustering", texts=TEXTS[:1], embedding_types=["float"])
    np.testing.assert_allclose(clustering.embeddings.float_, float_embeddings(mesh, TEXTS[:1]), atol=1e-5)


def test_cohere_v2_rerank_ranks_a_long_document_by_its_answering_end(mesh, co):
    filler = " ".join(["The garden needs water in summer, and the roses grow best near the old stone wall."] * 25)
    documents = ["Bananas are yellow.", filler + " Paris is the capital of France.", "Dogs bark at night."]
    # Locally the announced cosine fallback stands in for the configured cross-encoder, which answers to its name.
    configured = RerankingSettings.model_fields["model"].default
    reply = co.rerank(model=configured, query="What is the capital of France?", documents=documents, top_n=2)
    assert [r.index for r in reply.results][0] == 1 and len(reply.results) == 2
    assert reply.results[0].relevance_score >= reply.results[1].relevance_score


def test_openai_token_ids_embed_as_the_text_they_encode_and_tokenize_names_them(mesh):
    tokens = httpx.post(f"{mesh.url}/tokenize", json={"inputs": TEXTS[0]}, timeout=30).json()
    assert tokens[0][0] == {"id": 101, "text": "[CLS]", "special": True, "start": 0, "stop": 0}
    assert [t["text"] for t in tokens[0][1:3]] == ["Paris", "is"] and tokens[0][1]["start"] == 0
    ids = [t["id"] for t in tokens[0]]
    sdk = OpenAI(base_url=f"{mesh.url}/v1", api_key="unused")
    by_ids = sdk.embeddings.create(model=MINILM, input=[ids]).data[0].embedding
    np.testing.assert_allclose(by_ids, float_embeddings(mesh, TEXTS[:1])[0], atol=1e-5)
    outside = httpx.post(f"{mesh.url}/v1/embeddings", json={"input": [101, 99999999, 102]}, timeout=30)
    assert outside.status_code == 400 and "outside the vocabulary" in outside.json()["error"]["message"]


def test_models_list_the_prompts_and_unknown_prompt_names_are_a_400_listing_them(mesh):
    models = httpx.get(f"{mesh.url}/v1/models", timeout=30).json()["data"]
    embedder = next(m for m in models if m["task"] == "embedding")
    assert embedder["prompts"]["query"] == "query: " and embedder["prompts"]["document"] == "passage: "
    unknown = httpx.post(f"{mesh.url}/v1/embeddings", json={"input": "x", "prompt_name": "nope"}, timeout=30)
    assert unknown.status_code == 400 and "'document', 'query'" in unknown.json()["error"]["message"]
