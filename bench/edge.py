"""The edge's gains and costs, measured on the served embedding path (wrk, REST): the response cache and the
tenants' authentication and limits. `make bench` runs it after the serving table; `python -m bench.edge`
runs it alone.

Cache: a Zipf-distributed load over 20,000 distinct texts, its exponent chosen so that about 80% of the
inputs the load is expected to send repeat (the measured hit share is printed), with the cache on, against
the same rate of new texts with `Cache-Control: no-cache`, at C=32 x 1 and C=8 x 8, each from a cold cache
(every load has texts of its own); the all-hit p50 against the uncached p50 (C=1 x 1); all-miss throughput
(every text new) with the cache on against it bypassed, interleaved; bytes per cached 384-d vector, as
accounted and as gateway RSS. Tenants: C=32 x 1 with a JWT (verified once, then cached) through a tenants
file against the same load on a mesh without tenants, side by side and interleaved, and how many 429s one
gateway process hands out per second.
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
REPEAT_SHARE = 0.8
# The goal's speed-up over no-cache, used to guess how many inputs a cached load will send.
EXPECTED_SPEEDUP = 4
ROUNDS = 3


def zipf_picks(distinct: int, draws: int, exponent: float, seed: int) -> np.ndarray:
    """`draws` ranks drawn by Zipf's law over `distinct` items (rank r with weight 1/r^exponent)."""
    weights = 1 / np.arange(1, distinct + 1) ** exponent
    return np.random.default_rng(seed).choice(distinct, size=draws, p=weights / weights.sum())


def zipf_exponent(distinct: int, draws: int, repeat_share: float) -> float:
    """The exponent at which `draws` Zipf draws over `distinct` items repeat `repeat_share` of the time."""
    low, high = 0.5, 2.5
    for _ in range(20):
        middle = (low + high) / 2
        repeats = 1 - len(np.unique(zipf_picks(distinct, draws, middle, 0))) / draws
        low, high = (middle, high) if repeats < repeat_share else (low, middle)
    return (low + high) / 2


def zipf_bodies(texts: list[str], draws: int, per_call: int, exponent: float, salt: str) -> list[bytes]:
    """Request bodies of `per_call` texts drawn by Zipf's law over `texts`."""
    picks = zipf_picks(len(texts), draws, exponent, 1)
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
    report: dict = {"distinct_texts": DISTINCT_TEXTS, "loads": []}
    with Mesh() as mesh:
        rest_load(mesh, EMBED, 8, 1, 2, 0, unique_bodies(texts[:400], 1, "warm "), NO_CACHE)  # the worker warm
        for concurrency, per_call in ((32, 1), (8, 8)):
            tag = f"{concurrency}x{per_call}"
            off = rest_load(mesh, EMBED, concurrency, per_call, seconds, 0,
                            unique_bodies(texts, per_call, f"off {tag} "), NO_CACHE)
            # Sized so that the inputs the cached load is expected to send repeat REPEAT_SHARE of the time.
            inputs = int(rate(off, per_call) * seconds * EXPECTED_SPEEDUP)
            exponent = zipf_exponent(DISTINCT_TEXTS, inputs, REPEAT_SHARE)
            before = gateway_metrics(mesh)
            on = rest_load(mesh, EMBED, concurrency, per_call, seconds, 0,
                           zipf_bodies(texts, inputs, per_call, exponent, f"on {tag} "), ())
            after = gateway_metrics(mesh)
            hits, misses = (after.get(f"torchgate_gateway_cache_{name}", 0)
                            - before.get(f"torchgate_gateway_cache_{name}", 0) for name in ("hits", "misses"))
            report["loads"].append({
                "concurrency": concurrency, "per_call": per_call, "zipf_exponent": exponent,
                "no_cache": rate(off, per_call), "cache": rate(on, per_call),
                "ratio": rate(on, per_call) / rate(off, per_call), "hit_share": hits / max(1.0, hits + misses),
                "p50_no_cache_ms": off["p50_ms"], "p50_cache_ms": on["p50_ms"], "errors": off["errors"] + on["errors"]})
        hot = unique_bodies(texts[:64], 1, "hot ")
        rest_load(mesh, EMBED, 1, 1, 1, 0, hot, ())
        all_hit = rest_load(mesh, EMBED, 1, 1, seconds, 0, hot, ())
        uncached = rest_load(mesh, EMBED, 1, 1, seconds, 0, hot, NO_CACHE)
        report["all_hit"] = {"p50_ms": all_hit["p50_ms"], "p99_ms": all_hit["p99_ms"], "rate": rate(all_hit, 1),
                             "uncached_p50_ms": uncached["p50_ms"]}
        # All-miss: every text new, cache on against bypassed, interleaved.
        rounds = {"cache": [], "no_cache": []}
        chunk = len(texts) // (2 * ROUNDS)
        before, rss_before = gateway_metrics(mesh), mesh.rss()["gateway"]
        for index in range(ROUNDS):
            for name, headers in (("cache", ()), ("no_cache", NO_CACHE)):
                start = (2 * index + (name == "no_cache")) * chunk
                load = rest_load(mesh, EMBED, 32, 1, seconds, 0,
                                 unique_bodies(texts[start:start + chunk], 1, f"miss {name} "), headers)
                rounds[name].append(rate(load, 1))
        after, rss_after = gateway_metrics(mesh), mesh.rss()["gateway"]
        cache, no_cache = (float(np.median(rounds[name])) for name in ("cache", "no_cache"))
        report["all_miss"] = {"cache": cache, "no_cache": no_cache, "ratio": cache / no_cache, "rounds": rounds}
        # Every input of these loads was new and stored (the no-cache loads store too): bytes per vector.
        def delta(name: str) -> float:
            return after.get(f"torchgate_gateway_cache_{name}", 0) - before.get(f"torchgate_gateway_cache_{name}", 0)

        stored, grown = delta("misses") - delta("evictions"), delta("bytes")
        report["bytes_per_vector"] = {"accounted": grown / max(1.0, stored),
                                      "rss": (rss_after - rss_before) * 2**20 / max(1.0, stored)}
        report["rss_mb"] = mesh.rss()
    return report


def tenants_bench(seconds: float) -> dict:
    """Two meshes side by side, one with tenants; loads alternate between them (the machine drifts)."""
    bodies = unique_bodies(build_corpus(2000, seed=13), 1, "")
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
    guarded_headers = (*NO_CACHE, f"Authorization: Bearer {token}")
    runs = {"plain": [], "guarded": []}
    p99 = {"plain": [], "guarded": []}
    with Mesh() as plain, Mesh(TORCHGATE_GATEWAY_TENANTS_FILE=str(folder / "tenants.yaml")) as guarded:
        meshes = {"plain": (plain, NO_CACHE), "guarded": (guarded, guarded_headers)}
        for mesh, headers in meshes.values():
            rest_load(mesh, EMBED, 32, 1, 2, 0, bodies, headers)
        for _ in range(ROUNDS):
            for name, (mesh, headers) in meshes.items():
                load = rest_load(mesh, EMBED, 32, 1, seconds, 0, bodies, headers)
                runs[name].append(rate(load, 1))
                p99[name].append(load["p99_ms"])
        refused = rest_load(guarded, EMBED, 16, 1, seconds, 0, bodies[:100], (*NO_CACHE, "Authorization: Bearer tiny"))
    plain_rate, guarded_rate = (float(np.median(runs[name])) for name in ("plain", "guarded"))
    return {"plain": plain_rate, "guarded": guarded_rate, "ratio": guarded_rate / plain_rate, "rounds": runs,
            "p99_plain_ms": float(np.median(p99["plain"])), "p99_guarded_ms": float(np.median(p99["guarded"])),
            "refusals_per_s": refused["errors"] / refused["duration_s"], "refusal_p99_ms": refused["p99_ms"]}


def measure(seconds: float) -> dict:
    return {"cache": cache_bench(seconds), "tenants": tenants_bench(seconds)}


def print_edge(report: dict) -> None:
    cache = report["cache"]
    print(f"\nresponse cache, embed REST, Zipf over {cache['distinct_texts']} texts:")
    for load in cache["loads"]:
        print(f"  C={load['concurrency']} k={load['per_call']} (s={load['zipf_exponent']:.2f}): "
              f"cache {load['cache']:.1f}/s vs no-cache "
              f"{load['no_cache']:.1f}/s = {load['ratio']:.2f}x (hits {load['hit_share']:.0%} of inputs; p50 "
              f"{load['p50_cache_ms']:.1f} vs {load['p50_no_cache_ms']:.1f} ms; {load['errors']} errors)")
    hit, miss = cache["all_hit"], cache["all_miss"]
    print(f"  all-hit C=1 k=1: p50 {hit['p50_ms']:.2f} ms (uncached {hit['uncached_p50_ms']:.2f} ms), "
          f"p99 {hit['p99_ms']:.2f} ms, {hit['rate']:.0f}/s")
    print(f"  all-miss C=32 k=1 (medians of {ROUNDS} interleaved): cache {miss['cache']:.1f}/s vs no-cache "
          f"{miss['no_cache']:.1f}/s = {miss['ratio']:.3f}x")
    per_vector = cache["bytes_per_vector"]
    print(f"  memory per cached 384-d vector: {per_vector['accounted']:.0f} bytes accounted, {per_vector['rss']:.0f} "
          f"bytes of gateway RSS; RSS (MB) {cache['rss_mb']}")
    tenants = report["tenants"]
    print(f"tenants (embed C=32 k=1, JWT, limits on; medians of {ROUNDS} interleaved): "
          f"{tenants['guarded']:.1f}/s vs {tenants['plain']:.1f}/s "
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
