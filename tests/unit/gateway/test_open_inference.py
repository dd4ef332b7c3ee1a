"""The Open Inference Protocol v2 routes (gateway/routes/open_inference.py) over fake workers: the binary tensor
extension both ways, output selection, parameters, and every malformed request answered in the protocol's shape.
tests/e2e/test_drop_in.py drives the same routes with tritonclient against the real mesh."""

import struct

import numpy as np
import orjson
import pytest

from tests.unit.gateway.conftest import gateway_client, unused_address

MODEL = "test/fake-model"


@pytest.fixture
async def gateway(fake_embedding_worker):
    async with gateway_client(f"127.0.0.1:{fake_embedding_worker.port}") as client:
        yield client


def binary_texts(texts: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(text)) + text for text in texts)


async def infer(gateway, document: dict, binary: bytes = b"", length: str | None = None):
    header = orjson.dumps(document)
    headers = {"Inference-Header-Content-Length": length or str(len(header))} if binary or length else {}
    return await gateway.post(f"/v2/models/{MODEL}/infer", content=header + binary, headers=headers)


def texts_input(count: int, size: int | None = None, **entry) -> dict:
    tensor = {"name": "text", "datatype": "BYTES", "shape": [count]}
    if size is not None:
        tensor["parameters"] = {"binary_data_size": size}
    return {**tensor, **entry}


async def test_binary_inputs_and_outputs_give_the_json_routes_vectors(gateway):
    texts = [b"alpha", "b\u00e9ta".encode()]
    raw = binary_texts(texts)
    binary = await infer(gateway, {"id": "42", "inputs": [texts_input(2, len(raw))],
                                   "outputs": [{"name": "embedding", "parameters": {"binary_data": True}}]}, raw)
    as_json = await infer(gateway, {"inputs": [texts_input(2, data=["alpha", "b\u00e9ta"])]})
    native = await gateway.post("/v1/embeddings", json={"input": ["alpha", "b\u00e9ta"]})
    assert binary.status_code == 200, binary.text
    length = int(binary.headers["Inference-Header-Content-Length"])
    header = orjson.loads(binary.content[:length])
    [output] = header["outputs"]
    assert header["id"] == "42" and output["datatype"] == "FP32" and output["shape"][0] == 2
    vectors = np.frombuffer(binary.content[length:], dtype="<f4").reshape(output["shape"])
    expected = np.array([item["embedding"] for item in native.json()["data"]], dtype=np.float32)
    np.testing.assert_array_equal(vectors, expected)
    [json_output] = as_json.json()["outputs"]
    np.testing.assert_array_equal(np.array(json_output["data"], dtype=np.float32).reshape(json_output["shape"]),
                                  expected)


async def test_parameters_carry_our_options_and_are_checked(gateway):
    shortened = await infer(gateway, {"inputs": [texts_input(1, data=["alpha"])], "parameters": {"dimensions": 4}})
    assert shortened.json()["outputs"][0]["shape"] == [1, 4]
    triton_own = await infer(gateway, {"inputs": [texts_input(1, data=["alpha"])], "parameters": {"priority": 1}})
    assert triton_own.status_code == 200
    wrong = await infer(gateway, {"inputs": [texts_input(1, data=["alpha"])], "parameters": {"dimensions": "4"}})
    assert wrong.status_code == 400 and "positive integer" in wrong.json()["error"]


@pytest.mark.parametrize(("document", "binary", "length", "words"), [
    ({"inputs": [texts_input(1, 9)]}, binary_texts([b"abc"]) + b"!", None, "runs past the body"),
    ({"inputs": [texts_input(1, 4)]}, b"\x05\x00\x00\x00", None, "runs past binary_data_size"),
    ({"inputs": [texts_input(1, 2)]}, b"\x05\x00", None, "inside an element's length"),
    ({"inputs": [texts_input(1, 7)]}, binary_texts([b"abc"]) + b"!!!!", None, "belong to no input"),
    ({"inputs": [texts_input(1, 5)]}, binary_texts([b"\xc3"]), None, "not UTF-8"),
    ({"inputs": [texts_input(1, data=["a"]), texts_input(1, data=["b"])]}, b"", None, "given twice"),
    ({"inputs": [texts_input(1, data=[1])]}, b"", None, "must be strings"),
    ({"inputs": [texts_input(1, data=["  "])]}, b"", None, "blank"),
    ({"inputs": [texts_input(1)]}, b"", None, "neither `data` nor binary_data_size"),
    ({"inputs": [texts_input(1, data=["a"], shape=[-1])]}, b"", None, "non-negative integers"),
    ({"inputs": [texts_input(1, data=["a"])], "outputs": [{"name": "nope"}]}, b"", None, "no output 'nope'"),
    ({"inputs": [texts_input(1, data=["a"])]}, b"x", "999", "not a length within the body"),
    ({"inputs": "text"}, b"", None, "`inputs` list"),
    ({"inputs": [texts_input(1, data=[[[["a"]]]])], "outputs": [{"name": "embedding", "parameters": 1}]}, b"",
     None, "optional `parameters`"),
    ({"inputs": [texts_input(2**62, data=["a"], shape=[2**62, 2**62])]}, b"", None, "holds"),
])
async def test_malformed_requests_get_400_in_the_protocols_shape(gateway, document, binary, length, words):
    reply = await infer(gateway, document, binary, length)
    assert reply.status_code == 400, reply.text
    assert set(reply.json()) == {"error"} and words in reply.json()["error"], reply.json()


async def test_deeply_nested_data_is_an_answer_not_a_crash(gateway):
    depth = 1000  # deeper than Python's recursion limit, within what the JSON parser accepts
    body = b'{"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ' + b"[" * depth + b'"a"'
    reply = await gateway.post(f"/v2/models/{MODEL}/infer", content=body + b"]" * depth + b"}]}")
    assert reply.status_code == 200, reply.text
    assert reply.json()["outputs"][0]["shape"][0] == 1


async def test_a_lone_surrogate_follows_the_contracts_unicode_rule(gateway):
    reply = await gateway.post(f"/v2/models/{MODEL}/infer", content=b'{"inputs": [{"name": "text", '
                               b'"datatype": "BYTES", "shape": [1], "data": ["\\ud800"]}]}')
    assert reply.status_code == 400 and "surrogate" in reply.json()["error"]


async def test_unknown_models_and_a_dead_pool(gateway):
    unknown = await gateway.post("/v2/models/nobody/infer", json={"inputs": [texts_input(1, data=["a"])]})
    assert unknown.status_code == 404 and "not served" in unknown.json()["error"]
    assert (await gateway.get("/v2/models/nobody")).status_code == 404
    ready = await gateway.get("/v2/health/ready")  # the reranking and classifier pools have no replica
    assert ready.status_code == 503 and ready.json() == {"ready": False}
    assert (await gateway.get("/v2/health/live")).json() == {"live": True}
    assert (await gateway.get(f"/v2/models/{MODEL}/ready")).json() == {"name": MODEL, "ready": True}


@pytest.mark.parametrize(("path", "shape"), [
    (f"/v2/models/{MODEL}/infer", {"error"}),
    ("/predictions/fake-model", {"code", "type", "message"}),
    ("/v1/models/fake-model:predict", {"error"}),
    ("/v1/embeddings", {"error"}),
])
async def test_the_edges_refusals_take_each_protocols_shape(fake_embedding_worker, path, shape):
    async with gateway_client(f"127.0.0.1:{fake_embedding_worker.port}", api_keys="secret",
                              max_body_bytes=1024) as client:
        unauthenticated = await client.post(path, json={"inputs": []})
        oversized = await client.post(path, content=b"x" * 2048, headers={"Authorization": "Bearer secret"})
        metadata = await client.get("/v2")
    for reply, status in ((unauthenticated, 401), (oversized, 413)):
        assert reply.status_code == status and set(reply.json()) == shape, reply.text
    if shape == {"error"}:  # ours nests type and message; KServe's and the Open Inference Protocol's are a text
        assert isinstance(unauthenticated.json()["error"], dict) == (path == "/v1/embeddings")
    assert metadata.status_code == 200 and metadata.json()["name"] == "torchgate"


async def test_an_element_length_past_two_gigabytes_is_refused_not_read_as_negative(gateway):
    raw = struct.pack("<I", 2**31 + 5) + b"abc"
    reply = await infer(gateway, {"inputs": [texts_input(1, len(raw))]}, raw)
    assert reply.status_code == 400 and "runs past binary_data_size" in reply.json()["error"]


async def test_outputs_come_in_the_order_asked_and_a_pool_that_is_down_is_not_ready(fake_classifier_worker):
    model = "test/fake-model"
    async with gateway_client(unused_address(), classifier=f"127.0.0.1:{fake_classifier_worker.port}") as client:
        body = {"inputs": [texts_input(1, data=["hello"])], "outputs": [{"name": "score"}, {"name": "label"}]}
        reply = await client.post(f"/v2/models/{model}/infer", json=body)
        await fake_classifier_worker.stop(0)
        down = await client.get(f"/v2/models/{model}/ready")
    assert [output["name"] for output in reply.json()["outputs"]] == ["score", "label"]
    assert reply.json()["outputs"][1]["data"] == ["greeting"]
    assert down.status_code == 503 and down.json() == {"name": model, "ready": False}
