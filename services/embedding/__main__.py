"""`python -m services.embedding`: the embedding worker."""

from services.embedding.servicer import build
from services.embedding.settings import EmbeddingSettings
from services.runtime.worker import run_worker

run_worker(build, EmbeddingSettings)
