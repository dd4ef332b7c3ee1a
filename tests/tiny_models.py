"""Small real models built on the spot (random weights, the bundled MiniLM's tokenizer): nothing downloaded."""

from pathlib import Path

MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def build_tiny_embedder(directory: Path, dimension: int = 32, seed: int = 0) -> Path:
    """A sentence-transformers model directory: a random 2-layer BERT of `dimension`, mean pooling."""
    import torch
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel, BertTokenizerFast

    from services.runtime.models import resolve_model

    tokenizer = BertTokenizerFast.from_pretrained(str(resolve_model(MINILM)))
    bert_dir = directory / "bert"
    tokenizer.save_pretrained(bert_dir)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=dimension, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=2 * dimension, max_position_embeddings=128)
    BertModel(config).save_pretrained(bert_dir)
    transformer = models.Transformer(str(bert_dir), max_seq_length=128)
    model = SentenceTransformer(modules=[transformer, models.Pooling(dimension, pooling_mode="mean")], device="cpu")
    target = directory / "tiny-embedder"
    model.save(str(target))
    return target


def save_sequence_classifier(tiny_bert: tuple, directory: Path, labels: list[str], seed: int) -> Path:
    """A random BertForSequenceClassification with `labels` (id2label and label2id), saved with the tokenizer of
    `tiny_bert` (the integration suite's (tokenizer directory, BertConfig) fixture)."""
    import torch
    from transformers import BertForSequenceClassification

    source, config = tiny_bert
    config.num_labels = len(labels)
    config.id2label = dict(enumerate(labels))
    config.label2id = {label: i for i, label in enumerate(labels)}
    torch.manual_seed(seed)
    BertForSequenceClassification(config).save_pretrained(directory)
    for file in source.iterdir():
        (directory / file.name).write_bytes(file.read_bytes())
    return directory
