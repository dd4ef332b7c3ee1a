"""Real workers in-process on ephemeral loopback ports, with real small models."""

import os
import shutil
import sys
from pathlib import Path

import grpc
import pytest

from services.embedding.servicer import build as build_embedding
from services.embedding.settings import EmbeddingSettings
from services.runtime.worker import Worker

os.environ.setdefault("HF_HUB_OFFLINE", "1")


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
    worker = Worker(build_embedding(settings), settings)
    await worker.start()
    await worker.wait_serving()
    yield worker
    await worker.stop(0)


@pytest.fixture
async def embedding_channel(embedding_worker):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{embedding_worker.port}") as channel:
        yield channel
