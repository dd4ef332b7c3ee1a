"""Aliases with weighted versions (gateway/rollout.py): the split follows the weights, a caller keeps its
version, a weight change moves only the callers it must, pins, reloads and what a routing file may not say."""

import asyncio
import logging
from contextlib import AsyncExitStack
from dataclasses import dataclass

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from gateway.rollout import RoutesFile, Routing
from services.embedding.servicer import EmbeddingServicer
from services.embedding.settings import EmbeddingSettings
from tests.fakes import FakeAdapter
from tests.unit.gateway.conftest import gateway_client
from tests.workers import serving

MINI, BGE = "test/mini-embedder", "test/bge-small"


@dataclass
class Pools:
    addresses: str
    workers: list


@pytest.fixture
async def two_models():
    """Two embedding pools: `test/mini-embedder` (the default) and `test/bge-small`."""
    async with AsyncExitStack() as stack:
        workers = [await stack.enter_async_context(serving(EmbeddingServicer(
            FakeAdapter(model_id=model_id), EmbeddingSettings(port=0, metrics_port=0, grace_period_s=1))))
            for model_id in (MINI, BGE)]
        yield Pools(";".join(f"127.0.0.1:{worker.port}" for worker in workers), workers)


def write_routes(path, **weights) -> str:
    path.write_text(yaml.safe_dump({"aliases": {"embed-default": {"versions": [
        {"model": model, "weight": weight} for model, weight in weights.items()]}}}))
    return str(path)


def served_by(routing: Routing, users: range, alias: str = "embed-default") -> dict[int, str]:
    return {user: routing.resolve(alias, f"user-{user}")[0] for user in users}


def test_the_split_follows_the_weights_and_a_weight_change_moves_only_the_callers_it_must():
    def routing(mini: float, bge: float) -> Routing:
        return Routing(RoutesFile.model_validate({"aliases": {"embed-default": {"versions": [
            {"model": MINI, "weight": mini}, {"model": BGE, "weight": bge}]}}}))

    users = range(20_000)
    before, after = served_by(routing(90, 10), users), served_by(routing(80, 20), users)
    share = sum(model == BGE for model in before.values()) / len(users)
    assert abs(share - 0.10) < 0.03
    moved = [user for user in users if before[user] != after[user]]
    assert all(before[user] == MINI and after[user] == BGE for user in moved), "only towards the heavier weight"
    assert abs(len(moved) / len(users) - 0.10) < 0.02
    assert served_by(routing(90, 10), users) == before, "sticky: the same callers, the same versions"
    assert set(served_by(routing(100, 0), users).values()) == {MINI}


async def test_two_thousand_users_split_by_weight_stay_put_and_are_told_their_version(two_models, tmp_path):
    routes = write_routes(tmp_path / "routes.yaml", **{MINI: 90, BGE: 10})
    async with gateway_client(two_models.addresses, routes_file=routes) as client:
        async def version(user: int) -> str:
            reply = await client.post("/v1/embeddings", json={"input": "x", "model": "embed-default",
                                                              "user": f"user-{user}"})
            assert reply.status_code == 200, reply.text
            assert reply.headers["X-Torchgate-Version"] == reply.json()["model"]
            return reply.json()["model"]

        versions = {user: await version(user) for user in range(2000)}
        again = {user: await version(user) for user in range(0, 2000, 50)}
        metrics = (await client.get("/metrics")).text
    share = sum(model == BGE for model in versions.values()) / len(versions)
    assert abs(share - 0.10) <= 0.03, share
    assert all(versions[user] == model for user, model in again.items())
    counted = sum(sample.value for family in text_string_to_metric_families(metrics) for sample in family.samples
                  if sample.name == "torchgate_gateway_alias_requests_total"
                  and sample.labels["alias"] == "embed-default" and sample.labels["version"] == BGE)
    assert counted >= sum(model == BGE for model in versions.values())


async def test_a_version_can_be_pinned_and_unknown_names_say_what_is_served(two_models, tmp_path):
    routes = write_routes(tmp_path / "routes.yaml", **{MINI: 100, BGE: 0})
    async with gateway_client(two_models.addresses, routes_file=routes) as client:
        pinned = await client.post("/v1/embeddings", json={"input": "x", "model": f"embed-default@{BGE}"})
        by_header = await client.post("/v1/embeddings", json={"input": "x", "model": "embed-default"},
                                      headers={"X-Torchgate-Version": BGE})
        wrong_pin = await client.post("/v1/embeddings", json={"input": "x", "model": "embed-default@gpt-9"})
        unknown = await client.post("/v1/embeddings", json={"input": "x", "model": "no-such-alias"})
        plain = await client.post("/v1/embeddings", json={"input": "x", "model": BGE})
    assert pinned.json()["model"] == BGE and by_header.json()["model"] == BGE
    assert wrong_pin.status_code == 404 and "not a version of 'embed-default'" in wrong_pin.json()["error"]["message"]
    assert unknown.status_code == 404 and "embed-default" in unknown.json()["error"]["message"]
    assert plain.status_code == 200 and "X-Torchgate-Version" not in plain.headers


async def test_a_reload_applies_at_once_and_a_bad_file_keeps_the_old_table(two_models, fake_reranking_worker,
                                                                           fake_classifier_worker, tmp_path, caplog):
    """Every pool answered (so names can be checked): an unknown model is refused too."""
    path = tmp_path / "routes.yaml"
    write_routes(path, **{MINI: 100, BGE: 0})
    async with gateway_client(two_models.addresses, routes_file=str(path),
                              reranking=f"127.0.0.1:{fake_reranking_worker.port}",
                              classifier=f"127.0.0.1:{fake_classifier_worker.port}") as client:
        async def versions() -> set[str]:
            return {(await client.post("/v1/embeddings", json={"input": "x", "model": "embed-default",
                                                               "user": f"u{user}"})).json()["model"]
                    for user in range(40)}

        assert await versions() == {MINI}
        write_routes(path, **{MINI: 0, BGE: 100})
        client.app.state.reloader.reload_all()
        assert await versions() == {BGE}
        bad = [{"aliases": {"embed-default": {"versions": [{"model": MINI, "weight": 0}]}}},
               {"aliases": {"embed-default": {"versions": [{"model": "nobody/serves-this", "weight": 1}]}}},
               {"aliases": {"embed-default": {"versions": [{"model": "other-alias", "weight": 1}]},
                            "other-alias": {"versions": [{"model": "embed-default", "weight": 1}]}}},
               {"aliases": {MINI.split("/")[1]: {"versions": [{"model": BGE, "weight": 1}]}}},
               {"aliases": {"embed-default": {"versions": [{"model": BGE, "weight": 1}],
                                              "shadow": {"model": "embed-default", "fraction": 0.5}}}}]
        for document in bad:
            path.write_text(yaml.safe_dump(document))
            with caplog.at_level(logging.ERROR):
                client.app.state.reloader.reload_all()
            assert "routing file" in caplog.text and "not reloaded" in caplog.text
            caplog.clear()
            assert await versions() == {BGE}, document


def shadow_calls(metrics: str, outcome: str) -> float:
    return sum(sample.value for family in text_string_to_metric_families(metrics) for sample in family.samples
               if sample.name == "torchgate_gateway_shadow_calls_total" and sample.labels["outcome"] == outcome)


async def test_a_shadow_is_mirrored_after_the_answer_measured_and_its_failures_never_reach_the_client(
        two_models, tmp_path):
    path = tmp_path / "routes.yaml"
    path.write_text(yaml.safe_dump({"aliases": {"embed-default": {
        "versions": [{"model": MINI, "weight": 1}], "shadow": {"model": BGE, "fraction": 1.0}}}}))
    async with gateway_client(two_models.addresses, routes_file=str(path)) as client:
        before = (await client.get("/metrics")).text
        replies = [await client.post("/v1/embeddings", json={"input": ["a", "b c", "d e f"], "model": "embed-default"})
                   for _ in range(10)]
        shadows = client.app.state.shadows
        await asyncio.gather(*shadows._running)
        measured = (await client.get("/metrics")).text
        await two_models.workers[1].stop(0)  # the shadow's worker dies
        failing = [await client.post("/v1/embeddings", json={"input": ["g h"], "model": "embed-default"})
                   for _ in range(20)]
        await asyncio.gather(*shadows._running)
        after = (await client.get("/metrics")).text
    assert {reply.json()["model"] for reply in replies + failing} == {MINI}
    assert {reply.status_code for reply in replies + failing} == {200}
    assert shadow_calls(measured, "ok") - shadow_calls(before, "ok") == 10
    agreement = [sample for family in text_string_to_metric_families(measured) for sample in family.samples
                 if sample.name == "torchgate_gateway_shadow_agreement_sum" and sample.labels["shadow"] == BGE]
    assert agreement and agreement[0].value >= 9.99, "the fake models embed alike: cosine 1"
    errors = sum(shadow_calls(after, outcome) - shadow_calls(measured, outcome)
                 for outcome in ("upstream_unavailable", "timeout", "error"))
    assert errors == 20
