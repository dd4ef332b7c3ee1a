"""Zero-shot classification: scores for labels a request brings, by the method the served model allows.

- `Similarity` (an embedding model: the few-shot backend): each label becomes a prototype vector (the label's name
  alone and put in the hypothesis template, its description, the mean of its examples, all embedded by the same
  model), and a text scores its cosine to each prototype. A prototype near many ordinary texts (a "hub") wins
  texts it does not fit, so its cosine is marked down by its mean similarity to its nearest reference texts
  (CSLS, Conneau et al. 2018). Scores become probabilities by a temperature fitted on held-out texts (single
  label) or a logistic fitted on (text, label) pairs (multi-label). Prototypes are kept in an LRU, so a request
  with known labels costs one encode of its texts.
- `Entailment` (a checkpoint whose labels include "entailment": an NLI cross-encoder): each (text, template with
  the label) pair runs through the model, as Hugging Face's zero-shot pipeline does it: single label, a softmax
  of the entailment logits over the labels; multi-label, each label's entailment against contradiction.
"""

import asyncio
import json
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from services.classifier.head import softmax
from services.runtime.batcher import BatchOutcome

DEFAULT_TEMPLATE = "This example is {}."
SLOT = "{}"

# Items in, the batched run's outcome out (the servicer's run_batched with the caller's deadline and priority).
Run = Callable[[list[Any]], Awaitable[BatchOutcome]]


@dataclass(frozen=True)
class Label:
    name: str
    description: str = ""
    examples: tuple[str, ...] = ()


def hypothesis(template: str, name: str) -> str:
    """The template with the label in its slot (a plain replace: the template is the client's, not a format)."""
    return template.replace(SLOT, name, 1)


@dataclass(frozen=True)
class Scored:
    """(texts, labels) scores, the tokens the model saw for each text, and the batched run of the texts."""

    scores: np.ndarray
    token_counts: list[int]
    outcome: BatchOutcome


class ZeroShot(ABC):
    method: ClassVar[str]

    @abstractmethod
    async def score(self, run: Run, texts: list[str], labels: list[Label], template: str,
                    multi_label: bool) -> Scored:
        """Each row a distribution over the labels, or with `multi_label` each label's probability on its own."""

    def result_parts(self) -> list[str]:
        """What besides the model's files changes the scores (part of the fingerprint)."""
        return [self.method]

    def result_files(self) -> list[str]:
        """Files besides the model's that change the scores (part of the fingerprint)."""
        return []


def read_reference(path: Path) -> list[str]:
    """Reference texts: a JSON object with `texts`, or a text file of one text per line."""
    if path.suffix == ".json":
        texts = json.loads(path.read_text())["texts"]
    else:
        texts = path.read_text().splitlines()
    texts = [str(text) for text in texts if str(text).strip()]
    if not texts:
        raise ValueError(f"reference file {path} holds no texts")
    return texts


@dataclass(frozen=True)
class Calibration:
    """The similarity method's numbers: how much a hub is marked down, and how scores become probabilities."""

    hubness: float
    neighbours: int
    temperature: float
    multi_label_scale: float
    multi_label_bias: float


class Similarity(ZeroShot):
    method = "similarity"

    def __init__(self, reference: Path, calibration: Calibration, cache_size: int):
        self.reference_path = reference
        self.calibration = calibration
        self.cache_size = cache_size
        self.reference = np.zeros((0, 0), dtype=np.float32)
        self._prototypes: OrderedDict[tuple[Label, str], tuple[np.ndarray, float]] = OrderedDict()

    @classmethod
    def prepared(cls, settings, embed: Callable[[list[str]], np.ndarray]) -> "Similarity":
        """The method with a classifier's settings, its reference texts embedded (normalized) by `embed`: once,
        before serving."""
        similarity = cls(settings.reference_texts, Calibration(settings.hubness, settings.hub_neighbours,
                                                               settings.temperature, settings.multi_label_scale,
                                                               settings.multi_label_bias), settings.label_cache_size)
        if similarity.calibration.hubness:
            texts = read_reference(similarity.reference_path)
            similarity.reference = np.vstack([embed(texts[i:i + 64]) for i in range(0, len(texts), 64)])
        return similarity

    def result_parts(self) -> list[str]:
        return [self.method, repr(self.calibration)]

    def result_files(self) -> list[str]:
        return [str(self.reference_path)] if self.calibration.hubness else []

    async def score(self, run: Run, texts: list[str], labels: list[Label], template: str,
                    multi_label: bool) -> Scored:
        outcome = await run(texts)
        vectors = np.stack([result.vector for result in outcome.results])
        prototypes, hubs = await self._prototypes_of(run, labels, template)
        c = self.calibration
        similarity = vectors @ prototypes.T - c.hubness * hubs[None, :]
        if multi_label:
            scores = 1 / (1 + np.exp(-c.multi_label_scale * (similarity - c.multi_label_bias)))
        else:
            scores = softmax(similarity / c.temperature)
        return Scored(scores, outcome.token_counts, outcome)

    async def _prototypes_of(self, run: Run, labels: list[Label], template: str) -> tuple[np.ndarray, np.ndarray]:
        keys = [(label, template) for label in labels]
        missing = list(dict.fromkeys(key for key in keys if key not in self._prototypes))
        if missing:
            parts = [self._parts(label, template) for label, _ in missing]
            strings = list(dict.fromkeys(text for part in parts for group in part for text in group))
            encoded = await run(strings)
            vector_of = {text: result.vector for text, result in zip(strings, encoded.results, strict=True)}
            # A hub score reads every reference text: off the event loop, like the model.
            made = await asyncio.to_thread(lambda: [
                self._prototype([[vector_of[text] for text in group] for group in groups]) for groups in parts])
            for key, value in zip(missing, made, strict=True):
                self._remember(key, value)
        for key in keys:
            self._prototypes.move_to_end(key)
        prototypes, hubs = zip(*(self._prototypes[key] for key in keys), strict=True)
        return np.stack(prototypes), np.array(hubs)

    @staticmethod
    def _parts(label: Label, template: str) -> list[list[str]]:
        """The texts of each part of a label's prototype: its name (bare and in the template), its description,
        its examples."""
        groups = [[label.name, hypothesis(template, label.name)]]
        if label.description:
            groups.append([label.description])
        if label.examples:
            groups.append(list(label.examples))
        return groups

    def _prototype(self, groups: list[list[np.ndarray]]) -> tuple[np.ndarray, float]:
        """Each part's mean direction, summed with equal weight, normalized; and its hub score."""
        prototype = sum(_normalized(np.mean(group, axis=0)) for group in groups)
        prototype = _normalized(prototype)
        hub = 0.0
        if self.calibration.hubness:
            nearest = np.sort(self.reference @ prototype)[-self.calibration.neighbours:]
            hub = float(nearest.mean())
        return prototype.astype(np.float32), hub

    def _remember(self, key: tuple[Label, str], value: tuple[np.ndarray, float]) -> None:
        self._prototypes[key] = value
        while len(self._prototypes) > self.cache_size:
            self._prototypes.popitem(last=False)


class Entailment(ZeroShot):
    method = "entailment"

    def __init__(self, entailment: int, contradiction: int):
        self.entailment = entailment
        self.contradiction = contradiction

    @classmethod
    def of_labels(cls, labels: list[str]) -> "Entailment | None":
        """The method for an NLI checkpoint's labels (`entailment`, and `contradiction` or, with two labels, the
        other one); None when the labels are not an NLI model's."""
        lowered = [label.lower() for label in labels]
        entailment = next((i for i, label in enumerate(lowered) if label.startswith("entail")), None)
        if entailment is None:
            return None
        contradiction = next((i for i, label in enumerate(lowered) if label.startswith("contradict")), None)
        if contradiction is None and len(labels) == 2:
            contradiction = 1 - entailment
        return None if contradiction is None else cls(entailment, contradiction)

    async def score(self, run: Run, texts: list[str], labels: list[Label], template: str,
                    multi_label: bool) -> Scored:
        hypotheses = [hypothesis(template, label.name) for label in labels]
        outcome = await run([(text, claim) for text in texts for claim in hypotheses])
        logits = np.stack([result.logits for result in outcome.results]).reshape(len(texts), len(labels), -1)
        if multi_label:
            scores = softmax(logits[..., [self.contradiction, self.entailment]].reshape(-1, 2))[:, 1]
            scores = scores.reshape(len(texts), len(labels))
        else:
            scores = softmax(logits[..., self.entailment])
        counts = np.array(outcome.token_counts).reshape(len(texts), len(labels)).sum(axis=1)
        return Scored(scores, [int(count) for count in counts], outcome)


def _normalized(vector: np.ndarray) -> np.ndarray:
    return vector / max(float(np.linalg.norm(vector)), 1e-12)
