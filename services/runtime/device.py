"""Device and dtype selection, and the fail-fast GPU policy every worker follows. Imports torch lazily."""

import logging
import os

log = logging.getLogger(__name__)

_DTYPES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16",
           "bfloat16": "bfloat16", "bf16": "bfloat16"}


class DeviceError(Exception):
    """The configured device or dtype cannot be used on this machine."""


def cuda_device_count() -> int:
    """CUDA devices torch can use (0 without a driver or a CUDA build)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def require_gpu_or_exit(require_gpu: bool) -> None:
    """With TORCHGATE_REQUIRE_GPU=1 and no usable CUDA device, exit non-zero with one clear line."""
    if require_gpu and cuda_device_count() == 0:
        raise SystemExit("torchgate: TORCHGATE_REQUIRE_GPU=1 but no CUDA device is usable on this machine")


def select_device(requested: str) -> str:
    """`auto` picks cuda when usable, else cpu; an explicit cuda device must exist."""
    requested = requested.strip().lower()
    if requested == "auto":
        return "cuda" if cuda_device_count() > 0 else "cpu"
    if requested == "cpu":
        return "cpu"
    if requested.startswith("cuda"):
        index = int(requested.partition(":")[2] or 0)
        if index >= cuda_device_count():
            raise DeviceError(f"device {requested!r} is not usable: {cuda_device_count()} CUDA devices are present")
        return requested
    raise DeviceError(f"unknown device {requested!r}: use auto, cpu, cuda or cuda:N")


def select_dtype(device: str, requested: str):
    """fp16 on CUDA and fp32 on CPU for `auto`; CPU half precision is refused (slow and lossy there)."""
    import torch

    requested = requested.strip().lower()
    if requested == "auto":
        return torch.float16 if device.startswith("cuda") else torch.float32
    if requested not in _DTYPES:
        raise DeviceError(f"unknown dtype {requested!r}: use auto, float32, float16 or bfloat16")
    dtype = getattr(torch, _DTYPES[requested])
    if device == "cpu" and dtype is torch.float16:
        raise DeviceError("float16 is not supported on CPU: use float32 or bfloat16")
    return dtype


def place(requested_device: str, requested_dtype: str, cpu_threads: int = 0):
    """Device and dtype for a model about to load; sizes torch's CPU thread pool when on CPU."""
    device = select_device(requested_device)
    dtype = select_dtype(device, requested_dtype)
    if device == "cpu":
        configure_cpu_threads(cpu_threads)
    return device, dtype


def configure_cpu_threads(threads: int = 0) -> int:
    """Size torch's intra-op pool: `threads`, or every core this process may run on when 0."""
    import torch

    threads = threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    return threads
