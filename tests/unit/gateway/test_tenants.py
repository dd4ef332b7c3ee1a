"""Tenants at the edge: API keys by digest, JWTs against a real JWKS (RS256, ES256), every rule a token can
break, per-tenant buckets, concurrency, quotas and models, usage and audit, reloads, limits shared through Redis."""

import asyncio
import base64
import datetime
import hashlib
import http.server
import json
import logging
import threading
import time

import jwt
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from prometheus_client.parser import text_string_to_metric_families

from gateway.tenants import JWKS_REFETCH_S
from tests.redis_server import redis_server
from tests.unit.gateway.conftest import gateway_client

ISSUER, AUDIENCE = "https://issuer.test", "torchgate"


class Issuer:
    """Signing keys of a test identity provider, and their public half as a JWKS document."""

    def __init__(self):
        self.keys = {"rsa-1": (rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256"),
                     "ec-1": (ec.generate_private_key(ec.SECP256R1()), "ES256")}

    def jwks(self) -> dict:
        keys = []
        for kid, (private, algorithm) in self.keys.items():
            codec = jwt.algorithms.RSAAlgorithm if algorithm == "RS256" else jwt.algorithms.ECAlgorithm
            jwk = json.loads(codec.to_jwk(private.public_key()))
            keys.append({**jwk, "kid": kid, "alg": algorithm, "use": "sig"})
        return {"keys": keys}

    def token(self, kid: str = "rsa-1", lifetime: float = 300, **claims) -> str:
        private, algorithm = self.keys[kid]
        now = time.time()
        body = {"iss": ISSUER, "aud": AUDIENCE, "iat": int(now), "exp": int(now + lifetime), "tenant": "acme",
                **claims}
        return jwt.encode(body, private, algorithm=algorithm, headers={"kid": kid})


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@pytest.fixture
def issuer():
    return Issuer()


def write_tenants(path, issuer: Issuer | None = None, **tenants) -> str:
    document = {"tenants": tenants}
    if issuer is not None:
        (path.parent / "jwks.json").write_text(json.dumps(issuer.jwks()))
        document["jwt"] = {"jwks_file": str(path.parent / "jwks.json"), "issuer": ISSUER, "audience": AUDIENCE,
                           "algorithms": ["RS256", "ES256"], "tenant_claim": "tenant"}
    path.write_text(yaml.safe_dump(document))
    return str(path)


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


EMBED = {"input": ["hello"]}


async def test_api_keys_are_known_by_their_digest_and_checked_before_the_body(fake_embedding_worker, tmp_path):
    path = write_tenants(tmp_path / "tenants.yaml", acme={"keys_sha256": [digest("acme-key")]},
                         beta={"keys_sha256": [digest("beta-key")]})
    async with gateway_client(f"127.0.0.1:{fake_embedding_worker.port}", tenants_file=path) as client:
        good = await client.post("/v1/embeddings", json=EMBED, headers=bearer("acme-key"))
        usage = (await client.get("/v1/usage", headers=bearer("acme-key"))).json()
        other = (await client.get("/v1/usage", headers=bearer("beta-key"))).json()
        refusals = {
            "missing": await client.post("/v1/embeddings", json=EMBED),
            "wrong": await client.post("/v1/embeddings", json=EMBED, headers=bearer("acme-kez")),
            "newline": await client.post("/v1/embeddings", json=EMBED,
                                         headers=[("Authorization", "Bearer acme-key\n")]),
            "basic": await client.post("/v1/embeddings", json=EMBED, headers={"Authorization": "Basic YWNtZQ=="}),
            "twice": await client.post("/v1/embeddings", json=EMBED, headers=[
                ("Authorization", "Bearer acme-key"), ("Authorization", "Bearer beta-key")]),
            # Not JSON at all: refused on its headers alone.
            "unread": await client.post("/v1/embeddings", content=b"{not json", headers=bearer("nope")),
        }
        open_paths = [await client.get(path) for path in ("/health/live", "/metrics", "/openapi.json", "/docs")]
    assert good.status_code == 200
    assert (usage["tenant"], usage["requests"], usage["inputs"], usage["tokens"]) == ("acme", 1, 1, 3)
    assert other["tenant"] == "beta" and other["requests"] == 0
    messages = {name: (reply.status_code, reply.json()["error"]["message"]) for name, reply in refusals.items()}
    assert {status for status, _ in messages.values()} == {401}
    assert "missing credentials" in messages["missing"][1] and "invalid API key" in messages["wrong"][1]
    assert "whitespace" in messages["newline"][1] and "several Authorization" in messages["twice"][1]
    assert "Bearer" in messages["basic"][1] and "invalid API key" in messages["unread"][1]
    assert all("acme-key" not in message for _, message in messages.values())
    assert [reply.status_code for reply in open_paths] == [200, 200, 200, 200]


async def test_jwts_of_both_algorithms_name_their_tenant_and_every_broken_rule_is_named(fake_embedding_worker,
                                                                                         tmp_path, issuer):
    path = write_tenants(tmp_path / "tenants.yaml", issuer, acme={}, default={"requests_per_second": 100})
    forger = Issuer()
    public_pem = issuer.keys["rsa-1"][0].public_key().public_bytes(
        encoding=__import__("cryptography.hazmat.primitives.serialization", fromlist=["Encoding"]).Encoding.PEM,
        format=__import__("cryptography.hazmat.primitives.serialization",
                          fromlist=["PublicFormat"]).PublicFormat.SubjectPublicKeyInfo)
    header = base64.urlsafe_b64encode(json.dumps({"alg": "none", "typ": "JWT"}).encode()).rstrip(b"=").decode()
    payload = base64.urlsafe_b64encode(json.dumps({"iss": ISSUER, "aud": AUDIENCE, "exp": time.time() + 60,
                                                   "tenant": "acme"}).encode()).rstrip(b"=").decode()
    broken = {
        "expired": (issuer.token(lifetime=-3600), "expired"),
        "not yet valid": (issuer.token(nbf=int(time.time()) + 3600), "not valid yet"),
        "audience": (issuer.token(aud="someone-else"), "audience"),
        "issuer": (issuer.token(iss="https://evil.test"), "issuer"),
        "forged": (forger.token(), "signature"),
        "alg none": (f"{header}.{payload}.", "algorithm 'none' is not allowed"),
        "hmac with the public key": (jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "exp": time.time() + 60},
                                                public_pem.decode()[:40], algorithm="HS256",
                                                headers={"kid": "rsa-1"}), "algorithm 'HS256' is not allowed"),
        "unknown kid": (jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "exp": time.time() + 60},
                                   forger.keys["rsa-1"][0], algorithm="RS256", headers={"kid": "rsa-9"}), "kid"),
        "malformed": ("abc.def.ghi", "well-formed"),
    }
    async with gateway_client(f"127.0.0.1:{fake_embedding_worker.port}", tenants_file=path) as client:
        for kid in ("rsa-1", "ec-1"):
            reply = await client.post("/v1/embeddings", json=EMBED, headers=bearer(issuer.token(kid)))
            assert reply.status_code == 200, (kid, reply.text)
        mapped = (await client.get("/v1/usage", headers=bearer(issuer.token("ec-1", tenant="unlisted")))).json()
        for name, (token, message) in broken.items():
            reply = await client.post("/v1/embeddings", json=EMBED, headers=bearer(token))
            assert reply.status_code == 401, (name, reply.text)
            assert message in reply.json()["error"]["message"], (name, reply.json())
    assert mapped["tenant"] == "default"


async def test_a_jwt_of_no_tenant_without_a_default_is_forbidden(fake_embedding_worker, tmp_path, issuer):
    path = write_tenants(tmp_path / "tenants.yaml", issuer, acme={})
    async with gateway_client(f"127.0.0.1:{fake_embedding_worker.port}", tenants_file=path) as client:
        reply = await client.post("/v1/embeddings", json=EMBED, headers=bearer(issuer.token(tenant="nobody")))
    assert reply.status_code == 403 and "tenant" in reply.json()["error"]["message"]


def forwarded(worker) -> int:
    return sum(len(batch) for batch in worker.servicer.adapter.forwarded)


async def test_request_and_input_buckets_refuse_with_429_and_ratelimit_headers_before_any_upstream_call(
        fake_embedding_worker, tmp_path):
    path = write_tenants(tmp_path / "tenants.yaml", acme={
        "keys_sha256": [digest("k")], "requests_per_second": 0.1, "burst": 5, "inputs_per_second": 0.1,
        "inputs_burst": 8})
    async with gateway_client(f"127.0.0.1:{fake_embedding_worker.port}", tenants_file=path) as client:
        replies = [await client.post("/v1/embeddings", json={"input": [f"text {i}"]}, headers=bearer("k"),
                                     ) for i in range(7)]
        before = forwarded(fake_embedding_worker)
        too_big = await client.post("/v1/embeddings", json={"input": [f"t{i}" for i in range(9)]}, headers=bearer("k"))
        after = forwarded(fake_embedding_worker)
        metrics = (await client.get("/metrics")).text
    assert [reply.status_code for reply in replies] == [200] * 5 + [429] * 2
    refused = replies[-1]
    assert int(refused.headers["Retry-After"]) >= 1
    assert refused.headers["RateLimit-Policy"] == '"requests";q=5;w=50, "inputs";q=8;w=80'
    assert refused.headers["RateLimit"].startswith('"requests";r=0;t=')
    assert replies[0].headers["RateLimit"].startswith('"requests";r=4;t=0, "inputs";r=7;t=0')
    assert "requests rate" in refused.json()["error"]["message"]
    assert too_big.status_code == 413 and after == before
    refusals = sum(sample.value for family in text_string_to_metric_families(metrics) for sample in family.samples
                   if sample.name == "torchgate_gateway_tenant_refusals_total" and sample.labels["tenant"] == "acme")
    assert refusals >= 2


async def test_concurrency_quota_and_models_are_per_tenant(fake_embedding_worker, tmp_path):
    path = write_tenants(tmp_path / "tenants.yaml",
                         narrow={"keys_sha256": [digest("n")], "max_concurrency": 1},
                         quota={"keys_sha256": [digest("q")], "daily_tokens": 5},
                         other={"keys_sha256": [digest("o")], "models": ["another-model"]})
    adapter = fake_embedding_worker.servicer.adapter
    async with gateway_client(f"127.0.0.1:{fake_embedding_worker.port}", tenants_file=path) as client:
        adapter.gate.clear()
        try:
            held = asyncio.create_task(client.post("/v1/embeddings", json={"input": ["held"]}, headers=bearer("n")))
            await asyncio.sleep(0.2)
            second = await client.post("/v1/embeddings", json={"input": ["second"]}, headers=bearer("n"))
        finally:
            adapter.gate.set()
        assert (await held).status_code == 200 and second.status_code == 429
        assert "in flight" in second.json()["error"]["message"]
        spent = [await client.post("/v1/embeddings", json={"input": ["one two three"]}, headers=bearer("q"))
                 for _ in range(3)]
        assert [reply.status_code for reply in spent][:2] == [200, 429]  # 5 tokens: the second is over
        denied = await client.post("/v1/embeddings", json=EMBED, headers=bearer("o"))
        assert denied.status_code == 403 and "may not use" in denied.json()["error"]["message"]


async def test_the_audit_line_names_who_did_what_and_never_the_text_or_key(fake_embedding_worker, tmp_path, caplog):
    path = write_tenants(tmp_path / "tenants.yaml", acme={"keys_sha256": [digest("secret-key")]})
    async with gateway_client(f"127.0.0.1:{fake_embedding_worker.port}", tenants_file=path) as client:
        with caplog.at_level(logging.INFO, logger="torchgate.access"):
            await client.post("/v1/embeddings", json={"input": ["confidential words"]}, headers=bearer("secret-key"),
                              )
    [record] = [record for record in caplog.records if record.name == "torchgate.access"]
    assert (record.tenant, record.route, record.model, record.inputs, record.tokens, record.status) == (
        "acme", "/v1/embeddings", "test/fake-model", 1, 4, 200)
    assert "confidential" not in caplog.text and "secret-key" not in caplog.text


async def test_the_file_reloads_when_it_changes_and_a_broken_file_keeps_the_last_good_one(fake_embedding_worker,
                                                                                          tmp_path, caplog):
    path = tmp_path / "tenants.yaml"
    write_tenants(path, acme={"keys_sha256": [digest("old")]})
    async with gateway_client(f"127.0.0.1:{fake_embedding_worker.port}", tenants_file=str(path)) as client:
        tenants_file = client.app.state.tenants.file
        write_tenants(path, acme={"keys_sha256": [digest("new")]})
        tenants_file.reload()
        assert (await client.post("/v1/embeddings", json=EMBED, headers=bearer("new"))).status_code == 200
        assert (await client.post("/v1/embeddings", json=EMBED, headers=bearer("old"))).status_code == 401
        path.write_text("tenants: {acme: {keys_sha256: [not-a-digest]}}")
        with caplog.at_level(logging.ERROR):
            tenants_file.reload()
        assert "not reloaded" in caplog.text and "keys_sha256" in caplog.text
        assert (await client.post("/v1/embeddings", json=EMBED, headers=bearer("new"))).status_code == 200
        write_tenants(path, acme={"keys_sha256": [digest("newer")]})
        for _ in range(50):  # the watcher polls the file twice a second
            if (await client.post("/v1/embeddings", json=EMBED, headers=bearer("newer"))).status_code == 200:
                break
            await asyncio.sleep(0.1)
        assert (await client.post("/v1/embeddings", json=EMBED, headers=bearer("newer"))).status_code == 200


async def test_two_gateways_share_one_limit_through_redis(fake_embedding_worker, tmp_path):
    path = write_tenants(tmp_path / "tenants.yaml", acme={"keys_sha256": [digest("k")], "requests_per_second": 0.5,
                                                           "burst": 30})
    address = f"127.0.0.1:{fake_embedding_worker.port}"
    # Both gateways and all 60 callers share this test's event loop, which can hold a Redis reply past the
    # production deadline (the limiter would then fall back to per-process buckets): a deadline of 2 s here.
    with redis_server() as server:
        async with gateway_client(address, tenants_file=path, cache_url=server.url, redis_timeout_s=2.0) as first, \
                gateway_client(address, tenants_file=path, cache_url=server.url, redis_timeout_s=2.0) as second:
            replies = await asyncio.gather(*(client.post("/v1/embeddings", json=EMBED, headers=bearer("k"))
                                             for _ in range(30) for client in (first, second)))
            for client in (first, second):
                await asyncio.gather(*client.app.state.tenants.ledger.writes)
            usage = {name.decode(): int(value) for name, value in server.client().hgetall("tgu:acme").items()}
    allowed = sum(reply.status_code == 200 for reply in replies)
    assert {reply.status_code for reply in replies} == {200, 429}
    assert 27 <= allowed <= 33, allowed  # one bucket of 30 for both gateways, within 10%
    assert usage == {"requests": 60, "inputs": allowed, "tokens": 3 * allowed, "refused": 60 - allowed}


async def test_a_tenant_flooding_its_limit_costs_another_nothing(fake_embedding_worker, tmp_path):
    path = write_tenants(tmp_path / "tenants.yaml",
                         flood={"keys_sha256": [digest("f")], "requests_per_second": 20, "burst": 20},
                         calm={"keys_sha256": [digest("c")], "requests_per_second": 20, "burst": 20})
    async with gateway_client(f"127.0.0.1:{fake_embedding_worker.port}", tenants_file=path) as client:
        async def calls(key: str, rate: float, seconds: float) -> list[tuple[int, float]]:
            answers, tasks = [], []

            async def one(index: int):
                started = time.perf_counter()
                reply = await client.post("/v1/embeddings", json={"input": [f"{key} {index}"]}, headers=bearer(key))
                answers.append((reply.status_code, time.perf_counter() - started))

            for index in range(int(rate * seconds)):
                tasks.append(asyncio.create_task(one(index)))
                await asyncio.sleep(1 / rate)
            await asyncio.gather(*tasks)
            return answers

        alone = await calls("c", 10, 2)
        flood, beside = await asyncio.gather(calls("f", 200, 2), calls("c", 10, 2))

    def p99(answers):
        return sorted(elapsed for _, elapsed in answers)[int(len(answers) * 0.99) - 1]

    assert {status for status, _ in beside} == {200} and {status for status, _ in alone} == {200}
    assert sum(status == 429 for status, _ in flood) > len(flood) / 2
    assert p99(beside) <= 1.5 * p99(alone) + 0.005, (p99(alone), p99(beside))


class JwksEndpoint:
    """The issuer's JWKS over HTTP on a loopback port, as an identity provider serves it."""

    def __init__(self, issuer: Issuer):
        document = issuer

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - the name http.server calls
                body = json.dumps(document.jwks()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/jwks.json"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


async def test_keys_come_from_the_jwks_url_a_new_kid_is_fetched_and_a_dead_endpoint_keeps_the_known_keys(
        fake_embedding_worker, tmp_path, issuer):
    endpoint = JwksEndpoint(issuer)
    path = tmp_path / "tenants.yaml"
    path.write_text(yaml.safe_dump({"tenants": {"acme": {}}, "jwt": {
        "jwks_url": endpoint.url, "issuer": ISSUER, "audience": AUDIENCE, "algorithms": ["RS256", "ES256"]}}))
    try:
        async with gateway_client(f"127.0.0.1:{fake_embedding_worker.port}", tenants_file=str(path)) as client:
            first = await client.post("/v1/embeddings", json=EMBED, headers=bearer(issuer.token("rsa-1")))
            issuer.keys["rsa-2"] = (rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256")
            await asyncio.sleep(JWKS_REFETCH_S)  # unknown kids fetch the JWKS at most this often
            rotated = await client.post("/v1/embeddings", json=EMBED, headers=bearer(issuer.token("rsa-2")))
            endpoint.stop()
            still = await client.post("/v1/embeddings", json=EMBED, headers=bearer(issuer.token("ec-1")))
            unknown = await client.post("/v1/embeddings", json=EMBED, headers=bearer(jwt.encode(
                {"iss": ISSUER, "aud": AUDIENCE, "exp": time.time() + 60}, issuer.keys["rsa-1"][0],
                algorithm="RS256", headers={"kid": "rsa-404"})))
    finally:
        endpoint.stop()
    assert [first.status_code, rotated.status_code, still.status_code] == [200, 200, 200]
    assert unknown.status_code == 401 and "kid" in unknown.json()["error"]["message"]


async def test_usage_reports_the_tenants_limits_never_its_keys_and_a_quota_retries_at_utc_midnight(
        fake_embedding_worker, tmp_path):
    path = write_tenants(tmp_path / "tenants.yaml",
                         acme={"keys_sha256": [digest("k")], "daily_tokens": 100, "requests_per_second": 100,
                               "burst": 100},
                         small={"keys_sha256": [digest("s")], "daily_tokens": 5},
                         plain={"keys_sha256": [digest("p")]})
    async with gateway_client(f"127.0.0.1:{fake_embedding_worker.port}", tenants_file=path) as client:
        spent = await client.post("/v1/embeddings", json={"input": ["one two three four"]}, headers=bearer("k"))
        usage = (await client.get("/v1/usage", headers=bearer("k"))).json()
        await client.post("/v1/embeddings", json={"input": ["one two three four"]}, headers=bearer("s"))
        refused = await client.post("/v1/embeddings", json=EMBED, headers=bearer("s"))
        plain = (await client.get("/v1/usage", headers=bearer("p"))).json()
    assert plain["limits"] == {"models": ["*"]} and "tokens_today" not in plain, "no quota, no quota count"
    now = datetime.datetime.now(datetime.UTC)
    midnight = datetime.datetime.combine(now.date() + datetime.timedelta(days=1), datetime.time(), datetime.UTC)
    assert spent.status_code == 200 and refused.status_code == 429
    assert abs(int(refused.headers["Retry-After"]) - (midnight - now).total_seconds()) <= 3
    assert usage == {"tenant": "acme", "counted_by": "process", "requests": 1, "inputs": 1, "tokens": 6,
                     "refused": 0, "limits": {"requests_per_second": 100.0, "burst": 100, "daily_tokens": 100,
                                              "models": ["*"]}, "tokens_today": 6}
