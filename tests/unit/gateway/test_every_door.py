"""Every protocol's door to every task meets every policy the same way: one task pipeline behind all of them.

The table below lists each POST route of the gateway (native, Cohere, BetterPrompts, TorchServe, KServe v1, Open
Inference v2) as a door: how that protocol asks its task for N inputs of a model. Each policy (a tenant's request
limit, its input limit, its daily quota, an unknown model, a bad body, an open breaker, a cache hit, a cache
bypass) is tried at every door against real worker runtimes, and the outcome class must be the policy's, in the
door's protocol's error shape. A POST route missing from the table fails the first test.
"""

import hashlib
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote

import pytest
import yaml
from prometheus_client import REGISTRY

from services.classifier.servicer import ClassifierServicer
from services.classifier.settings import ClassifierSettings
from services.embedding.servicer import EmbeddingServicer
from services.embedding.settings import EmbeddingSettings
from services.reranking.servicer import RerankingServicer
from services.reranking.settings import RerankingSettings
from tests.fakes import FakeAdapter, FakeIntentAdapter, FakePairAdapter
from tests.unit.gateway.conftest import gateway_client
from tests.workers import serving

EMBEDDER, RERANKER, CLASSIFIER = "test/fake-embedder", "test/fake-reranker", "test/fake-classifier"
ALIASES = {"embedder-alias": EMBEDDER, "reranker-alias": RERANKER, "classifier-alias": CLASSIFIER}
UPSTREAM = {EMBEDDER: "embedding", RERANKER: "reranking", CLASSIFIER: "classifier"}
_fresh = itertools.count()


def texts(count: int, tag: str = "") -> list[str]:
    """`count` texts no request has sent before (so none is answered by the cache), or the same ones per `tag`."""
    serial = tag or str(next(_fresh))
    return [f"hello text {serial} number {index}" for index in range(count)]


@dataclass(frozen=True)
class Door:
    """One protocol's way to ask a task: `request(inputs, model)` -> (path, httpx keyword arguments)."""

    name: str
    route: str  # the route's path, as the OpenAPI schema publishes it
    protocol: str  # native | torchserve | kserve
    model: str  # the served model (or alias) its requests name
    request: Callable[[list[str], str], tuple[str, dict]]
    bad_body: dict
    many_inputs: bool = True  # whether one request may carry several inputs
    names_model: bool = True  # whether a request names its model at all

    @property
    def upstream(self) -> str:
        return UPSTREAM[ALIASES.get(self.model, self.model)]


def _json(path: str, body: dict) -> tuple[str, dict]:
    return path, {"json": body}


def _oip(model: str, inputs: dict[str, list[str]], version: str = "") -> tuple[str, dict]:
    tensors = [{"name": name, "datatype": "BYTES", "shape": [len(values)], "data": values}
               for name, values in inputs.items()]
    path = f"/v2/models/{model}/versions/{version}/infer" if version else f"/v2/models/{model}/infer"
    return path, {"json": {"inputs": tensors}}


def _rerank_body(inputs: list[str]) -> dict:
    return {"query": "hello text", "documents": inputs}


def _zero_shot_body(inputs: list[str], model: str | None = None) -> dict:
    """One label, so that a request's inputs are its texts (texts x labels: test_zero_shot_gateway.py)."""
    return {"inputs": inputs, "parameters": {"candidate_labels": ["greeting"]}, **({"model": model} if model else {})}


DOORS = [
    Door("openai-embeddings", "/v1/embeddings", "native", EMBEDDER,
         lambda inputs, model: _json("/v1/embeddings", {"input": inputs, "model": model}), {"input": 5}),
    Door("tei-tokenize", "/tokenize", "native", EMBEDDER,
         lambda inputs, model: _json("/tokenize", {"inputs": inputs, "model": model}), {"inputs": []}),
    Door("cohere-embed", "/v2/embed", "native", EMBEDDER,
         lambda inputs, model: _json("/v2/embed", {"texts": inputs, "model": model}), {"texts": "x"}),
    Door("native-rerank", "/v1/rerank", "native", RERANKER,
         lambda inputs, model: _json("/v1/rerank", {**_rerank_body(inputs), "model": model}), {"query": "q"}),
    Door("cohere-rerank", "/v2/rerank", "native", RERANKER,
         lambda inputs, model: _json("/v2/rerank", {**_rerank_body(inputs), "model": model}), {"documents": []}),
    Door("native-classify", "/v1/classify", "native", CLASSIFIER,
         lambda inputs, model: _json("/v1/classify", {"texts": inputs, "model": model}), {"texts": [1]}),
    Door("hf-zero-shot", "/v1/zero-shot", "native", CLASSIFIER,
         lambda inputs, model: _json("/v1/zero-shot", _zero_shot_body(inputs, model)), {"inputs": []}),
    Door("hf-zero-shot-pipeline", "/hf-inference/models/{model}/pipeline/zero-shot-classification", "native",
         CLASSIFIER, lambda inputs, model: _json(f"/hf-inference/models/{model}/pipeline/zero-shot-classification",
                                                 _zero_shot_body(inputs)), {"parameters": {}}),
    Door("hf-zero-shot-model", "/hf-inference/models/{model}", "native", CLASSIFIER,
         lambda inputs, model: _json(f"/hf-inference/models/{model}", _zero_shot_body(inputs)), {"inputs": 3}),
    Door("betterprompts-one", "/api/v1/intents/classify", "native", CLASSIFIER,
         lambda inputs, model: _json("/api/v1/intents/classify", {"text": inputs[0]}), {"text": ""},
         many_inputs=False, names_model=False),
    Door("betterprompts-batch", "/api/v1/intents/classify/batch", "native", CLASSIFIER,
         lambda inputs, model: _json("/api/v1/intents/classify/batch", {"texts": inputs}), {"texts": []},
         names_model=False),
    *(Door(f"torchserve-{kind}", "/predictions/{model}", "torchserve", served,
           lambda inputs, model, kind=kind: _json(f"/predictions/{quote(model, safe='')}",
                                                  _rerank_body(inputs) if kind == "rerank" else {"data": inputs}),
           {"other": 1})
      for kind, served in (("embed", EMBEDDER), ("rerank", RERANKER), ("classify", CLASSIFIER))),
    *(Door(f"torchserve-version-{kind}", "/predictions/{model}/{version}", "torchserve", alias,
           lambda inputs, model, kind=kind: _json(
               f"/predictions/{model}/{quote(ALIASES.get(model, model), safe='')}",
               _rerank_body(inputs) if kind == "rerank" else {"data": inputs}), {"other": 1})
      for kind, alias in (("embed", "embedder-alias"), ("rerank", "reranker-alias"),
                          ("classify", "classifier-alias"))),
    *(Door(f"kserve-{kind}", "/v1/models/{model}:predict", "kserve", served,
           lambda inputs, model, kind=kind: _json(f"/v1/models/{quote(model, safe='')}:predict",
                                                  _rerank_body(inputs) if kind == "rerank" else {"instances": inputs}),
           {"other": 1})
      for kind, served in (("embed", EMBEDDER), ("rerank", RERANKER), ("classify", CLASSIFIER))),
    *(Door(f"oip-{kind}", "/v2/models/{model}/infer", "kserve", served,
           lambda inputs, model, kind=kind: _oip(model, {"query": ["hello text"], "documents": inputs}
                                                 if kind == "rerank" else {"text": inputs}),
           {"inputs": "x"})
      for kind, served in (("embed", EMBEDDER), ("rerank", RERANKER), ("classify", CLASSIFIER))),
    *(Door(f"oip-version-{kind}", "/v2/models/{model}/versions/{version}/infer", "kserve",
           alias, lambda inputs, model, kind=kind: _oip(model, {"query": ["hello text"], "documents": inputs}
                                                        if kind == "rerank" else {"text": inputs},
                                                        version=ALIASES.get(model, model)),
           {"inputs": "x"})
      for kind, alias in (("embed", "embedder-alias"), ("rerank", "reranker-alias"),
                          ("classify", "classifier-alias"))),
]
# The documents routes' doors need a documents worker, whose Docling is not in the gateway's environment: they meet
# the same policies in tests/integration/test_documents_gateway.py.
DOCUMENT_ROUTES = {"/v1/chunk", "/v1/chunk/hybrid/file", "/v1/chunk/hybrid/source", "/v1/convert/file"}
# The batch jobs' routes are no task's call: a batch's lines run through the doors above (test_batches.py).
JOB_ROUTES = {"/v1/files", "/v1/batches", "/v1/batches/{batch_id}/cancel"}
POLICIES = ["request_limit", "input_limit", "input_rate", "quota", "unknown_model", "bad_body", "breaker_open",
            "cache_hit", "cache_bypass"]


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def tenants(door: Door) -> dict:
    """Per door, one tenant per limit, so that no door spends another's buckets."""
    return {
        f"open-{door.name}": {"keys_sha256": [digest(f"open-{door.name}")]},
        f"requests-{door.name}": {"keys_sha256": [digest(f"requests-{door.name}")], "requests_per_second": 0.001,
                                  "burst": 1},
        f"inputs-{door.name}": {"keys_sha256": [digest(f"inputs-{door.name}")], "inputs_per_second": 0.001,
                                "inputs_burst": 4},
        f"quota-{door.name}": {"keys_sha256": [digest(f"quota-{door.name}")], "daily_tokens": 1},
    }


@pytest.fixture(scope="module")
async def gateway(tmp_path_factory):
    directory = tmp_path_factory.mktemp("doors")
    tenants_file = directory / "tenants.yaml"
    tenants_file.write_text(yaml.safe_dump({"tenants": {name: spec for door in DOORS
                                                        for name, spec in tenants(door).items()}}))
    routes_file = directory / "routes.yaml"
    routes_file.write_text(yaml.safe_dump({"aliases": {alias: {"versions": [{"model": model, "weight": 1}]}
                                                       for alias, model in ALIASES.items()}}))
    worker = {"port": 0, "metrics_port": 0, "grace_period_s": 1}
    async with serving(EmbeddingServicer(FakeAdapter(model_id=EMBEDDER), EmbeddingSettings(**worker))) as embedder, \
            serving(RerankingServicer(FakePairAdapter(model_id=RERANKER), RerankingSettings(**worker))) as reranker, \
            serving(ClassifierServicer(FakeIntentAdapter(model_id=CLASSIFIER), ClassifierSettings(**worker))) as \
            classifier:
        async with gateway_client(f"127.0.0.1:{embedder.port}", reranking=f"127.0.0.1:{reranker.port}",
                                  classifier=f"127.0.0.1:{classifier.port}", tenants_file=str(tenants_file),
                                  routes_file=str(routes_file)) as client:
            yield client


def outcome(reply) -> str:
    return {200: "ok", 400: "bad_body", 422: "bad_body", 404: "not_found", 413: "too_many_inputs",
            429: "rate_limited", 503: "unavailable"}.get(reply.status_code, str(reply.status_code))


def assert_error_shape(door: Door, reply) -> None:
    """The refusal is written in the door's protocol, with a message that says what to fix."""
    body = reply.json()
    if door.protocol == "torchserve":
        assert body["code"] == reply.status_code and body["type"] and body["message"], body
    elif door.protocol == "kserve":
        assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"], body
    else:
        assert body["error"]["type"] and body["error"]["message"], body


def upstream_calls(upstream: str) -> float:
    return REGISTRY.get_sample_value("torchgate_gateway_upstream_calls_total",
                                     {"upstream": upstream, "code": "OK"}) or 0.0


async def send(gateway, door: Door, inputs: list[str], key: str, model: str | None = None, headers=None):
    path, arguments = door.request(inputs, model or door.model)
    return await gateway.post(path, headers={"Authorization": f"Bearer {key}-{door.name}", **(headers or {})},
                              **arguments)


async def test_the_table_holds_every_post_route_of_the_gateway(gateway):
    declared = {path for path, operations in gateway.app.openapi()["paths"].items() if "post" in operations}
    assert declared == {door.route for door in DOORS} | DOCUMENT_ROUTES | JOB_ROUTES, \
        "a POST route is missing from DOORS (or DOORS names a gone one)"


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("door", DOORS, ids=lambda door: door.name)
async def test_every_door_meets_every_policy_alike(gateway, door: Door, policy: str):
    one = texts(1)
    if policy == "request_limit":
        first, second = [await send(gateway, door, texts(1), "requests") for _ in range(2)]
        assert (outcome(first), outcome(second)) == ("ok", "rate_limited"), second.text
        assert second.headers["Retry-After"] and "requests rate" in second.text
        assert_error_shape(door, second)
    elif policy == "input_limit":
        if not door.many_inputs:
            pytest.skip("this door carries one input per request: see input_rate")
        reply = await send(gateway, door, texts(8), "inputs")
        assert outcome(reply) == "too_many_inputs" and "at most 4" in reply.text, reply.text
        assert_error_shape(door, reply)
    elif policy == "input_rate":
        replies = [await send(gateway, door, texts(1), "inputs") for _ in range(5)]
        assert [outcome(reply) for reply in replies] == ["ok"] * 4 + ["rate_limited"], replies[-1].text
        assert "inputs rate" in replies[-1].text
        assert_error_shape(door, replies[-1])
    elif policy == "quota":
        first, second = [await send(gateway, door, texts(1), "quota") for _ in range(2)]
        # Tokenization runs no model: it spends no tokens, so the quota never stops it.
        expected = "ok" if door.name == "tei-tokenize" else "rate_limited"
        assert (outcome(first), outcome(second)) == ("ok", expected), second.text
        if expected == "rate_limited":
            assert "tokens for today" in second.text
            assert_error_shape(door, second)
    elif policy == "unknown_model":
        if not door.names_model:
            pytest.skip("this protocol names no model: it always calls the default one")
        reply = await send(gateway, door, one, "open", model="nobody")
        assert outcome(reply) == "not_found" and "nobody" in reply.text, reply.text
        assert_error_shape(door, reply)
    elif policy == "bad_body":
        path, _ = door.request(one, door.model)
        reply = await gateway.post(path, json=door.bad_body, headers={"Authorization": f"Bearer open-{door.name}"})
        assert outcome(reply) == "bad_body", reply.text
        assert_error_shape(door, reply)
    elif policy == "breaker_open":
        pool = gateway.app.state.pools[door.upstream].pools[0]
        pool.breaker.open()
        try:
            reply = await send(gateway, door, one, "open")
        finally:
            pool.breaker.close()
        assert outcome(reply) == "unavailable" and int(reply.headers["Retry-After"]) >= 1, reply.text
        assert_error_shape(door, reply)
    else:
        repeated = texts(2 if door.many_inputs else 1, tag=f"{door.name}-{policy}")
        assert outcome(await send(gateway, door, repeated, "open")) == "ok"
        before = upstream_calls(door.upstream)
        headers = {"Cache-Control": "no-cache"} if policy == "cache_bypass" else {}
        again = await send(gateway, door, repeated, "open", headers=headers)
        assert outcome(again) == "ok", again.text
        cached = door.name != "tei-tokenize"  # tokenization is not cached (gateway/tasks/tokenize.py)
        computed = upstream_calls(door.upstream) - before
        assert computed == (1 if policy == "cache_bypass" or not cached else 0), computed
