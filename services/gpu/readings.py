"""Reading the accelerators: NVML (nvidia-ml-py) when it works, else torch.cuda, else none."""

import logging
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

UNKNOWN = -1.0
MB = 1024 * 1024


@dataclass
class DeviceReading:
    index: int
    name: str
    uuid: str
    memory_total_mb: int
    memory_free_mb: int
    memory_used_mb: int
    utilization_percent: float = UNKNOWN
    temperature_c: float = UNKNOWN
    power_w: float = UNKNOWN
    processes: list[tuple[int, int]] = field(default_factory=list)


class Readings:
    """No accelerator: the honest answer on a CPU machine."""

    source = "none"
    driver_version = ""

    def device_count(self) -> int:
        return 0

    def device(self, index: int) -> DeviceReading:
        raise IndexError(index)

    def cuda_runtime_version(self) -> str:
        try:
            import torch
        except ImportError:
            return ""
        return torch.version.cuda or ""


class NvmlReadings(Readings):
    source = "nvml"

    def __init__(self):
        import pynvml

        self.nvml = pynvml
        pynvml.nvmlInit()
        self.driver_version = _text(pynvml.nvmlSystemGetDriverVersion())

    def device_count(self) -> int:
        return self.nvml.nvmlDeviceGetCount()

    def device(self, index: int) -> DeviceReading:
        nvml = self.nvml
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        memory = nvml.nvmlDeviceGetMemoryInfo(handle)
        return DeviceReading(
            index=index,
            name=_text(nvml.nvmlDeviceGetName(handle)),
            uuid=_text(nvml.nvmlDeviceGetUUID(handle)),
            memory_total_mb=memory.total // MB,
            memory_free_mb=memory.free // MB,
            memory_used_mb=memory.used // MB,
            utilization_percent=_optional(lambda: nvml.nvmlDeviceGetUtilizationRates(handle).gpu),
            temperature_c=_optional(lambda: nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)),
            power_w=_optional(lambda: nvml.nvmlDeviceGetPowerUsage(handle) / 1000),
            processes=[(p.pid, (p.usedGpuMemory or 0) // MB)
                       for p in _optional(lambda: nvml.nvmlDeviceGetComputeRunningProcesses(handle), [])],
        )


class TorchReadings(Readings):
    source = "torch"

    def __init__(self):
        import torch

        self.cuda = torch.cuda

    def device_count(self) -> int:
        return self.cuda.device_count()

    def device(self, index: int) -> DeviceReading:
        properties = self.cuda.get_device_properties(index)
        free, total = self.cuda.mem_get_info(index)
        return DeviceReading(index=index, name=properties.name, uuid=str(getattr(properties, "uuid", "")),
                             memory_total_mb=total // MB, memory_free_mb=free // MB,
                             memory_used_mb=(total - free) // MB)


def open_readings() -> Readings:
    """The best source this machine offers."""
    try:
        readings = NvmlReadings()
        if readings.device_count() > 0:
            return readings
    except Exception as error:  # NVML raises its own error types, or the library is absent
        log.info("NVML unavailable: %s", error)
    try:
        readings = TorchReadings()
        if readings.device_count() > 0:
            return readings
    except Exception as error:
        log.info("torch.cuda unavailable: %s", error)
    return Readings()


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _optional(read, default=UNKNOWN):
    try:
        return read()
    except Exception:
        return default
