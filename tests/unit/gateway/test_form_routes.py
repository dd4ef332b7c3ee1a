"""The routes that take files: the edge reads multipart/form-data for them only, the schema publishes each body
as it is sent (a file in a form, text in JSON), and a form reaches the task pipeline like JSON does."""

from tests.unit.gateway.conftest import gateway_client


async def test_the_schema_tells_a_form_body_from_a_json_body(fake_embedding_worker):
    async with gateway_client(f"127.0.0.1:{fake_embedding_worker.port}") as client:
        schema = (await client.get("/openapi.json")).json()
    components = schema["components"]["schemas"]
    chunk = schema["paths"]["/v1/chunk"]["post"]["requestBody"]["content"]
    assert set(chunk) == {"application/json", "multipart/form-data"}
    assert components["ChunkRequestForm"]["required"] == ["file"] and "input" not in components["ChunkRequestForm"][
        "properties"]
    assert components["ChunkRequest"]["required"] == ["input"] and "file" not in components["ChunkRequest"][
        "properties"]
    assert "file_filename" not in components["ChunkRequestForm"]["properties"]
    for path in ("/v1/chunk/hybrid/file", "/v1/convert/file"):
        assert set(schema["paths"][path]["post"]["requestBody"]["content"]) == {"multipart/form-data"}
    # The served model's window bounds max_tokens in the schema as in the pipeline.
    assert components["ChunkRequest"]["properties"]["max_tokens"]["maximum"] == 64


async def test_a_form_reaches_the_pipeline_and_other_routes_still_want_json(fake_embedding_worker):
    async with gateway_client(f"127.0.0.1:{fake_embedding_worker.port}") as client:
        form = await client.post("/v1/chunk", files={"file": ("a.md", b"# Title\n\ntext")},
                                 data={"max_tokens": "32"})
        too_long = await client.post("/v1/chunk", files={"file": ("a.md", b"# Title")}, data={"max_tokens": "65"})
        bad_field = await client.post("/v1/chunk", files={"file": ("a.md", b"# Title")}, data={"overlap": "many"})
        neither = await client.post("/v1/chunk", data={"max_tokens": "32"}, files={"other": ("x", b"x")})
        other_method = await client.put("/v1/chunk", files={"file": ("a.md", b"# Title")})
        embeddings = await client.post("/v1/embeddings", files={"file": ("a.md", b"# Title")})
    # The documents upstream is down: the form was read, validated and routed to it.
    assert form.status_code == 503 and form.json()["error"]["upstream"] == "documents", form.text
    assert too_long.status_code == 400 and "at most 64" in too_long.json()["error"]["message"]
    assert bad_field.status_code == 422 and "overlap" in bad_field.text
    assert neither.status_code == 422 and "exactly one" in neither.text
    assert other_method.status_code == 405
    assert embeddings.status_code == 415
