"""Running a Hugging Face sequence-classification model on texts or text pairs, packed when it is BERT."""

import numpy as np

from services.runtime.adapter import Prepared
from services.runtime.packing import PackedBatch, PackedEncoder, first_token_states, pack
from services.runtime.precision import Precision


class SequenceClassification:
    """Tokenize -> logits for an `AutoModelForSequenceClassification`; shared by reranker and classifier.

    BERT models run packed (services/runtime/packing.py): [CLS] state -> pooler -> classifier, exactly as
    BertForSequenceClassification does; any other architecture (DeBERTa...) runs on padded batches.
    Inputs longer than `max_tokens` are truncated, longest part first for pairs.
    """

    def __init__(self, model, tokenizer, max_tokens: int, device: str, pack_length: int, precision: Precision):
        self.model = model
        self.precision = precision
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.device = device
        self.pack_length = pack_length
        self.packs_sequences = type(model).__name__ == "BertForSequenceClassification"
        self.encoder = PackedEncoder(model.bert, device) if self.packs_sequences else None

    def preprocess(self, texts: list[str], pairs: list[str] | None = None) -> Prepared:
        if self.packs_sequences:
            encoded = self.tokenizer(texts, pairs, truncation="longest_first", max_length=self.max_tokens)
            batch = pack(encoded["input_ids"], self.pack_length, self.model.config.hidden_size,
                         self.tokenizer.pad_token_id or 0, encoded.get("token_type_ids"))
            return Prepared(batch, batch.lengths)
        features = self.tokenizer(texts, pairs, padding=True, truncation="longest_first",
                                  max_length=self.max_tokens, return_tensors="pt")
        return Prepared(features, features["attention_mask"].sum(dim=1).tolist())

    def logits(self, prepared: Prepared) -> np.ndarray:
        """(inputs, labels) float32 logits."""
        import torch

        with torch.inference_mode(), self.precision.context():
            if self.packs_sequences:
                batch: PackedBatch = prepared.features.map_tensors(lambda t: t.to(self.device, non_blocking=True))
                first = first_token_states(self.encoder(batch), batch)
                logits = self.model.classifier(self.model.bert.pooler(first[:, None, :]))
            else:
                features = {k: v.to(self.device) for k, v in prepared.features.items()}
                logits = self.model(**features).logits
        return logits.float().cpu().numpy()
