import time

import pytest

from services.gpu.ledger import Ledger
from services.gpu.metrics import GPU_METRICS
from services.gpu.servicer import GpuServicer
from services.gpu.settings import GpuSettings
from services.runtime.errors import NotFound, Overloaded
from tests.fakes import OneGpu
from torchgate.v1 import gpu_pb2


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_grants_until_free_memory_minus_leases_runs_short_then_refuses():
    ledger = Ledger(Clock())
    first = ledger.reserve("embedding", 6000, 60, {0: 10000})
    assert (first.device, first.memory_mb, first.service) == (0, 6000, "embedding")
    with pytest.raises(Overloaded, match="device 0 has 4000 MB unreserved; 5000 MB asked"):
        ledger.reserve("reranking", 5000, 60, {0: 10000})
    assert ledger.reserve("reranking", 4000, 60, {0: 10000}).device == 0


def test_without_a_device_index_the_least_reserved_device_is_chosen():
    ledger = Ledger(Clock())
    ledger.reserve("a", 3000, 60, {0: 8000, 1: 8000}, device=0)
    assert ledger.reserve("b", 1000, 60, {0: 8000, 1: 8000}).device == 1


def test_release_frees_the_memory_and_a_second_release_is_not_found():
    ledger = Ledger(Clock())
    lease = ledger.reserve("a", 8000, 60, {0: 8000})
    ledger.release(lease.lease_id)
    assert ledger.reserved_mb(0) == 0
    with pytest.raises(NotFound):
        ledger.release(lease.lease_id)


def test_leases_expire():
    clock = Clock()
    ledger = Ledger(clock)
    ledger.reserve("a", 8000, 30, {0: 8000})
    clock.now += 31
    assert ledger.reserved_mb(0) == 0
    assert ledger.reserve("b", 8000, 30, {0: 8000}).memory_mb == 8000


def test_renewing_extends_an_active_lease_and_a_lapsed_one_is_not_found():
    clock = Clock()
    ledger = Ledger(clock)
    lease = ledger.reserve("a", 8000, 30, {0: 8000})
    clock.now += 20
    ledger.renew(lease.lease_id, 30)
    clock.now += 20
    assert ledger.reserved_mb(0) == 8000
    clock.now += 11
    with pytest.raises(NotFound, match="reserve again"):
        ledger.renew(lease.lease_id, 30)


def test_unknown_devices_and_machines_without_devices():
    ledger = Ledger(Clock())
    with pytest.raises(NotFound, match="no device 2"):
        ledger.reserve("a", 1, 60, {0: 100}, device=2)
    with pytest.raises(Overloaded, match="no CUDA device"):
        ledger.reserve("a", 1, 60, {})


def test_memory_a_holder_already_allocated_is_not_counted_twice():
    ledger = Ledger(Clock())
    ledger.reserve("embedding", 6000, 60, {0: 10000}, pid=4242)
    # The holder allocated 5000 MB of its lease: NVML's free memory fell to 5000, the lease holds back 1000.
    allocated = {(0, 4242): 5000}
    assert ledger.reserved_mb(0, allocated) == 1000
    assert ledger.reserve("reranking", 4000, 60, {0: 5000}, allocated_mb=allocated).memory_mb == 4000
    with pytest.raises(Overloaded, match="device 0 has 0 MB unreserved"):
        ledger.reserve("classifier", 1, 60, {0: 5000}, allocated_mb=allocated)


def test_a_holder_that_allocated_more_than_its_lease_holds_nothing_back_and_anonymous_leases_hold_all():
    ledger = Ledger(Clock())
    ledger.reserve("a", 1000, 60, {0: 10000}, pid=7)
    ledger.reserve("b", 2000, 60, {0: 10000})
    assert ledger.reserved_mb(0, {(0, 7): 3000, (0, 8): 500}) == 2000
    assert ledger.reserved_mb(0, {(1, 7): 3000}) == 3000, "what pid 7 allocated on another device does not count"


def test_expiry_follows_the_monotonic_clock_not_the_wall_clock(monkeypatch):
    ledger = Ledger()
    ledger.reserve("a", 1000, 30, {0: 1000})
    monkeypatch.setattr(time, "time", lambda: 4_000_000_000.0)
    assert ledger.reserved_mb(0) == 1000, "a wall-clock jump must not end a lease"


@pytest.fixture
def servicer():
    servicer = GpuServicer(GpuSettings(lease_ttl_s=300, max_lease_ttl_s=600))
    servicer.readings = OneGpu()
    return servicer


@pytest.mark.parametrize(("ttl_s", "lifetime_s"), [(10_000_000, 600), (0, 300), (30, 30)])
async def test_lease_ttls_default_and_are_capped(servicer, ttl_s, lifetime_s):
    lease = await servicer.Reserve(gpu_pb2.ReserveRequest(service="e", memory_mb=1, ttl_s=ttl_s), None)
    assert lifetime_s - 5 < lease.expires_at_unix - time.time() <= lifetime_s


async def test_the_servicer_counts_what_the_named_holder_allocated_once(servicer):
    lease = await servicer.Reserve(gpu_pb2.ReserveRequest(service="embedding", memory_mb=4000, pid=4242), None)
    assert lease.pid == 4242
    device = (await servicer.ListDevices(gpu_pb2.ListDevicesRequest(), None)).devices[0]
    assert device.reserved_mb == 1000, "4000 MB leased, 3000 MB of it already allocated by pid 4242"
    assert (await servicer.Reserve(gpu_pb2.ReserveRequest(service="reranking", memory_mb=4000), None)).memory_mb
    with pytest.raises(Overloaded):
        await servicer.Reserve(gpu_pb2.ReserveRequest(service="classifier", memory_mb=1), None)


async def test_gpu_gauges_report_each_device_with_what_leases_hold_back(servicer):
    await servicer.Reserve(gpu_pb2.ReserveRequest(service="embedding", memory_mb=4000, pid=4242), None)
    GPU_METRICS.observe(servicer.readings, servicer.ledger)
    samples = {family.name: {tuple(s.labels.values()): s.value for s in family.samples}
               for family in GPU_METRICS.collect()}
    mb = 1024 * 1024
    assert samples["torchgate_gpu_memory_total_bytes"] == {("0", "test"): 8000 * mb}
    assert samples["torchgate_gpu_memory_used_bytes"] == {("0", "test"): 3000 * mb}
    assert samples["torchgate_gpu_memory_reserved_bytes"] == {("0", "test"): 1000 * mb}
    assert samples["torchgate_gpu_utilization_ratio"] == {}, "unknown utilization is left out, not reported as 0"
