"""`python -m services.reranking`: the reranking worker."""

from services.reranking.servicer import build
from services.reranking.settings import RerankingSettings
from services.runtime.worker import run_worker

run_worker(build, RerankingSettings)
