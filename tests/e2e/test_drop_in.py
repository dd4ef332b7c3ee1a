"""Clients of other servers against the real mesh: `tritonclient` over the Open Inference Protocol v2, Hugging Face's
`InferenceClient` for zero-shot classification, and the BetterPrompts classifier's TorchServe calls replayed with
httpx, timeouts included. Answers equal the native routes'.
"""

import struct
from urllib.parse import quote

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.http as triton
import yaml
from tritonclient.utils import InferenceServerException

from tests.e2e.conftest import running_mesh
from tests.tiny_models import MINILM
from torchgate.v1 import classifier_pb2, classifier_pb2_grpc

CLASSIFIER = f"few-shot:{MINILM}"
INTENT_CLASSIFIER = "intent_classifier"
TEXTS = ["Write a poem about spring rain.", "How do I reverse a list in Python?", "Translate 'hello' into French."]
DOCUMENTS = ["Paris is the capital of France.", "Bananas are yellow.", "France's capital city is Paris."]


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    directory = tmp_path_factory.mktemp("drop-in")
    routes = directory / "routes.yaml"
    routes.write_text(yaml.safe_dump({"aliases": {INTENT_CLASSIFIER: {"versions": [{"model": CLASSIFIER,
                                                                                    "weight": 1}]}}}))
    with running_mesh(directory / "run", TORCHGATE_GATEWAY_ROUTES_FILE=str(routes)) as running:
        yield running


@pytest.fixture
def client(mesh):
    connection = triton.InferenceServerClient(mesh.url.removeprefix("http://"), network_timeout=60)
    yield connection
    connection.close()


def texts_input(name: str, texts: list[str], binary: bool = True) -> triton.InferInput:
    tensor = triton.InferInput(name, [len(texts)], "BYTES")
    tensor.set_data_from_numpy(np.array([text.encode() for text in texts], dtype=object), binary_data=binary)
    return tensor


def native(mesh, path: str, body: dict) -> dict:
    reply = httpx.post(f"{mesh.url}{path}", json=body, timeout=60)
    assert reply.status_code == 200, reply.text
    return reply.json()


def test_tritonclient_sees_a_live_ready_server_and_each_models_metadata(client):
    assert client.is_server_live() and client.is_server_ready()
    assert client.get_server_metadata()["name"] == "torchgate"
    assert client.is_model_ready(MINILM)
    metadata = client.get_model_metadata(MINILM)
    assert metadata["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert metadata["outputs"] == [{"name": "embedding", "datatype": "FP32", "shape": [-1, 384]}]
    versions = client.get_model_metadata(INTENT_CLASSIFIER)
    assert versions["versions"] == [CLASSIFIER] and [o["name"] for o in versions["outputs"]] == ["label", "score"]
    assert client.is_model_ready(INTENT_CLASSIFIER, model_version=CLASSIFIER)
    with pytest.raises(InferenceServerException, match="not served"):
        client.get_model_metadata("nobody")


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_tritonclient_embeddings_equal_the_native_routes(mesh, client, binary):
    result = client.infer(MINILM, [texts_input("text", TEXTS, binary)],
                          outputs=[triton.InferRequestedOutput("embedding", binary_data=binary)])
    expected = [item["embedding"] for item in native(mesh, "/v1/embeddings", {"input": TEXTS})["data"]]
    vectors = result.as_numpy("embedding")
    assert vectors.dtype == np.float32 and vectors.shape == (3, 384)
    np.testing.assert_array_equal(vectors, np.array(expected, dtype=np.float32))
    shortened = client.infer(MINILM, [texts_input("text", TEXTS)], parameters={"dimensions": 64})
    assert shortened.as_numpy("embedding").shape == (3, 64)


def test_tritonclient_classification_equals_the_native_route(mesh, client):
    result = client.infer(INTENT_CLASSIFIER, [texts_input("text", TEXTS)])
    expected = native(mesh, "/v1/classify", {"texts": TEXTS, "model": CLASSIFIER, "force_intent": True})["results"]
    assert [label.decode() for label in result.as_numpy("label")] == [r["intent"] for r in expected]
    np.testing.assert_allclose(result.as_numpy("score"), [r["confidence"] for r in expected], rtol=1e-6)
    assert result.get_response()["model_version"] == CLASSIFIER


def test_tritonclient_reranking_equals_the_native_route(mesh, client):
    reranker = next(m["id"] for m in httpx.get(f"{mesh.url}/v1/models").json()["data"] if m["task"] == "rerank")
    inputs = [texts_input("query", ["capital of France"]), texts_input("documents", DOCUMENTS)]
    every = client.infer(reranker, inputs)
    expected = native(mesh, "/v1/rerank", {"query": "capital of France", "documents": DOCUMENTS})["results"]
    by_index = {r["index"]: r["relevance_score"] for r in expected}
    assert list(every.as_numpy("index")) == [0, 1, 2]
    np.testing.assert_allclose(every.as_numpy("score"), [by_index[i] for i in range(3)], rtol=1e-6)
    best = client.infer(reranker, inputs, parameters={"top_n": 2})
    assert list(best.as_numpy("index")) == [r["index"] for r in expected[:2]]


def raw_infer(mesh, model: str, document: dict, binary: bytes = b"") -> httpx.Response:
    header = httpx.Request("POST", "http://x", json=document).content
    headers = {"Inference-Header-Content-Length": str(len(header))} if binary else {}
    return httpx.post(f"{mesh.url}/v2/models/{model}/infer", content=header + binary, headers=headers, timeout=60)


def test_bad_tensors_get_the_protocols_error_with_the_right_status(mesh, client):
    def one(datatype="BYTES", shape=(1,), data=("hi",)):
        return {"inputs": [{"name": "text", "datatype": datatype, "shape": list(shape), "data": list(data)}]}

    cases = {
        "FP32 where texts go": (one(datatype="FP32", data=[1.0]), 400, "BYTES"),
        "shape that does not hold the data": (one(shape=(3,)), 400, "holds 3 elements but 1"),
        "empty tensor": (one(shape=(0,), data=()), 400, "empty"),
        "no inputs list": ({"input": []}, 400, "`inputs` list"),
    }
    for case, (document, status, words) in cases.items():
        reply = raw_infer(mesh, MINILM, document)
        assert reply.status_code == status and words in reply.json()["error"], (case, reply.text)
    not_utf8 = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1],
                            "parameters": {"binary_data_size": 6}}]}
    reply = raw_infer(mesh, MINILM, not_utf8, struct.pack("<I", 2) + b"\xff\xfe")
    assert reply.status_code == 400 and "not UTF-8" in reply.json()["error"]
    assert raw_infer(mesh, "nobody", one()).status_code == 404
    huge_name = raw_infer(mesh, "m" * 20_000, one())
    assert huge_name.status_code == 404 and len(huge_name.content) < 2048, huge_name.text[:200]
    unknown_version = httpx.post(f"{mesh.url}/v2/models/{INTENT_CLASSIFIER}/versions/v9/infer", json=one(),
                                 timeout=30)
    assert unknown_version.status_code == 404 and "error" in unknown_version.json()
    too_many = raw_infer(mesh, MINILM, one(shape=(5000,), data=["x"] * 5000))
    assert too_many.status_code == 422 and "split" in too_many.json()["error"]
    with pytest.raises(InferenceServerException, match="datatype"):
        tensor = triton.InferInput("text", [1], "FP32")
        tensor.set_data_from_numpy(np.ones(1, dtype=np.float32))
        client.infer(MINILM, [tensor])


def test_the_seed_clients_torchserve_calls_replayed_with_httpx(mesh):
    """BetterPrompts' TorchServe client: ping, predictions and the management read, each under its timeout."""
    with httpx.Client(base_url=mesh.url, timeout=httpx.Timeout(30.0, connect=5.0)) as seed:
        assert seed.get("/ping").json() == {"status": "Healthy"}
        predicted = seed.post(f"/predictions/{INTENT_CLASSIFIER}", json={"text": TEXTS[0]})
        assert predicted.status_code == 200, predicted.text
        scores = predicted.json()
        expected = native(mesh, "/v1/classify", {"texts": TEXTS[:1], "model": CLASSIFIER, "top_k": 100,
                                                 "force_intent": True})["results"][0]
        assert scores == {entry["intent"]: entry["score"] for entry in expected["top"]}
        [described] = seed.get(f"/models/{INTENT_CLASSIFIER}").json()
        assert described["modelName"] == INTENT_CLASSIFIER and described["workers"][0]["status"] == "READY"
    # A caller that gives up first gets its timeout, and the gateway serves the next caller as before.
    with httpx.Client(base_url=mesh.url, timeout=httpx.Timeout(0.001)) as hasty, pytest.raises(httpx.TimeoutException):
        hasty.post(f"/predictions/{INTENT_CLASSIFIER}", json={"texts": TEXTS * 30})
    with httpx.Client(base_url=mesh.url, timeout=30) as seed:
        assert seed.post(f"/predictions/{INTENT_CLASSIFIER}", json={"text": TEXTS[1]}).status_code == 200


def test_every_listed_name_and_the_short_name_work_on_every_protocol(mesh, client):
    """The default mesh: the embedder's short name is its own (the reranker's fallback and the few-shot
    classifier are derived from it and answer in full only); TorchServe and KServe take ids percent-encoded."""
    short = MINILM.rsplit("/", 1)[-1]
    expected = np.array([item["embedding"] for item in native(mesh, "/v1/embeddings", {"input": TEXTS})["data"]],
                        dtype=np.float32)
    assert client.is_model_ready(short)
    np.testing.assert_array_equal(client.infer(short, [texts_input("text", TEXTS)]).as_numpy("embedding"), expected)
    kserve = httpx.post(f"{mesh.url}/v1/models/{quote(MINILM, safe='')}:predict", json={"instances": TEXTS},
                        timeout=60)
    assert kserve.status_code == 200, kserve.text
    np.testing.assert_array_equal(np.array(kserve.json()["predictions"], dtype=np.float32), expected)
    listed = [entry["modelName"] for entry in httpx.get(f"{mesh.url}/models", timeout=30).json()["models"]]
    assert MINILM in listed and len(listed) == 4, listed  # three served models and the alias
    for name in listed:
        body = {"query": TEXTS[0], "documents": DOCUMENTS} if name.startswith("fallback:") else {"data": TEXTS[0]}
        reply = httpx.post(f"{mesh.url}/predictions/{quote(name, safe='')}", json=body, timeout=60)
        assert reply.status_code == 200, (name, reply.text)
        described = httpx.get(f"{mesh.url}/models/{quote(name, safe='')}", timeout=30)
        assert described.status_code == 200 and described.json()[0]["workers"][0]["status"] == "READY", name


@pytest.fixture
def hugging_face(monkeypatch):
    """huggingface_hub's InferenceClient; the suite's HF_HUB_OFFLINE would stop it calling even this machine."""
    from huggingface_hub import InferenceClient, constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    return InferenceClient


ZERO_SHOT_TEXT = "Can you book me a table for four at an Italian place tonight?"
ZERO_SHOT_LABELS = ["restaurant reservation", "weather", "play music", "flight status"]


def test_hugging_faces_client_classifies_by_the_labels_it_sends(mesh, hugging_face):
    by_base_url = hugging_face(base_url=f"{mesh.url}/v1/zero-shot", timeout=60).zero_shot_classification(
        ZERO_SHOT_TEXT, candidate_labels=ZERO_SHOT_LABELS)
    by_model = hugging_face(model=f"{mesh.url}/hf-inference/models/{CLASSIFIER}", timeout=60).zero_shot_classification(
        ZERO_SHOT_TEXT, candidate_labels=ZERO_SHOT_LABELS, multi_label=True, hypothesis_template="The request is {}.")
    single = native(mesh, "/v1/classify", {"text": ZERO_SHOT_TEXT, "labels": ZERO_SHOT_LABELS})["results"][0]["top"]
    multi = native(mesh, "/v1/classify", {"text": ZERO_SHOT_TEXT, "labels": ZERO_SHOT_LABELS, "multi_label": True,
                                          "hypothesis_template": "The request is {}."})["results"][0]["top"]
    assert [(e.label, e.score) for e in by_base_url] == [(t["intent"], t["score"]) for t in single]
    assert [(e.label, e.score) for e in by_model] == [(t["intent"], t["score"]) for t in multi]
    assert by_base_url[0].label == by_model[0].label == "restaurant reservation"
    assert sum(e.score for e in by_base_url) == pytest.approx(1, abs=1e-5) and by_model[0].score > 0.5


async def test_zero_shot_scores_served_equal_the_workers_own(mesh):
    texts = [ZERO_SHOT_TEXT, "Is it going to snow in Oslo tomorrow?"]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{mesh.ports['classifier']}") as channel:
        direct = await classifier_pb2_grpc.ClassifierServiceStub(channel).Classify(classifier_pb2.ClassifyRequest(
            texts=texts, labels=[classifier_pb2.Label(name=label) for label in ZERO_SHOT_LABELS]))
    served = native(mesh, "/v1/classify", {"texts": texts, "labels": ZERO_SHOT_LABELS})["results"]
    for by_worker, by_gateway in zip(direct.results, served, strict=True):
        worker_scores = {t.intent: t.score for t in by_worker.top}
        assert [t["intent"] for t in by_gateway["top"]] == [t.intent for t in by_worker.top]
        assert all(abs(t["score"] - worker_scores[t["intent"]]) < 1e-3 for t in by_gateway["top"])
