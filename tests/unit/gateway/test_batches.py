"""Batch jobs through the gateway app and a real worker runtime: files checked whole at upload, batches answered
line by line by the same routes as interactive requests, exactly once, with OpenAI's shapes."""

import asyncio
import json
import re

import numpy as np

from tests.unit.gateway.conftest import gateway_client, unused_address


def jsonl(requests: list[dict]) -> bytes:
    return b"".join(json.dumps(request).encode() + b"\n" for request in requests)


def embedding_line(custom_id: str, texts, url: str = "/v1/embeddings") -> dict:
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": {"input": texts}}


async def upload(client, content: bytes, purpose: str = "batch", filename: str = "batch.jsonl"):
    return await client.post("/v1/files", files={"file": (filename, content)}, data={"purpose": purpose})


async def finished(client, batch_id: str, timeout: float = 20) -> dict:
    async with asyncio.timeout(timeout):
        while True:
            batch = (await client.get(f"/v1/batches/{batch_id}")).json()
            if batch["status"] in ("completed", "failed", "expired", "cancelled"):
                return batch
            await asyncio.sleep(0.05)


async def test_a_batch_answers_every_line_as_its_route_answers_the_same_body(fake_embedding_worker):
    lines = [embedding_line(f"line-{i}", [f"text {i}"] if i % 3 else [f"text {i}", f"more {i}"]) for i in range(45)]
    lines.append(embedding_line("too-many", [f"t{i}" for i in range(17)]))  # the worker takes 16 per request
    async with gateway_client(f"127.0.0.1:{fake_embedding_worker.port}") as client:
        uploaded = await upload(client, jsonl(lines))
        assert uploaded.status_code == 200, uploaded.text
        file = uploaded.json()
        assert file["object"] == "file" and file["purpose"] == "batch" and file["bytes"] == len(jsonl(lines))
        created = await client.post("/v1/batches", json={"input_file_id": file["id"], "endpoint": "/v1/embeddings",
                                                         "completion_window": "24h", "metadata": {"run": "a"}})
        assert created.status_code == 200, created.text
        batch = await finished(client, created.json()["id"])
        assert batch["status"] == "completed" and batch["metadata"] == {"run": "a"}
        assert batch["request_counts"] == {"total": 46, "completed": 45, "failed": 1}
        output = (await client.get(f"/v1/files/{batch['output_file_id']}/content")).text.splitlines()
        errors = (await client.get(f"/v1/files/{batch['error_file_id']}/content")).text.splitlines()
        expected = {line["custom_id"]: (await client.post("/v1/embeddings", json=line["body"])).json()
                    for line in lines[:45]}
        echoed = (await client.get(f"/v1/files/{file['id']}/content")).content
        listed = (await client.get("/v1/batches", params={"limit": 1})).json()
    assert echoed == jsonl(lines)
    answered = [json.loads(line) for line in output]
    assert [line["custom_id"] for line in answered] == [line["custom_id"] for line in lines[:45]]
    for line in answered:
        assert line["response"]["status_code"] == 200 and line["error"] is None
        assert line["id"] == line["response"]["request_id"]
        got = np.array([item["embedding"] for item in line["response"]["body"]["data"]])
        want = np.array([item["embedding"] for item in expected[line["custom_id"]]["data"]])
        np.testing.assert_allclose(got, want, atol=1e-6)
    (refused,) = [json.loads(line) for line in errors]
    assert refused["custom_id"] == "too-many" and refused["response"]["status_code"] == 422
    assert "at most 16" in refused["response"]["body"]["error"]["message"]
    assert listed["data"][0]["id"] == batch["id"] and listed["has_more"] is False


async def test_a_bad_file_is_refused_at_upload_with_its_line_numbers_and_nothing_is_kept(fake_embedding_worker):
    good = embedding_line("a", ["fine"])
    bad = b"\n".join([
        json.dumps(good).encode(),
        b"{not json",
        json.dumps(embedding_line("a", ["same id again"])).encode(),
        json.dumps(embedding_line("c", ["x"], url="/v1/secrets")).encode(),
        json.dumps({**embedding_line("d", ["x"]), "method": "GET"}).encode(),
        json.dumps({**embedding_line("e", []), "body": {"inputs": ["typo"]}}).encode(),
        json.dumps(embedding_line("f", ["y" * 3000])).encode(),
    ])
    jobs = {"jobs_max_file_bytes": 8192, "jobs_max_lines": 7}
    async with gateway_client(f"127.0.0.1:{fake_embedding_worker.port}", max_body_bytes=2048, jobs=jobs) as client:
        refused = await upload(client, bad)
        too_large = await upload(client, jsonl([embedding_line(f"{i}", ["z" * 900]) for i in range(9)]))
        too_many = await upload(client, jsonl([embedding_line(f"{i}", ["z"]) for i in range(8)]))
        wrong_purpose = await upload(client, jsonl([good]), purpose="fine-tune")
        empty = await upload(client, b"\n\n")
        not_a_form = await client.post("/v1/files", content=jsonl([good]),
                                       headers={"content-type": "application/jsonl"})
        listed = (await client.get("/v1/files")).json()
    message = refused.json()["error"]["message"]
    assert refused.status_code == 400 and "6 invalid lines" in message, refused.text
    for expected in ("line 2: not a JSON object", "line 3: custom_id 'a' is already used on line 1",
                     "line 4: url '/v1/secrets'", "line 5: method must be", "line 6: body: input", "line 7: "):
        assert expected in message
    assert too_large.status_code == 413 and "at most 8192" in too_large.text
    assert too_many.status_code == 413 and "more than 7 requests" in too_many.text
    assert wrong_purpose.status_code == 400 and "purpose" in wrong_purpose.text
    assert empty.status_code == 400 and "no requests" in empty.text
    assert not_a_form.status_code == 415
    assert listed["data"] == []


async def test_unknown_ids_wrong_endpoints_and_finished_batches_get_clear_errors(fake_embedding_worker):
    async with gateway_client(f"127.0.0.1:{fake_embedding_worker.port}") as client:
        file = (await upload(client, jsonl([embedding_line("a", ["one"])]))).json()
        unknown_file = await client.get("/v1/files/file_nope")
        unknown_batch = await client.get("/v1/batches/batch_nope")
        unknown_input = await client.post("/v1/batches", json={"input_file_id": "file_nope",
                                                               "endpoint": "/v1/embeddings",
                                                               "completion_window": "24h"})
        wrong_endpoint = await client.post("/v1/batches", json={"input_file_id": file["id"], "endpoint": "/v1/rerank",
                                                                "completion_window": "24h"})
        wrong_window = await client.post("/v1/batches", json={"input_file_id": file["id"],
                                                              "endpoint": "/v1/embeddings", "completion_window": "1h"})
        batch = (await client.post("/v1/batches", json={"input_file_id": file["id"], "endpoint": "/v1/embeddings",
                                                        "completion_window": "24h"})).json()
        await finished(client, batch["id"])
        cancel_finished = await client.post(f"/v1/batches/{batch['id']}/cancel")
        cancel_unknown = await client.post("/v1/batches/batch_nope/cancel")
        deleted = await client.delete(f"/v1/files/{file['id']}")
        deleted_again = await client.delete(f"/v1/files/{file['id']}")
    assert unknown_file.status_code == 404 and unknown_batch.status_code == 404 and unknown_input.status_code == 404
    assert wrong_endpoint.status_code == 400 and "/v1/embeddings" in wrong_endpoint.json()["error"]["message"]
    assert wrong_window.status_code == 422 and "completion_window" in wrong_window.text
    assert cancel_finished.status_code == 409 and "already completed" in cancel_finished.text
    assert cancel_unknown.status_code == 404
    assert deleted.json() == {"id": file["id"], "object": "file", "deleted": True}
    assert deleted_again.status_code == 404


async def test_a_tenants_later_batches_wait_their_turn_and_a_waiting_batch_cancels_cleanly(fake_embedding_worker):
    jobs = {"jobs_batches_per_tenant": 1, "jobs_slice_lines": 2, "jobs_slices": 1}
    worker = fake_embedding_worker.servicer.adapter
    async with gateway_client(f"127.0.0.1:{fake_embedding_worker.port}", jobs=jobs) as client:
        file = (await upload(client, jsonl([embedding_line(f"{i}", [f"t{i}"]) for i in range(6)]))).json()
        body = {"input_file_id": file["id"], "endpoint": "/v1/embeddings", "completion_window": "24h"}
        worker.gate.clear()
        first = (await client.post("/v1/batches", json=body)).json()
        second = (await client.post("/v1/batches", json=body)).json()
        await asyncio.sleep(0.3)
        waiting = (await client.get(f"/v1/batches/{second['id']}")).json()
        cancelling = (await client.post(f"/v1/batches/{second['id']}/cancel")).json()
        worker.gate.set()
        done, cancelled = await finished(client, first["id"]), await finished(client, second["id"])
    assert waiting["status"] == "validating" and cancelling["status"] == "cancelling"
    assert done["status"] == "completed" and done["request_counts"]["completed"] == 6
    assert cancelled["status"] == "cancelled" and cancelled["request_counts"]["completed"] == 0
    assert cancelled["output_file_id"] is None and cancelled["cancelled_at"] >= cancelled["cancelling_at"]


async def test_a_line_a_dead_upstream_cannot_answer_is_put_back_not_failed():
    async with gateway_client(unused_address()) as client:
        file = (await upload(client, jsonl([embedding_line("a", ["one"])]))).json()
        batch = (await client.post("/v1/batches", json={"input_file_id": file["id"], "endpoint": "/v1/embeddings",
                                                        "completion_window": "24h"})).json()
        await asyncio.sleep(1.0)
        running = (await client.get(f"/v1/batches/{batch['id']}")).json()
    assert running["status"] == "in_progress" and running["request_counts"]["failed"] == 0


async def test_a_store_that_cannot_be_reached_is_a_503_and_everything_else_is_served(fake_embedding_worker):
    jobs = {"jobs_url": f"postgresql://nobody@{unused_address()}/jobs"}
    async with gateway_client(f"127.0.0.1:{fake_embedding_worker.port}", jobs=jobs) as client:
        listed = await client.get("/v1/batches")
        embedded = await client.post("/v1/embeddings", json={"input": "still served"})
    assert listed.status_code == 503 and listed.headers["Retry-After"] == "5"
    assert "batch job store is unavailable" in listed.json()["error"]["message"]
    assert embedded.status_code == 200


async def test_a_file_name_is_kept_plain_so_it_cannot_break_the_download_header(fake_embedding_worker):
    async with gateway_client(f"127.0.0.1:{fake_embedding_worker.port}") as client:
        file = (await upload(client, jsonl([embedding_line("a", ["x"])]), filename='bätch "v2";.jsonl')).json()
        content = await client.get(f"/v1/files/{file['id']}/content")
    assert re.fullmatch(r"b_tch_[A-Za-z0-9_]*v2[A-Za-z0-9_]*\.jsonl", file["filename"]), file["filename"]
    assert content.headers["content-disposition"] == f'attachment; filename="{file["filename"]}"'


async def test_a_stopped_runner_gives_its_claimed_lines_back(fake_embedding_worker):
    worker = fake_embedding_worker.servicer.adapter
    async with gateway_client(f"127.0.0.1:{fake_embedding_worker.port}", jobs={"jobs_slice_lines": 2}) as client:
        file = (await upload(client, jsonl([embedding_line(f"{i}", [f"t{i}"]) for i in range(4)]))).json()
        worker.gate.clear()
        batch = (await client.post("/v1/batches", json={"input_file_id": file["id"], "endpoint": "/v1/embeddings",
                                                        "completion_window": "24h"})).json()
        await asyncio.sleep(0.3)
        store = client.app.state.jobs.store
        await client.app.state.jobs.runner.close()
        worker.gate.set()
        reclaimed = await store.claim(10, lease_s=30)
    assert reclaimed.batch_id == batch["id"] and [line.line_no for line in reclaimed.lines] == [1, 2, 3, 4]


async def test_a_method_a_path_does_not_take_is_a_405_naming_every_method_it_does(fake_embedding_worker):
    async with gateway_client(f"127.0.0.1:{fake_embedding_worker.port}") as client:
        files_put = await client.put("/v1/files")
        file_post = await client.post("/v1/files/file_x", json={})
        embeddings_delete = await client.delete("/v1/embeddings")
    assert files_put.status_code == 405 and files_put.headers["Allow"] == "GET, POST"
    assert file_post.status_code == 405 and file_post.headers["Allow"] == "DELETE, GET"
    assert embeddings_delete.status_code == 405 and embeddings_delete.headers["Allow"] == "POST"
