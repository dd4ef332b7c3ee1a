"""A model worker's share of its CUDA device, reserved in the GPU worker's ledger and held while it serves.

Several models can share one GPU without one starving the others: each worker reserves what it needs once its
model is loaded and warmed up, and a worker whose share does not fit in what the device has left unreserved
does not start. Sizing, unless GPU_MEMORY_MB names the share: what torch's caching allocator holds after
loading and warm-up (`torch.cuda.memory_reserved`) times SHARE_HEADROOM, for batches larger than the warm-up's,
rounded up to 64 MB. The lease names this process's pid, so the memory it already allocated is not counted
twice, and it is renewed at half its lifetime; it lapses on its own if the process dies.
"""

import asyncio
import contextlib
import logging
import math
import os
import time

import grpc

from services.runtime.device import DeviceError
from torchgate.v1 import gpu_pb2, gpu_pb2_grpc

log = logging.getLogger(__name__)

SHARE_HEADROOM = 1.5
MB = 1024 * 1024
ROUND_MB = 64
RESERVE_TIMEOUT_S = 10.0
RENEW_RETRY_S = 5.0


def share_mb(allocator_reserved_bytes: int, configured_mb: int = 0) -> int:
    """The memory to reserve: the configured share, else the measured one with headroom."""
    if configured_mb:
        return configured_mb
    return max(ROUND_MB, math.ceil(allocator_reserved_bytes * SHARE_HEADROOM / MB / ROUND_MB) * ROUND_MB)


class GpuShare:
    """One lease on one device: reserve, keep renewing, release."""

    def __init__(self, address: str, service: str):
        self.service = service
        self._channel = grpc.aio.insecure_channel(address)
        self._stub = gpu_pb2_grpc.GpuServiceStub(self._channel)
        self.lease: gpu_pb2.Lease | None = None
        self._request: gpu_pb2.ReserveRequest | None = None
        self._renewing: asyncio.Task | None = None
        self._ttl_s = 0.0

    async def reserve(self, memory_mb: int, device: int) -> gpu_pb2.Lease:
        """Reserve `memory_mb` on `device`; DeviceError saying why when the GPU worker refuses or is away."""
        self._request = gpu_pb2.ReserveRequest(service=self.service, memory_mb=memory_mb, device=device,
                                               pid=os.getpid())
        try:
            self.lease = await self._stub.Reserve(self._request, timeout=RESERVE_TIMEOUT_S)
        except grpc.aio.AioRpcError as error:
            await self._channel.close()
            raise DeviceError(f"cannot reserve {memory_mb} MB on cuda:{device} from the GPU worker: "
                              f"{error.details() or error.code().name}") from None
        self._ttl_s = max(1.0, self.lease.expires_at_unix - time.time())
        self._renewing = asyncio.create_task(self._renew())
        log.info("reserved a share of the GPU", extra={"lease": self.lease.lease_id, "memory_mb": memory_mb,
                                                       "device": device, "ttl_s": round(self._ttl_s)})
        return self.lease

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(self._ttl_s / 2)
            try:
                self.lease = await self._stub.Renew(gpu_pb2.RenewRequest(lease_id=self.lease.lease_id),
                                                    timeout=RESERVE_TIMEOUT_S)
            except grpc.aio.AioRpcError as error:
                if error.code() == grpc.StatusCode.NOT_FOUND:  # it lapsed (GPU worker restarted): claim it anew
                    with contextlib.suppress(grpc.aio.AioRpcError):
                        self.lease = await self._stub.Reserve(self._request, timeout=RESERVE_TIMEOUT_S)
                        continue
                log.warning("could not renew the GPU lease (%s); retrying", error.details() or error.code().name)
                await asyncio.sleep(RENEW_RETRY_S)

    async def release(self) -> None:
        if self._renewing:
            self._renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewing
        if self.lease is not None:
            with contextlib.suppress(grpc.aio.AioRpcError):
                await self._stub.Release(gpu_pb2.ReleaseRequest(lease_id=self.lease.lease_id),
                                         timeout=RESERVE_TIMEOUT_S)
            self.lease = None
        await self._channel.close()
