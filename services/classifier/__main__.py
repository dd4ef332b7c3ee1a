"""`python -m services.classifier`: the intent classifier worker."""

from services.classifier.servicer import build
from services.classifier.settings import ClassifierSettings
from services.runtime.worker import run_worker

run_worker(build, ClassifierSettings)
