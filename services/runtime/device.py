"""Device and dtype selection, and the fail-fast GPU policy every worker follows. Imports torch lazily."""

import logging
import math
import os
from pathlib import Path

from services.runtime.precision import NATIVE_BF16_FLAGS, Precision, cpu_bf16_flags

log = logging.getLogger(__name__)

_DTYPES = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16",
           "bfloat16": "bfloat16", "bf16": "bfloat16"}


class DeviceError(Exception):
    """The configured device or dtype cannot be used on this machine."""


def cuda_device_count() -> int:
    """CUDA devices torch can use (0 without a driver or a CUDA build)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def cuda_memory_held(device: str) -> int:
    """Bytes torch's caching allocator holds on a CUDA device now."""
    import torch

    return torch.cuda.memory_reserved(torch.device(device))


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


def select_precision(device: str, requested: str, bf16_flags: list[str] | None = None) -> Precision:
    """`auto`: fp16 on CUDA; on CPU, bf16 autocast where the CPU has native bf16 (a candidate the adapter's
    start-up self-check confirms), else fp32. An explicit dtype wins; CPU fp16 is refused (slow and lossy)."""
    import torch

    requested = requested.strip().lower()
    if requested == "auto":
        if device.startswith("cuda"):
            return Precision(torch.float16, reason="auto: float16 on CUDA")
        flags = cpu_bf16_flags() if bf16_flags is None else bf16_flags
        if flags:
            return Precision(torch.float32, torch.bfloat16, f"auto: the CPU has native bf16 ({', '.join(flags)})")
        return Precision(torch.float32, reason=f"auto: float32, the CPU has no native bf16 "
                                               f"({' or '.join(NATIVE_BF16_FLAGS)})")
    if requested not in _DTYPES:
        raise DeviceError(f"unknown dtype {requested!r}: use auto, float32, float16 or bfloat16")
    dtype = getattr(torch, _DTYPES[requested])
    if device == "cpu" and dtype is torch.float16:
        raise DeviceError("float16 is not supported on CPU: use float32 or bfloat16")
    return Precision(dtype, reason=f"configured {_DTYPES[requested]}")


def available_cores(cpu_max: Path = Path("/sys/fs/cgroup/cpu.max")) -> int:
    """Cores this process may use: its CPU affinity (cpusets), or fewer under a cgroup v2 CPU quota (a
    Kubernetes CPU limit), since threads beyond the quota only take turns."""
    cores = len(os.sched_getaffinity(0))
    try:
        quota, period = cpu_max.read_text().split()[:2]
    except (OSError, ValueError):
        return cores
    if quota == "max":
        return cores
    return max(1, min(cores, math.ceil(int(quota) / int(period))))


def limit_blas_threads() -> None:
    """One thread for numpy's BLAS in a worker process. Heads and scores run small numpy matrix products on
    the device threads, and OpenBLAS's idle threads spin on every core between them: that took 0.6 of a
    core from the model in the classifier (README, design notes)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")


def device_streams(device: str, requested: int = 0, cores: int | None = None) -> int:
    """How many batches run at once, each on its own device thread: `requested`, or for 0 (auto) two on a
    CPU with two or more cores and one on CUDA.

    Two single-threaded streams beat one stream on both cores when serving (README, design notes): one
    batch computes while the other's callers are answered and the next batch gathers, and no intra-op
    barrier stalls a whole batch when the event loops take a core for a moment. CUDA runs one stream until
    overlapping two is measured on a GPU.
    """
    if requested:
        return requested
    if device.startswith("cuda"):
        return 1
    return 2 if (cores or available_cores()) >= 2 else 1


def threads_per_stream(streams: int, cpu_threads: int = 0, cores: int | None = None) -> int:
    """Torch intra-op threads of each stream on CPU: `cpu_threads`, or the cores divided among the streams."""
    return cpu_threads or max(1, (cores or available_cores()) // streams)


def stream_layout(device: str, requested_streams: int = 0, cpu_threads: int = 0) -> tuple[int, int]:
    """Device streams, and torch intra-op threads per stream (0 on CUDA, where torch keeps no CPU pool)."""
    cores = available_cores()
    streams = device_streams(device, requested_streams, cores)
    return streams, 0 if device.startswith("cuda") else threads_per_stream(streams, cpu_threads, cores)


def place(requested_device: str, requested_dtype: str, cpu_threads: int = 0,
          requested_streams: int = 0) -> tuple[str, Precision]:
    """Device and precision for a model about to load; on CPU sizes torch's intra-op pool for each stream."""
    device = select_device(requested_device)
    precision = select_precision(device, requested_dtype)
    if device == "cpu":
        import torch

        torch.set_num_threads(stream_layout(device, requested_streams, cpu_threads)[1])
    return device, precision
