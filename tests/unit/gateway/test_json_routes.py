"""The POST routes the edge runs itself (gateway/json_routes.py): what a body that is not the contract gets back,
and which routes the edge agrees to run."""

import logging

import orjson
import pytest
from fastapi import APIRouter, Depends, Request

from gateway.contract import RequestBody
from gateway.json_routes import JsonRoute, json_routes
from tests.unit.gateway.conftest import gateway_client

JSON = {"content-type": "application/json"}


@pytest.mark.parametrize(("body", "message"), [
    (b"", "body: empty; send a JSON object"),
    (b'{"input": "a"', "body: not valid JSON (Expecting ',' delimiter: line 1 column 14 (char 13))"),
    (b'{"input": "a"} {}', "body: not valid JSON (Extra data: line 1 column 16 (char 15))"),
    (b"\xff\xfe\xfa", "body: not valid JSON ("),
    (b'{"input": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "body: JSON nested too deeply"),
    (b'["a"]', "body: send a JSON object"),
    (b"null", "body: send a JSON object"),
    (b'{"input": 5}', "input: "),
    (b'{"input": "a", "dimensions": "2"}', "dimensions: Input should be a valid integer"),
])
async def test_a_body_outside_the_contract_is_a_422_that_says_what_to_fix(fake_embedding_worker, body, message):
    async with gateway_client(f"127.0.0.1:{fake_embedding_worker.port}") as client:
        reply = await client.post("/v1/embeddings", content=body, headers=JSON)
    assert reply.status_code == 422
    assert reply.json()["error"]["type"] == "invalid_request_error"
    assert reply.json()["error"]["message"].startswith(message)
    assert "EmbeddingsRequest" not in reply.text


async def test_a_body_sent_without_a_content_type_is_read_as_json(fake_embedding_worker):
    async with gateway_client(f"127.0.0.1:{fake_embedding_worker.port}") as client:
        reply = await client.post("/v1/embeddings", content=b'{"input": ["alpha", "beta"]}')
        wrong_type = await client.post("/v1/embeddings", content=b'{"input": "alpha"}',
                                       headers={"content-type": "text/plain"})
    assert reply.status_code == 200, reply.text
    assert [item["index"] for item in reply.json()["data"]] == [0, 1]
    assert wrong_type.status_code == 415


async def test_other_methods_on_a_json_route_stay_405(fake_embedding_worker):
    async with gateway_client(f"127.0.0.1:{fake_embedding_worker.port}") as client:
        replies = [await client.request(method, "/v1/embeddings", json={"input": "a"}) for method in ("GET", "PUT")]
    assert [reply.status_code for reply in replies] == [405, 405]


class Body(RequestBody):
    text: str


async def _call(route: JsonRoute, body: bytes) -> tuple[int, dict]:
    scope = {"type": "http", "method": "POST", "path": "/x", "headers": [], "query_string": b""}
    sent = []

    async def receive():
        return {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    await route(scope, JsonRoute.load(body), receive, send)
    return sent[0]["status"], orjson.loads(sent[1]["body"])


async def test_an_unexpected_error_is_logged_and_answered_as_a_bare_500(caplog):
    async def broken(body: Body, request: Request):
        raise RuntimeError("secret internals")

    with caplog.at_level(logging.ERROR, logger="gateway.errors"):
        status, reply = await _call(JsonRoute(Body, broken), b'{"text": "a"}')
    assert (status, reply) == (500, {"error": {"type": "internal_error", "message": "internal error"}})
    assert "secret internals" in caplog.text and "POST /x" in caplog.text


def test_the_edge_runs_only_post_routes_that_take_a_body_and_the_request():
    good, extra_parameter, with_dependency = APIRouter(), APIRouter(), APIRouter()

    @good.post("/ok")
    async def ok(body: Body, request: Request):
        return None

    @good.get("/listing")
    async def listing(request: Request):
        return None

    @extra_parameter.post("/paged")
    async def paged(body: Body, request: Request, page: int = 0):
        return None

    @with_dependency.post("/guarded", dependencies=[Depends(lambda: None)])
    async def guarded(body: Body, request: Request):
        return None

    table = json_routes([good])
    assert set(table) == {"/ok"} and table["/ok"].body is Body
    for router, path in ((extra_parameter, "/paged"), (with_dependency, "/guarded")):
        with pytest.raises(TypeError, match=f"POST {path}"):
            json_routes([router])
