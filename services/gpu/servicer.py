"""GpuService: accelerator readings and the memory reservation ledger."""

import asyncio
import time

from services.gpu.ledger import Ledger, Reservation
from services.gpu.metrics import GPU_METRICS
from services.gpu.readings import DeviceReading, Readings, open_readings
from services.gpu.settings import GpuSettings
from services.runtime.errors import InvalidInput, NotFound, Unavailable
from services.runtime.servicer import WorkerServicer
from torchgate import __version__
from torchgate.v1 import gpu_pb2, gpu_pb2_grpc


def allocated_mb(devices: list[DeviceReading]) -> dict[tuple[int, int], int]:
    """(device, pid) -> memory that process has allocated on that device, as NVML reports it."""
    return {(device.index, pid): used for device in devices for pid, used in device.processes}


class GpuServicer(WorkerServicer, gpu_pb2_grpc.GpuServiceServicer):
    SERVICE = gpu_pb2.DESCRIPTOR.services_by_name["GpuService"]

    def __init__(self, settings: GpuSettings, ledger: Ledger | None = None):
        self.settings = settings
        self.ledger = ledger or Ledger()
        self.readings: Readings | None = None

    def add_to_server(self, server) -> None:
        gpu_pb2_grpc.add_GpuServiceServicer_to_server(self, server)

    async def load(self) -> None:
        self.readings = await asyncio.to_thread(open_readings)
        GPU_METRICS.observe(self.readings, self.ledger)

    def _ready(self) -> Readings:
        if self.readings is None:
            raise Unavailable("the GPU readings are still initialising; retry shortly")
        return self.readings

    async def _devices(self) -> list[DeviceReading]:
        readings = self._ready()
        return await asyncio.to_thread(lambda: [readings.device(i) for i in range(readings.device_count())])

    def _message(self, reading: DeviceReading) -> gpu_pb2.Device:
        return gpu_pb2.Device(
            index=reading.index, name=reading.name, uuid=reading.uuid,
            memory_total_mb=reading.memory_total_mb, memory_free_mb=reading.memory_free_mb,
            memory_used_mb=reading.memory_used_mb, utilization_percent=reading.utilization_percent,
            temperature_c=reading.temperature_c, power_w=reading.power_w,
            processes=[gpu_pb2.GpuProcess(pid=pid, used_memory_mb=mb) for pid, mb in reading.processes],
            reserved_mb=self.ledger.reserved_mb(reading.index, allocated_mb([reading])),
        )

    async def GetStatus(self, request, context) -> gpu_pb2.GpuStatus:
        readings = self._ready()
        devices = await self._devices()
        return gpu_pb2.GpuStatus(
            cuda_available=bool(devices), driver_version=readings.driver_version,
            cuda_runtime_version=readings.cuda_runtime_version(), device_count=len(devices),
            devices=[self._message(d) for d in devices], source=readings.source,
        )

    async def ListDevices(self, request, context) -> gpu_pb2.ListDevicesResponse:
        return gpu_pb2.ListDevicesResponse(devices=[self._message(d) for d in await self._devices()])

    async def GetDevice(self, request: gpu_pb2.GetDeviceRequest, context) -> gpu_pb2.Device:
        readings = self._ready()
        count = readings.device_count()
        if request.index >= count:
            raise NotFound(f"no device {request.index}; this machine has {count} CUDA device(s)")
        return self._message(await asyncio.to_thread(readings.device, request.index))

    async def Reserve(self, request: gpu_pb2.ReserveRequest, context) -> gpu_pb2.Lease:
        if not request.service:
            raise InvalidInput("service is required: name who claims the memory")
        if request.memory_mb == 0:
            raise InvalidInput("memory_mb must be positive")
        devices = await self._devices()
        lease = self.ledger.reserve(
            request.service, request.memory_mb, self._ttl(request.ttl_s),
            {d.index: d.memory_free_mb for d in devices},
            request.device if request.HasField("device") else None,
            request.pid, allocated_mb(devices),
        )
        return self._lease(lease)

    async def Renew(self, request: gpu_pb2.RenewRequest, context) -> gpu_pb2.Lease:
        return self._lease(self.ledger.renew(request.lease_id, self._ttl(request.ttl_s)))

    def _ttl(self, requested_s: int) -> int:
        return min(requested_s or self.settings.lease_ttl_s, self.settings.max_lease_ttl_s)

    def _lease(self, lease: Reservation) -> gpu_pb2.Lease:
        return gpu_pb2.Lease(lease_id=lease.lease_id, device=lease.device, memory_mb=lease.memory_mb,
                             service=lease.service, pid=lease.pid,
                             expires_at_unix=time.time() + self.ledger.remaining_s(lease))

    async def Release(self, request: gpu_pb2.ReleaseRequest, context) -> gpu_pb2.ReleaseResponse:
        self.ledger.release(request.lease_id)
        return gpu_pb2.ReleaseResponse()

    async def Info(self, request, context) -> gpu_pb2.GpuInfo:
        return gpu_pb2.GpuInfo(source=self._ready().source, version=__version__,
                               default_lease_ttl_s=self.settings.lease_ttl_s,
                               active_leases=len(self.ledger.active()))


def build(settings: GpuSettings) -> GpuServicer:
    return GpuServicer(settings)
