"""Real workers in-process on ephemeral loopback ports, with real small models."""

import os
import shutil
import sys
from pathlib import Path

import pytest

from services.embedding.servicer import build as build_embedding
from services.embedding.settings import EmbeddingSettings
from tests.network import worker_channel
from tests.workers import started

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# CPU fp32 expectations (device, dtype, 1e-5 tolerances) must hold on a GPU machine and on a CPU with native
# bf16 too; tests/gpu covers CUDA and test_precision.py the bf16 that dtype=auto picks.
for _worker in ("EMBEDDING", "RERANKING", "CLASSIFIER"):
    os.environ.setdefault(f"TORCHGATE_{_worker}_DEVICE", "cpu")
    os.environ.setdefault(f"TORCHGATE_{_worker}_DTYPE", "float32")


def grpcurl() -> str:
    """The grpcurl binary the dev dependencies install next to this interpreter."""
    found = shutil.which("grpcurl", path=str(Path(sys.executable).parent)) or shutil.which("grpcurl")
    if not found:
        pytest.fail("grpcurl is missing: run `make install`")
    return found


@pytest.fixture(scope="session")
def minilm():
    """sentence-transformers' own model, loaded in-process, as the reference."""
    from sentence_transformers import SentenceTransformer

    from services.runtime.models import resolve_model

    return SentenceTransformer(str(resolve_model("sentence-transformers/all-MiniLM-L6-v2")), device="cpu")


@pytest.fixture(scope="session")
async def embedding_worker():
    settings = EmbeddingSettings(port=0, metrics_port=0, max_items_per_request=64, grace_period_s=2)
    worker = await started(build_embedding(settings))
    yield worker
    await worker.stop(0)


@pytest.fixture
async def embedding_channel(embedding_worker):
    async with worker_channel(embedding_worker.port) as channel:
        yield channel


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory):
    """A tokenizer (the bundled MiniLM's vocabulary) and a small random BERT config, saved together."""
    from transformers import BertConfig, BertTokenizerFast

    from services.runtime.models import resolve_model

    directory = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = BertTokenizerFast.from_pretrained(str(resolve_model("sentence-transformers/all-MiniLM-L6-v2")))
    tokenizer.save_pretrained(directory)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    return directory, config


@pytest.fixture(scope="session")
def tiny_cross_encoder(tiny_bert_dir, tmp_path_factory):
    """A real (random, tiny) 1-label BertForSequenceClassification checkpoint on disk."""
    import torch
    from transformers import BertForSequenceClassification

    source, config = tiny_bert_dir
    directory = tmp_path_factory.mktemp("tiny-cross-encoder")
    torch.manual_seed(0)
    config.num_labels = 1
    BertForSequenceClassification(config).save_pretrained(directory)
    for file in source.iterdir():
        (directory / file.name).write_bytes(file.read_bytes())
    return directory
