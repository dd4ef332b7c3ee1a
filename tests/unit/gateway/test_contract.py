"""One input contract on every route: the same texts are refused (and accepted) wherever a text goes,
and /openapi.json states exactly the limits the workers enforce."""

import json
import time

import pytest

from gateway.contract import MAX_NAME_CHARS, NON_BLANK, UINT32_MAX
from tests.unit.gateway.conftest import gateway_client

# Where a text can go: (route, field path in the error message, body with the text in that place).
TEXT_PLACES = [
    ("/v1/embeddings", "input", lambda text: {"input": text}),
    ("/v1/embeddings", "input.1", lambda text: {"input": ["fine", text]}),
    ("/v1/rerank", "query", lambda text: {"query": text, "documents": ["fine"]}),
    ("/v1/rerank", "documents.1", lambda text: {"query": "fine", "documents": ["fine", text]}),
    ("/v1/rerank", "documents.0", lambda text: {"query": "fine", "documents": [{"text": text}]}),
    ("/v1/classify", "text", lambda text: {"text": text}),
    ("/v1/classify", "texts.0", lambda text: {"texts": [text]}),
    ("/api/v1/intents/classify", "text", lambda text: {"text": text}),
    ("/api/v1/intents/classify/batch", "texts.1", lambda text: {"texts": ["fine", text]}),
]
PLACE_IDS = [f"{route}:{field}" for route, field, _ in TEXT_PLACES]

NOT_TEXT = {
    "empty": ("", "at least 1 character"),
    "spaces": ("   ", "non-whitespace"),
    "unicode whitespace": ("\t\n\u3000\u00a0\u2028", "non-whitespace"),
    "lone surrogate": ("ok \ud800", "lone UTF-16 surrogate"),
    "number": (7, ""),
    "null": (None, ""),
}


@pytest.fixture
def workers(fake_embedding_worker, fake_reranking_worker, fake_classifier_worker):
    return {"embedding": fake_embedding_worker, "reranking": fake_reranking_worker,
            "classifier": fake_classifier_worker}


@pytest.fixture
async def client(fake_embedding_worker, fake_reranking_worker, fake_classifier_worker):
    async with gateway_client(f"127.0.0.1:{fake_embedding_worker.port}",
                              reranking=f"127.0.0.1:{fake_reranking_worker.port}",
                              classifier=f"127.0.0.1:{fake_classifier_worker.port}") as client:
        yield client


UPSTREAM_OF = {"/v1/embeddings": "embedding", "/v1/rerank": "reranking", "/v1/classify": "classifier",
               "/api/v1/intents/classify": "classifier", "/api/v1/intents/classify/batch": "classifier"}


def limits_of(client, route: str):
    """The limits the gateway learned from the worker behind `route`."""
    return client.app.state.upstreams[UPSTREAM_OF[route]].limits


async def post(client, route: str, body: dict):
    """JSON as client libraries send it: non-ASCII escaped, so a lone surrogate travels as \\ud800."""
    return await client.post(route, content=json.dumps(body).encode(), headers={"Content-Type": "application/json"})


@pytest.mark.parametrize("kind", NOT_TEXT)
@pytest.mark.parametrize(("route", "field", "body"), TEXT_PLACES, ids=PLACE_IDS)
async def test_what_is_not_a_text_is_a_422_naming_the_field(client, route, field, body, kind):
    value, explanation = NOT_TEXT[kind]
    reply = await post(client, route, body(value))
    assert reply.status_code == 422, reply.text
    message = reply.json()["error"]["message"]
    assert message.startswith(field) and explanation in message, message


@pytest.mark.parametrize("text", ["x", " x ", "\u00e9", "\U0001f600", "a\u3000b"], ids=repr)
@pytest.mark.parametrize(("route", "field", "body"), TEXT_PLACES, ids=PLACE_IDS)
async def test_any_text_with_one_visible_character_is_served(client, route, field, body, text):
    reply = await post(client, route, body(text))
    assert reply.status_code == 200, reply.text


@pytest.mark.parametrize(("route", "field", "body"), TEXT_PLACES, ids=PLACE_IDS)
async def test_a_text_over_the_workers_limit_is_a_422_before_forwarding(client, route, field, body):
    limits = limits_of(client, route)
    reply = await post(client, route, body("x" * (limits.max_chars + 1)))
    at_limit = await post(client, route, body("x" * limits.max_chars))
    assert reply.status_code == 422
    assert f"has {limits.max_chars + 1} characters; the limit is {limits.max_chars}" in reply.json()["error"]["message"]
    assert at_limit.status_code == 200


@pytest.mark.parametrize(("route", "body"), [
    ("/v1/embeddings", lambda n: {"input": ["t"] * n}),
    ("/v1/rerank", lambda n: {"query": "q", "documents": ["t"] * n}),
    ("/v1/classify", lambda n: {"texts": ["t"] * n}),
])
async def test_item_counts_are_bounded_by_the_worker_and_never_empty(client, route, body):
    limits = limits_of(client, route)
    assert (await post(client, route, body(limits.max_items))).status_code == 200
    over = await post(client, route, body(limits.max_items + 1))
    assert over.status_code == 422 and f"at most {limits.max_items}" in over.json()["error"]["message"]
    assert (await post(client, route, body(0))).status_code == 422


@pytest.mark.parametrize(("value", "status"), [
    (4, 200), (4.0, 200), (0, 422), (-1, 422), (4.5, 422), ("4", 422), (True, 422), (UINT32_MAX + 1, 422),
])
async def test_integers_are_json_integers_within_range(client, value, status):
    reply = await post(client, "/v1/embeddings", {"input": "x", "dimensions": value})
    assert reply.status_code == status, reply.text
    if status == 200:
        assert len(reply.json()["data"][0]["embedding"]) == 4


async def test_model_names_are_bounded_and_unknown_ones_are_a_404_with_a_clipped_echo(client):
    limits = limits_of(client, "/v1/embeddings")
    full = limits.model_id
    short = full.rsplit("/", 1)[-1]
    assert short != full
    for name in (full, short):
        assert (await post(client, "/v1/embeddings", {"input": "x", "model": name})).status_code == 200
    unknown = await post(client, "/v1/embeddings", {"input": "x", "model": "n" * MAX_NAME_CHARS})
    assert unknown.status_code == 404
    message = unknown.json()["error"]["message"]
    assert "n" * 80 + "…" in message and "n" * 81 not in message and repr(full) in message
    too_long = await post(client, "/v1/embeddings", {"input": "x", "model": "n" * (MAX_NAME_CHARS + 1)})
    assert too_long.status_code == 422 and too_long.json()["error"]["message"].startswith("model")


def schema_of(openapi: dict, route: str) -> dict:
    reference = openapi["paths"][route]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    return openapi["components"]["schemas"][reference.rsplit("/", 1)[-1]]


def text_schemas(node) -> list[dict]:
    """Every string schema that carries a text's pattern."""
    found = []
    if isinstance(node, dict):
        if node.get("type") == "string" and "pattern" in node:
            found.append(node)
        for value in node.values():
            found += text_schemas(value)
    elif isinstance(node, list):
        for value in node:
            found += text_schemas(value)
    return found


async def test_the_schema_states_the_same_text_rules_and_worker_limits(client):
    openapi = (await client.get("/openapi.json")).json()
    for route in ("/v1/embeddings", "/v1/rerank", "/v1/classify", "/api/v1/intents/classify"):
        limits = limits_of(client, route)
        texts = text_schemas(openapi) if route == "/v1/rerank" else text_schemas(schema_of(openapi, route))
        assert texts, route
        for text in texts:
            assert (text["minLength"], text["pattern"]) == (1, NON_BLANK), (route, text)
            assert text["description"]
        assert any(text.get("maxLength") == limits.max_chars for text in texts), route
    embeddings = schema_of(openapi, "/v1/embeddings")["properties"]
    as_texts, as_token_ids = (kind["anyOf"] for kind in embeddings["input"]["oneOf"])
    lists = [branch for branch in as_texts if branch.get("type") == "array"]
    assert [branch["maxItems"] for branch in lists] == [limits_of(client, "/v1/embeddings").max_items]
    assert as_token_ids[1]["maxItems"] == limits_of(client, "/v1/embeddings").max_items
    assert embeddings["dimensions"]["maximum"] == limits_of(client, "/v1/embeddings").dimension
    [integer] = [branch for branch in embeddings["dimensions"]["anyOf"] if branch.get("type") == "integer"]
    assert (integer["minimum"], integer["maximum"]) == (1, UINT32_MAX)
    documents = schema_of(openapi, "/v1/rerank")["properties"]["documents"]
    assert documents["maxItems"] == limits_of(client, "/v1/rerank").max_items


MODEL_ROUTES = [
    ("/v1/embeddings", {"input": "x"}),
    ("/v1/rerank", {"query": "q", "documents": ["d"]}),
    ("/v1/classify", {"text": "x"}),
    ("/api/v1/intents/classify", {"text": "x"}),
    ("/api/v1/intents/classify/batch", {"texts": ["x"]}),
]
# The better-prompts routes keep that API's body, which has no timeout field: the header sets their deadline.
DEADLINE_CASES = [(route, body, "header") for route, body in MODEL_ROUTES] + [
    (route, body, "body") for route, body in MODEL_ROUTES if route.startswith("/v1/")]


@pytest.mark.parametrize(("route", "body", "given_in"), DEADLINE_CASES)
async def test_every_model_route_gives_up_at_the_callers_deadline(client, workers, route, body, given_in):
    gate = workers[UPSTREAM_OF[route]].servicer.adapter.gate
    gate.clear()
    try:
        started = time.monotonic()
        if given_in == "body":
            reply = await post(client, route, {**body, "timeout": 0.3})
        else:
            reply = await client.post(route, json=body, headers={"X-Request-Timeout": "0.3"})
        waited = time.monotonic() - started
    finally:
        gate.set()
    assert reply.status_code == 504, reply.text
    assert waited < 5, "the default deadline (30 s) was used instead of the caller's"


async def test_the_requested_model_reaches_the_classifier(client):
    served = limits_of(client, "/v1/classify").model_id
    short = served.rsplit("/", 1)[-1]
    by_short_name = await post(client, "/v1/classify", {"text": "x", "model": short})
    unknown = await post(client, "/v1/classify", {"text": "x", "model": "other/model"})
    assert by_short_name.status_code == 200 and by_short_name.json()["model"] == served
    assert unknown.status_code == 404 and unknown.json()["error"]["upstream"] == "classifier"
