"""`python -m services.gpu`: the GPU management worker."""

from services.gpu.servicer import build
from services.gpu.settings import GpuSettings
from services.runtime.worker import run_worker

run_worker(build, GpuSettings)
