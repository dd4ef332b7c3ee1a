"""The edge's gains and costs, measured on the served embedding path (wrk, REST): the response cache and the
tenants' authentication and limits. `make bench` runs it after the serving table; `python -m bench.edge`
runs it alone.

Cache: a Zipf-distributed load over 20,000 distinct texts (about 80% of inputs repeat) with the cache on
against the same load with `Cache-Control: no-cache`, at C=32 x 1 and C=8 x 8, each from a cold cache (every
load has texts of its own); the all-hit p50 against the uncached p50 (C=1 x 1); all-miss throughput
(every text new) with the cache on against it bypassed; bytes per cached 384-d vector. Tenants: C=32 x 1
with a JWT (verified once, then cached) through a tenants file against the same load on a gateway without
tenants, and how many 429s one gateway process hands out per second.
"""

import argparse
import hashlib
import json
import re
import tempfile
import time
import urllib.request
from pathlib import Path

import jwt
import numpy as np
import orjson
import yaml
from cryptography.hazmat.primitives.asymmetric import rsa

from bench.__main__ import NO_CACHE, ROOT, Mesh, rate, rest_load
from bench.corpus import build_corpus
from bench.scenarios import SCENARIOS

EMBED = SCENARIOS["embed"]
DISTINCT_TEXTS = 20_000
ZIPF_EXPONENT = 1.0


def zipf_bodies(texts: list[str], draws: int, per_call: int, salt: str, seed: int) -> list[bytes]:
    """Request bodies of `per_call` texts drawn by Zipf's law over `texts` (rank r with weight 1/r^s)."""
    weights = 1 / np.arange(1, len(texts) + 1) ** ZIPF_EXPONENT
    picks = np.random.default_rng(seed).choice(len(texts), size=draws * per_call, p=weights / weights.sum())
    return [orjson.dumps({"input": [salt + texts[i] for i in picks[start:start + per_call]],
                          "encoding_format": "base64"}) for start in range(0, len(picks), per_call)]


def unique_bodies(texts: list[str], per_call: int, salt: str) -> list[bytes]:
    return [orjson.dumps({"input": [salt + text for text in texts[start:start + per_call]],
                          "encoding_format": "base64"}) for start in range(0, len(texts) - per_call + 1, per_call)]


def gateway_metrics(mesh: Mesh) -> dict[str, float]:
    """The cache's counters summed over their labels."""
    with urllib.request.urlopen(f"http://127.0.0.1:{mesh.ports['gateway']}/metrics", timeout=10) as reply:
        text = reply.read().decode()
    sums: dict[str, float] = {}
    for name, value in re.findall(r"^(torchgate_gateway_cache_[a-z_]+?)(?:_total)?\{[^}]*\} ([0-9.e+]+)$", text, re.M):
        sums[name] = sums.get(name, 0.0) + float(value)
    return sums


def cache_bench(seconds: float) -> dict:
    texts = build_corpus(DISTINCT_TEXTS, seed=11)
    report: dict = {"distinct_texts": DISTINCT_TEXTS, "zipf_exponent": ZIPF_EXPONENT, "loads": []}
    with Mesh(["embedding"]) as mesh:
        rest_load(mesh, EMBED, 8, 1, 2, 0, unique_bodies(texts[:400], 1, "warm "), NO_CACHE)  # the worker warm
        for concurrency, per_call in ((32, 1), (8, 8)):
            draws = 60_000 // per_call
            tag = f"{concurrency}x{per_call}"
            off = rest_load(mesh, EMBED, concurrency, per_call, seconds, 0,
                            zipf_bodies(texts, draws, per_call, f"off {tag} ", 1), NO_CACHE)
            before = gateway_metrics(mesh)
            on = rest_load(mesh, EMBED, concurrency, per_call, seconds, 0,
                           zipf_bodies(texts, draws, per_call, f"on {tag} ", 1), ())
            after = gateway_metrics(mesh)
            hits = after.get("torchgate_gateway_cache_hits", 0) - before.get("torchgate_gateway_cache_hits", 0)
            misses = after.get("torchgate_gateway_cache_misses", 0) - before.get("torchgate_gateway_cache_misses", 0)
            report["loads"].append({
                "concurrency": concurrency, "per_call": per_call, "no_cache": rate(off, per_call),
                "cache": rate(on, per_call), "ratio": rate(on, per_call) / rate(off, per_call),
                "hit_share": hits / max(1.0, hits + misses), "p50_no_cache_ms": off["p50_ms"],
                "p50_cache_ms": on["p50_ms"], "errors": off["errors"] + on["errors"]})
        hot = unique_bodies(texts[:64], 1, "hot ")
        rest_load(mesh, EMBED, 1, 1, 1, 0, hot, ())
        all_hit = rest_load(mesh, EMBED, 1, 1, seconds, 0, hot, ())
        uncached = rest_load(mesh, EMBED, 1, 1, seconds, 0, hot, NO_CACHE)
        report["all_hit"] = {"p50_ms": all_hit["p50_ms"], "p99_ms": all_hit["p99_ms"], "rate": rate(all_hit, 1),
                             "uncached_p50_ms": uncached["p50_ms"]}
        half = len(texts) // 2
        miss_on = rest_load(mesh, EMBED, 32, 1, seconds, 0, unique_bodies(texts[:half], 1, "miss on "), ())
        miss_off = rest_load(mesh, EMBED, 32, 1, seconds, 0, unique_bodies(texts[half:], 1, "miss off "), NO_CACHE)
        report["all_miss"] = {"cache": rate(miss_on, 1), "no_cache": rate(miss_off, 1),
                              "ratio": rate(miss_on, 1) / rate(miss_off, 1)}
        totals = gateway_metrics(mesh)
        entries = totals.get("torchgate_gateway_cache_misses", 0) - totals.get("torchgate_gateway_cache_evictions", 0)
        report["bytes_per_vector"] = totals.get("torchgate_gateway_cache_bytes", 0) / max(1.0, entries)
        report["rss_mb"] = mesh.rss()
    return report


def tenants_bench(seconds: float) -> dict:
    texts = build_corpus(2000, seed=13)
    bodies = unique_bodies(texts, 1, "")
    with Mesh(["embedding"]) as mesh:
        rest_load(mesh, EMBED, 32, 1, 2, 0, bodies, NO_CACHE)
        plain = rest_load(mesh, EMBED, 32, 1, seconds, 0, bodies, NO_CACHE)
    folder = Path(tempfile.mkdtemp(prefix="torchgate-bench-tenants-"))
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key())), "kid": "bench", "alg": "RS256"}
    (folder / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    (folder / "tenants.yaml").write_text(yaml.safe_dump({
        "tenants": {"bench": {"requests_per_second": 1e6, "burst": 1_000_000, "inputs_per_second": 1e6,
                              "inputs_burst": 1_000_000, "max_concurrency": 1024},
                    "tiny": {"keys_sha256": [hashlib.sha256(b"tiny").hexdigest()], "requests_per_second": 0.001,
                             "burst": 1}},
        "jwt": {"jwks_file": str(folder / "jwks.json"), "issuer": "bench", "audience": "torchgate",
                "algorithms": ["RS256"], "tenant_claim": "tenant"}}))
    token = jwt.encode({"iss": "bench", "aud": "torchgate", "exp": int(time.time()) + 3600, "tenant": "bench"}, key,
                       algorithm="RS256", headers={"kid": "bench"})
    with Mesh(["embedding"], TORCHGATE_GATEWAY_TENANTS_FILE=str(folder / "tenants.yaml")) as mesh:
        guarded_headers = (*NO_CACHE, f"Authorization: Bearer {token}")
        rest_load(mesh, EMBED, 32, 1, 2, 0, bodies, guarded_headers)
        guarded = rest_load(mesh, EMBED, 32, 1, seconds, 0, bodies, guarded_headers)
        refused = rest_load(mesh, EMBED, 16, 1, seconds, 0, bodies[:100], (*NO_CACHE, "Authorization: Bearer tiny"))
    return {"plain": rate(plain, 1), "guarded": rate(guarded, 1), "ratio": rate(guarded, 1) / rate(plain, 1),
            "p99_plain_ms": plain["p99_ms"], "p99_guarded_ms": guarded["p99_ms"],
            "refusals_per_s": refused["errors"] / refused["duration_s"], "refusal_p99_ms": refused["p99_ms"]}


def measure(seconds: float) -> dict:
    return {"cache": cache_bench(seconds), "tenants": tenants_bench(seconds)}


def print_edge(report: dict) -> None:
    cache = report["cache"]
    print(f"\nresponse cache, embed REST, Zipf (s={cache['zipf_exponent']}) over {cache['distinct_texts']} texts:")
    for load in cache["loads"]:
        print(f"  C={load['concurrency']} k={load['per_call']}: cache {load['cache']:.1f}/s vs no-cache "
              f"{load['no_cache']:.1f}/s = {load['ratio']:.2f}x (hits {load['hit_share']:.0%} of inputs; p50 "
              f"{load['p50_cache_ms']:.1f} vs {load['p50_no_cache_ms']:.1f} ms; {load['errors']} errors)")
    hit, miss = cache["all_hit"], cache["all_miss"]
    print(f"  all-hit C=1 k=1: p50 {hit['p50_ms']:.2f} ms (uncached {hit['uncached_p50_ms']:.2f} ms), "
          f"p99 {hit['p99_ms']:.2f} ms, {hit['rate']:.0f}/s")
    print(f"  all-miss C=32 k=1: cache {miss['cache']:.1f}/s vs no-cache {miss['no_cache']:.1f}/s = "
          f"{miss['ratio']:.3f}x")
    print(f"  memory: {cache['bytes_per_vector']:.0f} bytes per cached 384-d vector; RSS (MB) {cache['rss_mb']}")
    tenants = report["tenants"]
    print(f"tenants (embed C=32 k=1, JWT, limits on): {tenants['guarded']:.1f}/s vs {tenants['plain']:.1f}/s "
          f"without tenants = {tenants['ratio']:.3f}x (p99 {tenants['p99_guarded_ms']:.0f} vs "
          f"{tenants['p99_plain_ms']:.0f} ms); 429s handed out: {tenants['refusals_per_s']:.0f}/s "
          f"(p99 {tenants['refusal_p99_ms']:.1f} ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    report = measure(args.seconds)
    print_edge(report)
    out = ROOT / "bench/results" / f"{time.strftime('%Y%m%d-%H%M%S')}-edge.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"\nreport: {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
