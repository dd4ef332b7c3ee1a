"""TorchServe's and KServe v1's routes (gateway/routes/torchserve.py): the seed client's calls replayed with
httpx; answers equal the native routes'; every body shape TorchServe clients send; errors in their shape."""

import numpy as np
import pytest
import yaml

from tests.unit.gateway.conftest import gateway_client, unused_address

INTENT_CLASSIFIER = "intent_classifier"


@pytest.fixture
async def mesh(fake_embedding_worker, fake_reranking_worker, fake_classifier_worker):
    """Every model pool served (by fakes that each call their model `test/fake-model`)."""
    async with gateway_client(f"127.0.0.1:{fake_embedding_worker.port}",
                              reranking=f"127.0.0.1:{fake_reranking_worker.port}",
                              classifier=f"127.0.0.1:{fake_classifier_worker.port}") as client:
        yield client


async def test_the_seed_clients_calls_get_torchserves_answers(fake_classifier_worker, tmp_path):
    routes = tmp_path / "routes.yaml"
    routes.write_text(yaml.safe_dump({"aliases": {INTENT_CLASSIFIER: {"versions": [
        {"model": "fake-model", "weight": 1}]}}}))
    async with gateway_client(unused_address(), classifier=f"127.0.0.1:{fake_classifier_worker.port}",
                              routes_file=str(routes)) as client:
        ping = await client.get("/ping")
        predicted = await client.post(f"/predictions/{INTENT_CLASSIFIER}", json={"text": "hello there"})
        raw = await client.post(f"/predictions/{INTENT_CLASSIFIER}", content=b"hello there",
                                headers={"Content-Type": "text/plain"})
        form = await client.post(f"/predictions/{INTENT_CLASSIFIER}", files={"data": ("t.txt", b"hello there")})
        batch = await client.post(f"/predictions/{INTENT_CLASSIFIER}", json=["hello there", "bye now"])
        native = await client.post("/v1/classify", json={"texts": ["hello there", "bye now"], "top_k": 100,
                                                         "force_intent": True})
        described = await client.get(f"/models/{INTENT_CLASSIFIER}")
        listed = await client.get("/models")
    # Only the classifier runs: the embedding and reranking pools have no healthy replica.
    assert ping.status_code == 500 and ping.json() == {"status": "Unhealthy"}
    assert predicted.status_code == 200, predicted.text
    scores = predicted.json()
    assert max(scores, key=scores.get) == "greeting" and sum(scores.values()) == pytest.approx(1, abs=1e-4)
    assert raw.json() == scores and form.json() == scores
    expected = [{entry["intent"]: entry["score"] for entry in result["top"]} for result in native.json()["results"]]
    assert batch.json() == expected
    [model] = described.json()
    assert model["modelName"] == INTENT_CLASSIFIER and model["workers"][0]["status"] == "READY"
    assert {"modelName": INTENT_CLASSIFIER, "modelUrl": INTENT_CLASSIFIER} in listed.json()["models"]


async def test_a_name_several_tasks_serve_must_be_given_in_full(mesh):
    reply = await mesh.post("/predictions/fake-model", json=["alpha"])
    assert reply.status_code == 400 and "several tasks" in reply.json()["message"]


async def test_embeddings_and_kserve_answer_as_the_native_routes(fake_embedding_worker):
    async with gateway_client(f"127.0.0.1:{fake_embedding_worker.port}") as client:
        vectors = await client.post("/predictions/fake-model", json={"instances": ["alpha", "beta gamma"]})
        one = await client.post("/predictions/fake-model", content=b"alpha")
        native = await client.post("/v1/embeddings", json={"input": ["alpha", "beta gamma"]})
        kserve = await client.post("/v1/models/fake-model:predict", json={"instances": ["alpha", "beta gamma"]})
    expected = [item["embedding"] for item in native.json()["data"]]
    np.testing.assert_array_equal(vectors.json(), expected)
    np.testing.assert_array_equal(one.json(), expected[0])
    np.testing.assert_array_equal(kserve.json()["predictions"], expected)


async def test_a_reranker_takes_query_and_documents(fake_reranking_worker):
    async with gateway_client(unused_address(), reranking=f"127.0.0.1:{fake_reranking_worker.port}") as client:
        documents = ["a red car", "blue sky", "red"]
        scored = await client.post("/predictions/fake-model", json={"query": "red car", "documents": documents})
        native = await client.post("/v1/rerank", json={"query": "red car", "documents": documents})
    assert [(r["index"], r["score"]) for r in scored.json()] == [
        (r["index"], r["relevance_score"]) for r in native.json()["results"]]
    assert [r["document"] for r in scored.json()] == [documents[r["index"]] for r in scored.json()]


@pytest.mark.parametrize(("path", "body", "status", "kind"), [
    ("/predictions/nobody", b'"hi"', 404, "ModelNotFoundException"),
    ("/predictions/fake-model", b"\xff\xfe", 400, "BadRequestException"),
    ("/predictions/fake-model", b"", 400, "BadRequestException"),
    ("/predictions/fake-model", b"[]", 400, "BadRequestException"),
    ("/predictions/fake-model", b'{"other": 1}', 400, "BadRequestException"),
    ("/predictions/fake-model", b'{"text": ', 400, "BadRequestException"),
    ("/predictions/fake-model/9.9", b'"hi"', 404, "ModelNotFoundException"),
    ("/predictions/test/fake-model", b'"hi"', 404, "ModelNotFoundException"),
    ("/predictions/fake-model", b'["\\ud800"]', 400, "BadRequestException"),
])
async def test_bad_input_gets_torchserves_error_shape(mesh, path, body, status, kind):
    reply = await mesh.post(path, content=body, headers={"Content-Type": "application/json"})
    assert reply.status_code == status, reply.text
    assert reply.json()["code"] == status and reply.json()["type"] == kind and reply.json()["message"]


async def test_every_pool_healthy_is_a_healthy_ping(mesh):
    assert (await mesh.get("/ping")).json() == {"status": "Healthy"}


async def test_kserve_errors_are_its_own_shape(mesh):
    reply = await mesh.post("/v1/models/nobody:predict", json={"instances": ["x"]})
    assert reply.status_code == 404 and set(reply.json()) == {"error"}


async def test_one_tasks_hostile_inputs_are_refused_in_torchserves_shape(fake_embedding_worker, fake_reranking_worker):
    async with gateway_client(f"127.0.0.1:{fake_embedding_worker.port}") as client:
        too_many = await client.post("/predictions/fake-model", json=["x"] * 5000)
    async with gateway_client(unused_address(), reranking=f"127.0.0.1:{fake_reranking_worker.port}") as client:
        surrogate = await client.post("/predictions/fake-model", content=b'{"query": "\\ud800", "documents": ["a"]}',
                                      headers={"Content-Type": "application/json"})
    assert too_many.status_code == 422 and too_many.json()["code"] == 422 and "split" in too_many.json()["message"]
    assert surrogate.status_code == 400 and "surrogate" in surrogate.json()["message"]
