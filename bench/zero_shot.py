"""Zero-shot classification served through the gateway against the same model in one process, in one run (a row of
`make bench`, or alone against a running mesh):

    make start && .venv/bin/python -m bench.zero_shot [GATEWAY_URL [CLASSIFIER_ADDRESS]]

1. accuracy on held-out CLINC150 texts (bench/data/clinc150-heldout.json: the odd-numbered texts of the validation
   split; the classifier's reference texts are the even-numbered ones) with label names only: 20 intents drawn at
   random (three seeds), and all 150, served (`POST /v1/classify` with `labels`) vs plain cosine of text and label
   name with sentence-transformers in this process;
2. the served scores against the worker's own (its gRPC reply to the same texts and labels: what the wire may
   change), and against the method computed here in fp32 (bare + template prototype, hub correction, softmax at
   the worker's temperature: what the worker's backend and precision change): the largest differences;
3. one text with 100 labels, sent 100 times one at a time, against one text with no labels (`Cache-Control:
   no-cache`, so only the worker's label cache is in play): p50 latency and the ratio, with every label's score
   in the answer and with the best 3 (the answer the request without labels gets).
"""

import json
import random
import statistics
import sys
import time
from pathlib import Path

import grpc
import httpx
import numpy as np

from services.classifier.settings import ClassifierSettings
from services.classifier.zero_shot import DEFAULT_TEMPLATE, read_reference
from torchgate.v1 import classifier_pb2, classifier_pb2_grpc

HELD_OUT = Path(__file__).parent / "data" / "clinc150-heldout.json"
SEEDS = (0, 1, 2)
LABELS_PER_SEED = 20
REPEATS = 100
NO_CACHE = {"Cache-Control": "no-cache"}


def held_out() -> tuple[list[str], list[str]]:
    rows = json.loads(HELD_OUT.read_text())["texts"]
    return [text for text, _ in rows], [intent for _, intent in rows]


def label_sets(intents: list[str]) -> dict[str, list[str]]:
    names = sorted(set(intents))
    sets = {f"seed {seed}": random.Random(seed).sample(names, LABELS_PER_SEED) for seed in SEEDS}
    return {**sets, "all 150": names}


def spoken(intent: str) -> str:
    return intent.replace("_", " ")


def served(url: str, texts: list[str], labels: list[str]) -> np.ndarray:
    """(texts, labels) scores from the gateway, in as many requests as the pair limit needs."""
    step = max(1, min(100, 4096 // len(labels)))
    rows = []
    with httpx.Client(base_url=url, timeout=300, headers=NO_CACHE) as client:
        for start in range(0, len(texts), step):
            reply = client.post("/v1/classify", json={"texts": texts[start:start + step], "labels": labels})
            if reply.status_code != 200:
                raise RuntimeError(f"/v1/classify answered {reply.status_code}: {reply.text}")
            rows.extend({top["intent"]: top["score"] for top in result["top"]} for result in reply.json()["results"])
    return np.array([[row[label] for label in labels] for row in rows])


def by_worker(address: str, texts: list[str], labels: list[str]) -> np.ndarray:
    """(texts, labels) scores from the classifier worker itself, over gRPC."""
    rows = []
    with grpc.insecure_channel(address) as channel:
        stub = classifier_pb2_grpc.ClassifierServiceStub(channel)
        for start in range(0, len(texts), 100):
            reply = stub.Classify(classifier_pb2.ClassifyRequest(
                texts=texts[start:start + 100], labels=[classifier_pb2.Label(name=label) for label in labels]))
            rows.extend({top.intent: top.score for top in result.top} for result in reply.results)
    return np.array([[row[label] for label in labels] for row in rows])


def measure(url: str, classifier: str) -> dict:
    from sentence_transformers import SentenceTransformer

    from services.runtime.models import resolve_model

    settings = ClassifierSettings()
    model = SentenceTransformer(str(resolve_model(settings.model)), device="cpu")

    def encode(items: list[str]) -> np.ndarray:
        return model.encode(items, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)

    texts, intents = held_out()
    vectors, reference = encode(texts), encode(read_reference(settings.reference_texts))
    accuracy, from_fp32, from_worker = {}, 0.0, 0.0
    for name, chosen in label_sets(intents).items():
        rows = [i for i, intent in enumerate(intents) if intent in chosen]
        labels = [spoken(intent) for intent in chosen]
        gold = np.array([chosen.index(intents[i]) for i in rows])
        scores = served(url, [texts[i] for i in rows], labels)
        if len(labels) == LABELS_PER_SEED:
            from_worker = max(from_worker, float(np.abs(by_worker(classifier, [texts[i] for i in rows], labels)
                                                        - scores).max()))
        bare = encode(labels)
        prototypes = bare + encode([DEFAULT_TEMPLATE.format(label) for label in labels])
        prototypes /= np.linalg.norm(prototypes, axis=1, keepdims=True)
        hubs = np.sort(prototypes @ reference.T, axis=1)[:, -settings.hub_neighbours:].mean(axis=1)
        logits = (vectors[rows] @ prototypes.T - settings.hubness * hubs) / settings.temperature
        method = np.exp(logits - logits.max(axis=1, keepdims=True))
        method /= method.sum(axis=1, keepdims=True)
        from_fp32 = max(from_fp32, float(np.abs(method - scores).max()))
        accuracy[name] = {"labels": len(labels), "texts": len(rows),
                          "served": float((scores.argmax(axis=1) == gold).mean()),
                          "plain_cosine_in_process": float(((vectors[rows] @ bare.T).argmax(axis=1) == gold).mean())}
    return {"accuracy": accuracy, "largest_difference_from_the_worker": from_worker,
            "largest_difference_from_fp32_in_process": from_fp32, "latency": label_cache(url, texts)}


def label_cache(url: str, texts: list[str]) -> dict:
    labels = [f"label number {index}" for index in range(100)]

    def p50_ms(body: dict) -> float:
        with httpx.Client(base_url=url, timeout=60, headers=NO_CACHE) as client:
            client.post("/v1/classify", json=body).raise_for_status()
            times = []
            for _ in range(REPEATS):
                started = time.perf_counter()
                client.post("/v1/classify", json=body).raise_for_status()
                times.append((time.perf_counter() - started) * 1000)
        return statistics.median(times)

    text = texts[0]
    plain = p50_ms({"text": text})
    every_score = p50_ms({"text": text, "labels": labels})
    best_three = p50_ms({"text": text, "labels": labels, "top_k": 3})
    return {"no_labels_p50_ms": plain, "labels_100_p50_ms": every_score, "labels_100_top_3_p50_ms": best_three,
            "ratio": every_score / plain, "ratio_top_3": best_three / plain}


def print_report(result: dict) -> None:
    for name, row in result["accuracy"].items():
        print(f"zero-shot, {row['labels']} labels ({name}, {row['texts']} held-out texts): served "
              f"{row['served']:.3f} vs plain cosine in-process {row['plain_cosine_in_process']:.3f}")
    seeds = [row["served"] for name, row in result["accuracy"].items() if name.startswith("seed")]
    latency = result["latency"]
    print(f"zero-shot, 20 labels mean over {len(seeds)} seeds: {statistics.mean(seeds):.3f}; served scores vs the "
          f"worker's own: largest difference {result['largest_difference_from_the_worker']:.1e}; vs fp32 in-process: "
          f"{result['largest_difference_from_fp32_in_process']:.1e}")
    print(f"zero-shot, one text with 100 known labels: p50 {latency['labels_100_p50_ms']:.1f} ms (every score), "
          f"{latency['labels_100_top_3_p50_ms']:.1f} ms (top 3) vs no labels {latency['no_labels_p50_ms']:.1f} ms: "
          f"{latency['ratio']:.2f}x, {latency['ratio_top_3']:.2f}x")


def main() -> None:
    url = sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8000"
    print_report(measure(url, sys.argv[2] if len(sys.argv) > 2 else "127.0.0.1:50054"))


if __name__ == "__main__":
    main()
