"""Bi-encoder adapter on sentence-transformers, with packed batches for BERT mean-pooling models."""

import logging
from typing import Any

import numpy as np

from services.runtime.adapter import ModelDescription, Prepared, SpecAdapter
from services.runtime.packing import PackedBatch, PackedEncoder, mean_pool, pack
from services.runtime.precision import SELF_CHECK_BATCH, cosine_agreement

log = logging.getLogger(__name__)

# English WordPiece averages a little over four characters per token.
CHARS_PER_TOKEN = 4

# An input is a text, or a tuple of the model's own token ids (used as they are).
Item = str | tuple[int, ...]


class EmbeddingAdapter(SpecAdapter):
    """Embeds texts with a SentenceTransformer.

    BERT encoders followed by mean pooling (MiniLM, BGE, E5, GTE...) run packed (see
    services/runtime/packing.py); any other model runs through its own modules on padded batches.
    """

    def load(self) -> ModelDescription:
        import torch
        from sentence_transformers import SentenceTransformer

        path, self.device, precision = self.locate()
        self.model = SentenceTransformer(str(path), device=self.device, local_files_only=True)
        self.model.to(precision.weights).eval()
        self.max_tokens = self.model.max_seq_length
        self.dimension = self.model.get_embedding_dimension()
        self.tokenizer = self.model.tokenizer
        self.packs_sequences = self._packable()
        self.encoder = PackedEncoder(self.model[0].auto_model, self.device) if self.packs_sequences else None
        self.normalizes = any(type(module).__name__ == "Normalize" for module in self.model)
        self._pin = self.device.startswith("cuda") and torch.cuda.is_available()
        self.settle(self.encoder, lambda: self.forward(self.preprocess(SELF_CHECK_BATCH)), cosine_agreement,
                    lambda texts: self.preprocess(texts).features)
        described = self.describe(max_input_tokens=self.max_tokens, dimension=self.dimension,
                                  prompts=dict(self.model.prompts or {}), vocab_size=len(self.tokenizer))
        log.info("embedding model loaded", extra={"model": self.model_id, "packed_batches": self.packs_sequences,
                                                  "dtype": described.dtype, "backend": described.backend})
        return described

    def _packable(self) -> bool:
        """Packing reproduces Transformer -> mean Pooling (-> Normalize) for BERT encoders only."""
        names = [type(module).__name__ for module in self.model]
        if names not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
            return False
        pooling = self.model[1].get_config_dict()
        return pooling.get("pooling_mode") == "mean" and self.model[0].auto_model.config.model_type == "bert"

    def warmup(self) -> None:
        for length in (8, 64, self.max_tokens):
            texts = ["warm " * length] * 4
            prepared = self.preprocess(texts)
            self.postprocess(prepared, self.forward(prepared))

    def estimate_tokens(self, item: Item) -> int:
        if isinstance(item, tuple):
            return min(len(item), self.max_tokens)
        return min(len(item) // CHARS_PER_TOKEN + 2, self.max_tokens)

    def count_tokens(self, texts: list[str]) -> list[int]:
        """Exact token counts without truncation (special tokens included)."""
        return [len(ids) for ids in self.tokenizer(texts, truncation=False)["input_ids"]]

    def tokenizer_json(self) -> str:
        """The tokenizer as a `tokenizers` definition, with no truncation or padding (the reader counts every
        token)."""
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_str(self.tokenizer.backend_tokenizer.to_str())
        tokenizer.no_truncation()
        tokenizer.no_padding()
        return tokenizer.to_str()

    def tokenize(self, texts: list[str], add_special_tokens: bool) -> list[list[tuple[int, str, bool, int, int]]]:
        """Each text's tokens as (id, text, special, start, stop), with character offsets into the text."""
        encoded = self.tokenizer(texts, add_special_tokens=add_special_tokens, return_offsets_mapping=True,
                                 truncation=False)
        special = set(self.tokenizer.all_special_ids)
        return [
            [(token_id, self.tokenizer.convert_ids_to_tokens(token_id) if token_id in special else text[start:stop],
              token_id in special, start, stop)
             for token_id, (start, stop) in zip(ids, offsets, strict=True)]
            for text, ids, offsets in zip(texts, encoded["input_ids"], encoded["offset_mapping"], strict=True)
        ]

    def _token_ids(self, items: list[Item]) -> list[list[int]]:
        """Token ids of every input: texts tokenized (truncated to the model's limit), ids as they are."""
        texts = [item for item in items if isinstance(item, str)]
        encoded = iter(self.tokenizer(texts, truncation=True, max_length=self.max_tokens)["input_ids"] if texts else [])
        return [list(item[: self.max_tokens]) if isinstance(item, tuple) else next(encoded) for item in items]

    def preprocess(self, items: list[Item]) -> Prepared:
        if self.packs_sequences:
            hidden_size = self.model[0].auto_model.config.hidden_size
            batch = pack(self._token_ids(items), self.spec.pack_length, hidden_size, self.tokenizer.pad_token_id or 0)
            if self._pin:
                batch = batch.map_tensors(lambda tensor: tensor.pin_memory())
            return Prepared(batch, batch.lengths)
        if all(isinstance(item, str) for item in items):
            features: dict[str, Any] = self.model.preprocess(items)
        else:
            features = dict(self.tokenizer.pad({"input_ids": self._token_ids(items)}, return_tensors="pt"))
        token_counts = features["attention_mask"].sum(dim=1).tolist()
        if self._pin:
            features = {k: v.pin_memory() if hasattr(v, "pin_memory") else v for k, v in features.items()}
        return Prepared(features, token_counts)

    def forward(self, prepared: Prepared) -> np.ndarray:
        import torch

        with torch.inference_mode(), self.precision.context():
            if self.packs_sequences:
                batch: PackedBatch = prepared.features.map_tensors(
                    lambda tensor: tensor.to(self.device, non_blocking=True))
                embeddings = mean_pool(self.encoder(batch), batch)
                if self.normalizes:
                    embeddings = torch.nn.functional.normalize(embeddings, dim=-1)
            else:
                features = {k: v.to(self.device, non_blocking=True) if hasattr(v, "to") else v
                            for k, v in prepared.features.items()}
                embeddings = self.model(features)["sentence_embedding"]
        return embeddings.float().cpu().numpy()

    def postprocess(self, prepared: Prepared, output: np.ndarray) -> list[np.ndarray]:
        return list(output)
