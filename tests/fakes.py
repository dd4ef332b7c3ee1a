"""A deterministic model adapter for tests of the batcher and the gateway (no torch, no weights)."""

import hashlib
import re
import threading

import numpy as np

from services.classifier.head import IntentScores
from services.classifier.zero_shot import Similarity
from services.gpu.readings import DeviceReading, Readings
from services.runtime.adapter import ModelAdapter, ModelDescription, Prepared

FAIL_TEXT = "raise in forward"


class FakeAdapter(ModelAdapter):
    """Vectors derived from a hash of each text; records every batch it was given."""

    def __init__(self, dimension: int = 8, max_tokens: int = 64, model_id: str = "test/fake-model"):
        self.model_id = model_id
        self.dimension = dimension
        self.max_tokens = max_tokens
        self.preprocessed: list[list[str]] = []
        self.forwarded: list[list[str]] = []
        self.gate = threading.Event()
        self.gate.set()

    def load(self) -> ModelDescription:
        return ModelDescription(model_id=self.model_id, model_path="/nowhere", device="cpu", dtype="float32",
                                max_input_tokens=self.max_tokens, dimension=self.dimension, vocab_size=1000)

    def warmup(self) -> None:
        pass

    def estimate_tokens(self, item: str | tuple[int, ...]) -> int:
        return min(len(item) if isinstance(item, tuple) else len(item.split()) + 2, self.max_tokens)

    def count_tokens(self, texts: list[str]) -> list[int]:
        return [len(text.split()) + 2 for text in texts]

    def tokenize(self, texts: list[str], add_special_tokens: bool) -> list[list[tuple[int, str, bool, int, int]]]:
        """Whitespace words as tokens, each word's id its length (the embedding adapter's shape of an answer)."""
        return [[(len(match.group()), match.group(), False, match.start(), match.end())
                 for match in re.finditer(r"\S+", text)] for text in texts]

    def preprocess(self, items: list) -> Prepared:
        """Token-id inputs stand for the text of their ids, so equal ids give equal vectors."""
        texts = [" ".join(map(str, item)) if isinstance(item, tuple) else item for item in items]
        self.preprocessed.append(texts)
        return Prepared(texts, [self.estimate_tokens(item) for item in items])

    def forward(self, prepared: Prepared) -> np.ndarray:
        self.gate.wait(10)
        self.forwarded.append(list(prepared.features))
        if FAIL_TEXT in prepared.features:
            raise RuntimeError("simulated device failure")
        return np.stack([vector_for(text, self.dimension) for text in prepared.features])

    def postprocess(self, prepared: Prepared, output: np.ndarray) -> list[np.ndarray]:
        return list(output)


def vector_for(text: str, dimension: int) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    return np.random.default_rng(seed).standard_normal(dimension).astype(np.float32)


class FakePairAdapter(FakeAdapter):
    """Scores a (query, document) pair by shared words: deterministic, no model."""

    tokenizer = None

    def estimate_tokens(self, pair: tuple[str, str]) -> int:
        return len(pair[0].split()) + len(pair[1].split()) + 3

    def windows(self, query: str, document: str, max_windows: int, max_tokens: int = 0) -> list[str]:
        return [document]  # no window: documents are scored whole

    def preprocess(self, pairs: list[tuple[str, str]]) -> Prepared:
        return Prepared(list(pairs), [self.estimate_tokens(pair) for pair in pairs])

    def forward(self, prepared: Prepared) -> list[tuple[float, float]]:
        self.gate.wait(10)
        return [overlap_score(query, document) for query, document in prepared.features]

    def postprocess(self, prepared: Prepared, output: list) -> list:
        return output


def overlap_score(query: str, document: str) -> tuple[float, float]:
    """(activated, raw): the raw score counts shared words; the activated one squashes it into (0, 1)."""
    raw = float(len(set(query.lower().split()) & set(document.lower().split())))
    return raw / (1 + raw), raw


INTENT_KEYWORDS = {"greeting": "hello", "farewell": "bye", "question": "?"}


class FakeIntentAdapter(FakeAdapter):
    """Intent probabilities from keywords (greeting: hello, farewell: bye, question: ?); no model. Zero-shot labels
    are scored by similarity of the texts' hashed vectors."""

    def zero_shot(self, settings) -> Similarity:
        return Similarity.prepared(settings, lambda texts: np.stack([self._unit(text) for text in texts]))

    def _unit(self, text: str) -> np.ndarray:
        vector = vector_for(text, 8)
        return vector / np.linalg.norm(vector)

    def load(self) -> ModelDescription:
        described = super().load()
        described.labels = list(INTENT_KEYWORDS)
        return described

    def intents(self) -> list[tuple[str, str, int]]:
        return [(name, f"texts with {keyword!r}", 1) for name, keyword in INTENT_KEYWORDS.items()]

    def forward(self, prepared: Prepared) -> np.ndarray:
        self.gate.wait(10)
        scores = np.array([[3.0 if keyword in text else 0.0 for keyword in INTENT_KEYWORDS.values()]
                           for text in prepared.features]) + 0.1
        return scores / scores.sum(axis=1, keepdims=True)

    def postprocess(self, prepared: Prepared, output: np.ndarray) -> list[IntentScores]:
        """Texts without any keyword lie beyond every intent."""
        return [IntentScores(row, bool(row.max() < 0.5), vector=self._unit(text))
                for row, text in zip(output, prepared.features, strict=True)]


class OneGpu(Readings):
    """What NVML reports on a machine with one 8 GB device on which pid 4242 allocated 3000 MB."""

    def device_count(self) -> int:
        return 1

    def device(self, index: int) -> DeviceReading:
        return DeviceReading(index=0, name="test", uuid="GPU-0", memory_total_mb=8000, memory_free_mb=5000,
                             memory_used_mb=3000, processes=[(4242, 3000)])
