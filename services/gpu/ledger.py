"""In-memory ledger of GPU memory reservations, with expiry on a monotonic clock."""

import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from services.runtime.errors import NotFound, Overloaded


@dataclass
class Reservation:
    lease_id: str
    service: str
    device: int
    memory_mb: int
    expires_at: float  # on the ledger's monotonic clock
    pid: int = 0  # the process that allocates the memory, when the holder named it

    def outstanding_mb(self, allocated_mb: Mapping[tuple[int, int], int]) -> int:
        """What the lease still holds back: its size less what its process already allocated on the device.

        The device's free memory already lacks what the holder allocated; counting the whole lease as well
        would count that memory twice.
        """
        if not self.pid:
            return self.memory_mb
        return max(0, self.memory_mb - allocated_mb.get((self.device, self.pid), 0))


class Ledger:
    """Grants a reservation when the device's free memory minus what active leases still hold back covers it.

    `allocated_mb` arguments map (device, pid) to the memory that process has allocated on that device now.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._leases: dict[str, Reservation] = {}

    def active(self) -> list[Reservation]:
        now = self.clock()
        for lease_id in [lease_id for lease_id, lease in self._leases.items() if lease.expires_at <= now]:
            del self._leases[lease_id]
        return list(self._leases.values())

    def reserved_mb(self, device: int, allocated_mb: Mapping[tuple[int, int], int] | None = None) -> int:
        allocated_mb = allocated_mb or {}
        return sum(lease.outstanding_mb(allocated_mb) for lease in self.active() if lease.device == device)

    def reserve(self, service: str, memory_mb: int, ttl_s: float, free_mb: dict[int, int],
                device: int | None = None, pid: int = 0,
                allocated_mb: Mapping[tuple[int, int], int] | None = None) -> Reservation:
        """`free_mb` maps each device index to its free memory now."""
        if not free_mb:
            raise Overloaded("no CUDA device on this machine to reserve memory on")
        if device is not None and device not in free_mb:
            raise NotFound(f"no device {device}; this machine has devices {sorted(free_mb)}")
        available = {index: free - self.reserved_mb(index, allocated_mb) for index, free in free_mb.items()}
        chosen = device if device is not None else max(available, key=available.get)
        if available[chosen] < memory_mb:
            raise Overloaded(f"device {chosen} has {max(available[chosen], 0)} MB unreserved; {memory_mb} MB asked")
        lease = Reservation(uuid.uuid4().hex, service, chosen, memory_mb, self.clock() + ttl_s, pid)
        self._leases[lease.lease_id] = lease
        return lease

    def remaining_s(self, lease: Reservation) -> float:
        return max(0.0, lease.expires_at - self.clock())

    def renew(self, lease_id: str, ttl_s: float) -> Reservation:
        """Extend an active lease to `ttl_s` from now."""
        self.active()
        lease = self._leases.get(lease_id)
        if lease is None:
            raise NotFound(f"no active lease {lease_id!r} (released already, or expired): reserve again")
        lease.expires_at = self.clock() + ttl_s
        return lease

    def release(self, lease_id: str) -> None:
        self.active()
        if self._leases.pop(lease_id, None) is None:
            raise NotFound(f"no active lease {lease_id!r} (released already, or expired)")
