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


def binary_outputs(reply) -> tuple[dict, dict[str, bytes]]:
    """The JSON header and each output's raw bytes of a reply in the binary tensor extension."""
    length = int(reply.headers["Inference-Header-Content-Length"])
    header, offset, raw = orjson.loads(reply.content[:length]), length, {}
    for output in header["outputs"]:
        size = output["parameters"]["binary_data_size"]
        raw[output["name"]] = reply.content[offset:offset + size]
        offset += size
    assert offset == len(reply.content)
    return header, raw


async def test_every_output_datatype_in_the_binary_extension_equals_its_json(fake_classifier_worker, tmp_path):
    routes = tmp_path / "routes.yaml"
    routes.write_text('aliases: {intents: {versions: [{model: "test/fake-model", weight: 1}]}}')
    async with gateway_client(unused_address(), classifier=f"127.0.0.1:{fake_classifier_worker.port}",
                              routes_file=str(routes)) as client:
        texts = ["hello there", "bye now ?"]
        body = {"inputs": [texts_input(2, data=texts)]}
        as_json = await client.post("/v2/models/intents/infer", json=body)
        binary = await client.post("/v2/models/intents/infer",
                                   json={**body, "parameters": {"binary_data_output": True}})
    assert as_json.headers["content-type"] == "application/json"
    assert binary.headers["content-type"] == "application/octet-stream"
    header, raw = binary_outputs(binary)
    assert header["model_name"] == "intents" and header["model_version"] == "test/fake-model" and "id" not in header
    described = {output["name"]: output for output in as_json.json()["outputs"]}
    assert {output["name"]: (output["datatype"], output["shape"]) for output in header["outputs"]} == {
        "label": ("BYTES", [2]), "score": ("FP32", [2])}
    labels, offset = [], 0
    while offset < len(raw["label"]):
        (size,) = struct.unpack_from("<I", raw["label"], offset)
        labels.append(raw["label"][offset + 4:offset + 4 + size].decode())
        offset += 4 + size
    assert labels == described["label"]["data"] == ["greeting", "farewell"]
    np.testing.assert_array_equal(np.frombuffer(raw["score"], dtype="<f4"),
                                  np.array(described["score"]["data"], dtype=np.float32))


async def test_parameter_bounds_the_truncation_default_and_the_fields_name(gateway):
    one = {"inputs": [texts_input(1, data=["alpha beta"])]}
    smallest = await infer(gateway, {**one, "parameters": {"dimensions": 1}})
    assert smallest.status_code == 200 and smallest.json()["outputs"][0]["shape"] == [1, 1]
    for parameters, words in (({"dimensions": 0}, "a positive integer"), ({"dimensions": True}, "a positive integer"),
                              ({"truncate": 1}, "true or false")):
        refused = await infer(gateway, {**one, "parameters": parameters})
        assert refused.status_code == 400 and f"must be {words}" in refused.json()["error"], parameters
    long = {"inputs": [texts_input(1, data=["word " * 200])]}
    assert (await infer(gateway, long)).status_code == 200, "texts past the window are cut by default"
    cut_refused = await infer(gateway, {**long, "parameters": {"truncate": False}})
    assert cut_refused.status_code == 400, cut_refused.text
    too_long = await infer(gateway, {"inputs": [texts_input(1, data=["x" * 100_000])]})
    assert too_long.status_code == 422 and too_long.json()["error"].startswith("text has 100000 characters")
