"""Bi-encoder adapter on sentence-transformers."""

import logging

import numpy as np

from services.runtime.adapter import ModelAdapter, ModelDescription, Prepared
from services.runtime.device import configure_cpu_threads, select_device, select_dtype
from services.runtime.models import resolve_model

log = logging.getLogger(__name__)

# English WordPiece averages a little over four characters per token.
CHARS_PER_TOKEN = 4


class EmbeddingAdapter(ModelAdapter):
    """Runs a SentenceTransformer's modules directly on batches the runtime prepared."""

    def __init__(self, model_id: str, device: str = "auto", dtype: str = "auto"):
        self.model_id = model_id
        self.requested_device = device
        self.requested_dtype = dtype

    def load(self) -> ModelDescription:
        import torch
        from sentence_transformers import SentenceTransformer

        path = resolve_model(self.model_id)
        self.device = select_device(self.requested_device)
        self.dtype = select_dtype(self.device, self.requested_dtype)
        if self.device == "cpu":
            configure_cpu_threads()
        self.model = SentenceTransformer(str(path), device=self.device, local_files_only=True)
        self.model.to(self.dtype).eval()
        self.max_tokens = self.model.max_seq_length
        self.dimension = self.model.get_embedding_dimension()
        self._pin = self.device.startswith("cuda") and torch.cuda.is_available()
        return ModelDescription(
            model_id=self.model_id, model_path=str(path), device=self.device,
            dtype=str(self.dtype).removeprefix("torch."), max_input_tokens=self.max_tokens,
            dimension=self.dimension,
        )

    def warmup(self) -> None:
        for length in (8, 64, self.max_tokens):
            self._run(["warm " * length] * 4)

    def _run(self, texts: list[str]) -> list[np.ndarray]:
        prepared = self.preprocess(texts)
        return self.postprocess(prepared, self.forward(prepared))

    def estimate_tokens(self, text: str) -> int:
        return min(len(text) // CHARS_PER_TOKEN + 2, self.max_tokens)

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Exact token counts without truncation (special tokens included)."""
        encoded = self.model.tokenizer(texts, add_special_tokens=True, truncation=False)["input_ids"]
        return [len(ids) for ids in encoded]

    def preprocess(self, texts: list[str]) -> Prepared:
        features = self.model.preprocess(texts)
        token_counts = features["attention_mask"].sum(dim=1).tolist()
        if self._pin:
            features = {k: v.pin_memory() if hasattr(v, "pin_memory") else v for k, v in features.items()}
        return Prepared(features, token_counts)

    def forward(self, prepared: Prepared) -> np.ndarray:
        import torch

        features = {
            k: v.to(self.device, non_blocking=True) if hasattr(v, "to") else v
            for k, v in prepared.features.items()
        }
        with torch.inference_mode():
            embeddings = self.model(features)["sentence_embedding"]
        return embeddings.float().cpu().numpy()

    def postprocess(self, prepared: Prepared, output: np.ndarray) -> list[np.ndarray]:
        return list(output)
