"""Cross-encoder adapter, and the explicit embedding fallback for machines without one offline."""

import logging

import numpy as np

from services.embedding.adapter import EmbeddingAdapter
from services.reranking.windows import PASSAGES_PER_WINDOW, split_document, split_passages
from services.runtime.adapter import ModelAdapter, ModelDescription, Prepared, SpecAdapter
from services.runtime.precision import SELF_CHECK_BATCH, SELF_CHECK_TEXTS, score_agreement
from services.runtime.sequence_classification import SequenceClassification

log = logging.getLogger(__name__)

CHARS_PER_TOKEN = 4
# A window keeps at least this many document tokens, however long the query.
MIN_WINDOW_TOKENS = 32

# An item is one (query, document) pair; a result is (activated score, raw logit).
Pair = tuple[str, str]


class CrossEncoderAdapter(SpecAdapter):
    """Scores pairs with a sentence-transformers CrossEncoder (BERT models run packed).

    Pairs longer than the model's max length are truncated, longest part first.
    """

    def load(self) -> ModelDescription:
        import torch
        from sentence_transformers import CrossEncoder

        path, device, precision = self.locate()
        encoder = CrossEncoder(str(path), device=device, local_files_only=True)
        if encoder.num_labels != 1:
            raise ValueError(f"{self.model_id} has {encoder.num_labels} labels; a reranker needs exactly 1")
        model = encoder.transformers_model.to(precision.weights).eval()
        self.classification = SequenceClassification(model, encoder.tokenizer, encoder.max_length, device,
                                                     self.spec.pack_length, precision)
        self.packs_sequences = self.classification.packs_sequences
        self.max_tokens = encoder.max_length
        self.tokenizer = encoder.tokenizer
        self.activation = encoder.activation_fn or torch.nn.Identity()
        self.settle(self.classification.encoder, self._sample_relevance, score_agreement,
                    lambda texts: self.preprocess([(SELF_CHECK_TEXTS[0], text) for text in texts]).features)
        return self.describe(max_input_tokens=self.max_tokens)

    def _sample_relevance(self) -> np.ndarray:
        """Relevance in [0, 1] (sigmoid of the logit, whatever the model's own activation) of fixed pairs."""
        query = SELF_CHECK_TEXTS[0]
        logits = self.forward(self.preprocess([(query, document) for document in SELF_CHECK_BATCH]))[:, 1]
        return 1 / (1 + np.exp(-logits))

    def document_budget(self, query: str) -> int:
        """Document tokens that fit one window beside the whole query ([CLS] query [SEP] document [SEP])."""
        query_tokens = len(self.tokenizer(query, add_special_tokens=False)["input_ids"])
        return max(MIN_WINDOW_TOKENS, self.max_tokens - query_tokens - 3)

    def windows(self, query: str, document: str, max_windows: int, max_tokens: int = 0) -> list[str]:
        """Model-sized overlapping windows beside the whole query, at most `max_windows` from the start."""
        return split_document(self.tokenizer, document, self.document_budget(query), max_windows, max_tokens)

    def warmup(self) -> None:
        for length in (8, 64, self.max_tokens):
            prepared = self.preprocess([("warm up", "warm " * length)] * 4)
            self.postprocess(prepared, self.forward(prepared))

    def estimate_tokens(self, pair: Pair) -> int:
        return min((len(pair[0]) + len(pair[1])) // CHARS_PER_TOKEN + 3, self.max_tokens)

    def preprocess(self, pairs: list[Pair]) -> Prepared:
        return self.classification.preprocess([q for q, _ in pairs], [d for _, d in pairs])

    def forward(self, prepared: Prepared) -> np.ndarray:
        import torch

        logits = torch.from_numpy(self.classification.logits(prepared)[:, 0])
        return np.stack([self.activation(logits).numpy(), logits.numpy()], axis=1)

    def postprocess(self, prepared: Prepared, output: np.ndarray) -> list[tuple[float, float]]:
        return [(float(score), float(raw)) for score, raw in output]


class EmbeddingFallbackAdapter(ModelAdapter):
    """Scores a pair by the cosine of its normalized embeddings: the explicit, announced stand-in."""

    packs_sequences = True

    def __init__(self, cross_encoder_id: str, embedding: EmbeddingAdapter, reason: str):
        self.cross_encoder_id = cross_encoder_id
        self.embedding = embedding
        self.reason = reason

    def load(self) -> ModelDescription:
        described = self.embedding.load()
        described.model_id = f"fallback:cosine:{described.model_id}"
        described.fallback_reason = self.reason
        described.stands_in_for = self.cross_encoder_id
        described.dimension = 0
        return described

    @property
    def tokenizer(self):
        return self.embedding.tokenizer

    def windows(self, query: str, document: str, max_windows: int, max_tokens: int = 0) -> list[str]:
        """The document whole when it fits and each of its sentences (windows.py says why and how many)."""
        return split_passages(self.tokenizer, document, self.embedding.max_tokens - 2,
                              max_windows * PASSAGES_PER_WINDOW, max_tokens)

    def warmup(self) -> None:
        self.embedding.warmup()

    def estimate_tokens(self, pair: Pair) -> int:
        return self.embedding.estimate_tokens(pair[0]) + self.embedding.estimate_tokens(pair[1])

    def preprocess(self, pairs: list[Pair]) -> Prepared:
        """Embeds every distinct text once: a 1 x 100 request embeds its query once, not 100 times."""
        texts = list(dict.fromkeys(text for pair in pairs for text in pair))
        position = {text: i for i, text in enumerate(texts)}
        inner = self.embedding.preprocess(texts)
        index = [(position[q], position[d]) for q, d in pairs]
        tokens = [inner.token_counts[q] + inner.token_counts[d] for q, d in index]
        return Prepared((inner, index), tokens)

    def forward(self, prepared: Prepared) -> np.ndarray:
        inner, _ = prepared.features
        return self.embedding.forward(inner)

    def postprocess(self, prepared: Prepared, output: np.ndarray) -> list[tuple[float, float]]:
        _, index = prepared.features
        vectors = output / np.maximum(np.linalg.norm(output, axis=1, keepdims=True), 1e-12)
        scores = [float(vectors[q] @ vectors[d]) for q, d in index]
        return [(score, score) for score in scores]
