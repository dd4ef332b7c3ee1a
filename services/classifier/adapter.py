"""The classifier's two backends behind one interface: a few-shot head on embeddings, or a checkpoint."""

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from services.classifier.examples import ExampleSet, load_examples
from services.classifier.head import Head, IntentScores, ScopeThreshold, learn_scope_threshold, softmax, train
from services.classifier.zero_shot import Entailment, Similarity
from services.embedding.adapter import EmbeddingAdapter
from services.runtime.adapter import ModelAdapter, ModelDescription, Prepared, SpecAdapter
from services.runtime.precision import SELF_CHECK_BATCH, score_agreement
from services.runtime.sequence_classification import SequenceClassification

log = logging.getLogger(__name__)

CHARS_PER_TOKEN = 4


@dataclass(frozen=True)
class FewShotHead:
    """Everything learned from one example file; replaced whole, so a batch reads one file's state."""

    examples: ExampleSet
    head: Head
    in_scope_examples: np.ndarray
    scope: ScopeThreshold | None
    labels: tuple[str, ...]


class FewShotAdapter(ModelAdapter):
    """Embeds texts with the embedding adapter; a head trained at start-up on the example file classifies.

    With `out_of_scope` (an intent name), a threshold learned from the examples marks texts whose nearest
    in-scope example is too far as belonging to no intent (head.learn_scope_threshold); examples listed under
    that name train it as a class of its own. `learn()` reads the example file again while the adapter serves;
    assigning its result to `state` swaps the new head in at once (a batch reads `state` once).
    """

    def __init__(self, embedding: EmbeddingAdapter, examples: Path, out_of_scope: str | None = None):
        self.embedding = embedding
        self.examples_path = examples
        self.out_of_scope = out_of_scope
        self.state: FewShotHead | None = None

    def load(self) -> ModelDescription:
        described = self.embedding.load()
        self.packs_sequences = self.embedding.packs_sequences
        self.state = self.learn()
        described.model_id = f"few-shot:{described.model_id}"
        described.labels = list(self.state.labels)
        described.dimension = 0
        described.result_files = [str(self.examples_path)]
        return described

    def learn(self) -> FewShotHead:
        """What the example file teaches now; serving switches to it when it is assigned to `state`."""
        examples = load_examples(self.examples_path)
        vectors = np.vstack([self._embed(examples.texts[i:i + 64]) for i in range(0, len(examples.texts), 64)])
        labels = np.array(examples.labels)
        head = train(vectors, labels, len(examples.intents))
        scope_label = examples.intents.index(self.out_of_scope) if self.out_of_scope in examples.intents else None
        scope = (learn_scope_threshold(vectors, labels, head.held_out_predictions == labels, scope_label)
                 if self.out_of_scope else None)
        log.info("few-shot head trained", extra={
            "intents": len(examples.intents), "examples": len(examples.texts),
            "cv_accuracy": round(head.cv_accuracy, 3), "temperature": round(head.temperature, 3),
            "examples_file": str(self.examples_path),
            **({"out_of_scope_threshold": round(scope.threshold, 4),
                "cv_in_scope_accuracy": round(scope.in_scope_accuracy, 3),
                "cv_out_of_scope_recall": round(scope.out_of_scope_recall, 3),
                "cv_scope_accuracy": round(scope.accuracy, 3)} if scope else {})})
        return FewShotHead(examples, head, vectors[labels != scope_label], scope, tuple(examples.intents))

    @property
    def head(self) -> Head:
        return self.state.head

    def _embed(self, texts: list[str]) -> np.ndarray:
        prepared = self.embedding.preprocess(texts)
        return normalized(self.embedding.forward(prepared))

    def intents(self) -> list[tuple[str, str, int]]:
        examples = self.state.examples
        return [(name, examples.descriptions[name], examples.count(name)) for name in examples.intents]

    def warmup(self) -> None:
        self.embedding.warmup()

    def estimate_tokens(self, text: str) -> int:
        return self.embedding.estimate_tokens(text)

    def preprocess(self, texts: list[str]) -> Prepared:
        return self.embedding.preprocess(texts)

    def zero_shot(self, settings) -> Similarity:
        """Labels a request brings are scored by similarity on this model's embeddings."""
        return Similarity.prepared(settings, self._embed)

    def forward(self, prepared: Prepared) -> tuple[FewShotHead, np.ndarray, np.ndarray, np.ndarray]:
        state = self.state
        vectors = normalized(self.embedding.forward(prepared))
        return state, state.head.probabilities(vectors), (vectors @ state.in_scope_examples.T).max(axis=1), vectors

    def postprocess(self, prepared: Prepared,
                    output: tuple[FewShotHead, np.ndarray, np.ndarray, np.ndarray]) -> list[IntentScores]:
        state, probabilities, nearest, vectors = output
        threshold = state.scope.threshold if state.scope else -np.inf
        return [IntentScores(row, bool(similarity < threshold), state.labels, vector)
                for row, similarity, vector in zip(probabilities, nearest, vectors, strict=True)]


class CheckpointAdapter(SpecAdapter):
    """Any Hugging Face sequence-classification directory (e.g. a fine-tuned DeBERTa); labels from its config.
    An NLI checkpoint also scores (text, hypothesis) pairs for zero-shot requests (services/classifier/zero_shot.py)."""

    def load(self) -> ModelDescription:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        path, device, precision = self.locate()
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        model = AutoModelForSequenceClassification.from_pretrained(str(path), local_files_only=True)
        model = model.to(device=device, dtype=precision.weights).eval()
        config = model.config
        self.labels = [config.id2label[i] for i in range(config.num_labels)]
        self.max_tokens = min(tokenizer.model_max_length, getattr(config, "max_position_embeddings", 512))
        self.classification = SequenceClassification(model, tokenizer, self.max_tokens, device,
                                                     self.spec.pack_length, precision)
        self.packs_sequences = self.classification.packs_sequences
        self.settle(self.classification.encoder, lambda: softmax(self.forward(self.preprocess(SELF_CHECK_BATCH))),
                    score_agreement, lambda texts: self.preprocess(texts).features)
        return self.describe(max_input_tokens=self.max_tokens, labels=list(self.labels))

    def intents(self) -> list[tuple[str, str, int]]:
        return [(label, "", 0) for label in self.labels]

    def zero_shot(self, settings) -> Entailment | None:
        """An NLI checkpoint scores labels by entailment; any other checkpoint does not classify by labels."""
        return Entailment.of_labels(self.labels)

    def warmup(self) -> None:
        for length in (8, 64, self.max_tokens):
            prepared = self.preprocess(["warm " * length] * 4)
            self.postprocess(prepared, self.forward(prepared))

    def estimate_tokens(self, item: str | tuple[str, str]) -> int:
        chars = len(item) if isinstance(item, str) else len(item[0]) + len(item[1])
        return min(chars // CHARS_PER_TOKEN + 3, self.max_tokens)

    def preprocess(self, items: list[str | tuple[str, str]]) -> Prepared:
        """Texts, and (text, hypothesis) pairs of zero-shot requests: the tokenizer takes both in one batch."""
        return self.classification.preprocess(items)

    def forward(self, prepared: Prepared) -> np.ndarray:
        return self.classification.logits(prepared)

    def postprocess(self, prepared: Prepared, output: np.ndarray) -> list[IntentScores]:
        return [IntentScores(probabilities, logits=logits) for probabilities, logits in zip(softmax(output), output,
                                                                                            strict=True)]


def normalized(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
