import pytest

from tests.unit.gateway.conftest import gateway_client, unused_address


@pytest.fixture
async def client(fake_classifier_worker):
    async with gateway_client(unused_address(), classifier=f"127.0.0.1:{fake_classifier_worker.port}") as client:
        yield client


async def test_classify_one_text_or_many(client):
    one = await client.post("/v1/classify", json={"text": "hello there", "top_k": 2})
    many = await client.post("/v1/classify", json={"texts": ["bye now", "is it raining?"]})
    assert one.status_code == 200
    [result] = one.json()["results"]
    assert result["intent"] == "greeting" and len(result["top"]) == 2
    assert result["confidence"] == pytest.approx(3.1 / 3.3, abs=1e-5)
    assert result["complexity"]["level"] == "simple" and result["suggested_techniques"]
    assert [r["intent"] for r in many.json()["results"]] == ["farewell", "question"]
    assert len(many.json()["results"][0]["top"]) == 3


async def test_text_and_texts_together_or_neither_is_a_422(client):
    both = await client.post("/v1/classify", json={"text": "a", "texts": ["b"]})
    neither = await client.post("/v1/classify", json={})
    assert both.status_code == neither.status_code == 422
    assert "exactly one of `text` or `texts`" in both.json()["error"]["message"]


async def test_the_better_prompts_shape_carries_the_same_classification(client):
    texts = ["hello there", "is it going to rain tomorrow?"]
    native = (await client.post("/v1/classify", json={"texts": texts})).json()
    single = (await client.post("/api/v1/intents/classify", json={"text": texts[0]})).json()
    batch = (await client.post("/api/v1/intents/classify/batch", json={"texts": texts})).json()
    expected = [{
        "intent": result["intent"], "confidence": result["confidence"],
        "complexity": result["complexity"]["level"], "suggested_techniques": result["suggested_techniques"],
        "metadata": {"complexity_score": result["complexity"]["score"], "top_intents": result["top"],
                     "model": native["model"], "tokens": native["usage"]["total_tokens"]},
    } for result in native["results"]]
    assert batch == {"results": expected}
    assert single | {"metadata": single["metadata"] | {"tokens": 0}} == expected[0] | {
        "metadata": expected[0]["metadata"] | {"tokens": 0}}
    assert 0 < single["metadata"]["tokens"] < native["usage"]["total_tokens"]
    assert all(set(top) == {"intent", "score"} for result in native["results"] for top in result["top"])
    assert all(result["complexity"]["score"] > 0 for result in native["results"])


async def test_better_prompts_compatible_routes(client):
    single = await client.post("/api/v1/intents/classify", json={"text": "hello"})
    batch = await client.post("/api/v1/intents/classify/batch", json={"texts": ["hello", "bye"]})
    types = await client.get("/api/v1/intents/types")
    body = single.json()
    assert set(body) == {"intent", "confidence", "complexity", "suggested_techniques", "metadata"}
    assert body["intent"] == "greeting" and body["complexity"] in ("simple", "moderate", "complex")
    assert body["metadata"]["model"] == "test/fake-model"
    assert [r["intent"] for r in batch.json()["results"]] == ["greeting", "farewell"]
    assert [i["name"] for i in types.json()["intents"]] == ["greeting", "farewell", "question", "out_of_scope"]
    assert types.json()["complexity_levels"] == ["simple", "moderate", "complex"]


async def test_limits_are_clear_4xx_never_silent_truncation(client):
    too_many = await client.post("/api/v1/intents/classify/batch", json={"texts": ["hello"] * 101})
    too_long = await client.post("/v1/classify", json={"text": "x" * 9000})
    empty = await client.post("/api/v1/intents/classify", json={"text": " "})
    assert too_many.status_code == 413 and "at most 100" in too_many.json()["error"]["message"]
    assert too_long.status_code == 422 and too_long.json()["error"]["message"] == (
        "text has 9000 characters; the limit is 8192: shorten it")
    assert empty.status_code == 422 and "non-whitespace" in empty.json()["error"]["message"]


async def test_a_dead_classifier_is_a_503():
    async with gateway_client(unused_address()) as client:
        reply = await client.post("/api/v1/intents/classify", json={"text": "hello"})
    assert reply.status_code == 503 and reply.json()["error"]["upstream"] == "classifier"


async def test_texts_no_intent_covers_are_out_of_scope_unless_an_intent_is_forced(client):
    plain = await client.post("/v1/classify", json={"texts": ["hello", "the weather is mild"], "top_k": 3})
    forced = await client.post("/v1/classify", json={"text": "the weather is mild", "force_intent": True})
    better = await client.post("/api/v1/intents/classify", json={"text": "the weather is mild"})
    better_forced = await client.post("/api/v1/intents/classify/batch",
                                      json={"texts": ["the weather is mild"], "force_intent": True})
    inside, outside = plain.json()["results"]
    assert inside["intent"] == "greeting"
    assert outside["intent"] == "out_of_scope"
    assert [t["intent"] for t in outside["top"]] == ["greeting", "farewell", "question"], "real intents only"
    assert outside["confidence"] == pytest.approx(1 - outside["top"][0]["score"], abs=1e-5)
    assert forced.json()["results"][0]["intent"] == "greeting"
    assert better.json()["intent"] == "out_of_scope" and better.json()["suggested_techniques"][0] == "zero_shot"
    assert better_forced.json()["results"][0]["intent"] != "out_of_scope"


async def test_labels_in_the_request_replace_the_models_intents(client):
    labels = ["sports", {"name": "politics", "description": "government and elections", "examples": ["a vote"]}]
    reply = await client.post("/v1/classify", json={"texts": ["the match", "the vote"], "labels": labels})
    assert reply.status_code == 200, reply.text
    for result in reply.json()["results"]:
        assert {top["intent"] for top in result["top"]} == {"sports", "politics"}
        assert sum(top["score"] for top in result["top"]) == pytest.approx(1.0, abs=1e-5)
        assert result["intent"] == result["top"][0]["intent"] and result["confidence"] == result["top"][0]["score"]
    multi = (await client.post("/v1/classify", json={"text": "the match", "labels": ["sports", "politics"],
                                                     "multi_label": True, "top_k": 1})).json()["results"][0]
    assert len(multi["top"]) == 1 and 0 <= multi["top"][0]["score"] <= 1
    hugging_face = (await client.post("/v1/zero-shot", json={
        "inputs": "the match", "parameters": {"candidate_labels": "sports, politics"}})).json()
    native = (await client.post("/v1/classify", json={"text": "the match", "labels": ["sports", "politics"]})).json()
    assert hugging_face == [{"label": t["intent"], "score": t["score"]} for t in native["results"][0]["top"]]


@pytest.mark.parametrize(("path", "body", "status", "says"), [
    ("/v1/classify", {"text": "a", "labels": [f"l{i}" for i in range(257)]}, 413, "labels has 257 items; at most 256"),
    ("/v1/classify", {"texts": ["a"] * 41, "labels": [f"l{i}" for i in range(100)]}, 413,
     "texts x labels is 41 x 100 = 4100; at most 4096"),
    ("/v1/classify", {"text": "a", "labels": ["x", "y", "x"]}, 400, "labels[2] 'x' appears twice"),
    ("/v1/classify", {"text": "a", "labels": ["x", {"name": " "}]}, 400, "labels[1].name is empty"),
    ("/v1/classify", {"text": "a", "labels": ["x", "y"], "hypothesis_template": "About"}, 400,
     "hypothesis_template 'About' has no `{}`"),
    ("/v1/zero-shot", {"inputs": "a", "parameters": {"candidate_labels": ["x", ""]}}, 400,
     "parameters.candidate_labels[1] is empty"),
    ("/v1/zero-shot", {"inputs": "a", "parameters": {"candidate_labels": ["x"], "hypothesis_template": "{ }"}}, 400,
     "parameters.hypothesis_template '{ }' has no `{}`"),
    ("/v1/zero-shot", {"inputs": ["a"] * 17, "parameters": {"candidate_labels": [f"l{i}" for i in range(250)]}}, 413,
     "inputs x parameters.candidate_labels is 17 x 250 = 4250"),
])
async def test_bad_labels_are_refused_naming_the_field(client, path, body, status, says):
    reply = await client.post(path, json=body)
    assert reply.status_code == status and says in reply.json()["error"]["message"], reply.text


async def test_a_tenants_input_limit_counts_texts_times_labels(fake_classifier_worker, tmp_path):
    import hashlib

    import yaml

    tenants = tmp_path / "tenants.yaml"
    tenants.write_text(yaml.safe_dump({"tenants": {"small": {
        "keys_sha256": [hashlib.sha256(b"small-key").hexdigest()], "inputs_per_second": 0.001, "inputs_burst": 4}}}))
    async with gateway_client(unused_address(), classifier=f"127.0.0.1:{fake_classifier_worker.port}",
                              tenants_file=str(tenants)) as client:
        headers = {"Authorization": "Bearer small-key"}
        over = await client.post("/v1/classify", headers=headers, json={"texts": ["a", "b", "c"],
                                                                        "labels": ["x", "y"]})
        assert over.status_code == 413 and "at most 4" in over.text, over.text
        within = await client.post("/v1/zero-shot", headers=headers,
                                   json={"inputs": ["a", "b"], "parameters": {"candidate_labels": ["x", "y"]}})
        assert within.status_code == 200, within.text
