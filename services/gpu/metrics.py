"""Prometheus gauges of the node's GPUs, read at scrape time (NVML calls are cheap; no polling thread)."""

from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from services.gpu.ledger import Ledger
from services.gpu.readings import UNKNOWN, Readings

MB = 1024 * 1024


class GpuCollector(Collector):
    """torchgate_gpu_* gauges per device; none before a servicer has opened its readings, or without GPUs."""

    def __init__(self):
        self.ledger = Ledger()
        self.readings: Readings | None = None

    def observe(self, readings: Readings, ledger: Ledger) -> None:
        self.readings, self.ledger = readings, ledger

    def collect(self):
        labels = ["device", "name"]
        families = {
            "total": GaugeMetricFamily("torchgate_gpu_memory_total_bytes", "Device memory", labels=labels),
            "used": GaugeMetricFamily("torchgate_gpu_memory_used_bytes", "Device memory in use", labels=labels),
            "reserved": GaugeMetricFamily("torchgate_gpu_memory_reserved_bytes",
                                          "Memory active leases still hold back", labels=labels),
            "utilization": GaugeMetricFamily("torchgate_gpu_utilization_ratio", "Busy fraction of the last sample",
                                             labels=labels),
        }
        readings = self.readings
        for index in range(readings.device_count() if readings else 0):
            device = readings.device(index)
            key = [str(device.index), device.name]
            families["total"].add_metric(key, device.memory_total_mb * MB)
            families["used"].add_metric(key, device.memory_used_mb * MB)
            allocated = {(device.index, pid): used for pid, used in device.processes}
            families["reserved"].add_metric(key, self.ledger.reserved_mb(device.index, allocated) * MB)
            if device.utilization_percent != UNKNOWN:
                families["utilization"].add_metric(key, device.utilization_percent / 100)
        yield from families.values()

    def describe(self):
        return []


# One per process, like every Prometheus metric; the serving GpuServicer points it at its readings and ledger.
GPU_METRICS = GpuCollector()
REGISTRY.register(GPU_METRICS)
