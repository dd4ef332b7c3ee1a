import pytest

from services.gpu.ledger import Ledger
from services.runtime.errors import NotFound, Overloaded


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


def test_unknown_devices_and_machines_without_devices():
    ledger = Ledger(Clock())
    with pytest.raises(NotFound, match="no device 2"):
        ledger.reserve("a", 1, 60, {0: 100}, device=2)
    with pytest.raises(Overloaded, match="no CUDA device"):
        ledger.reserve("a", 1, 60, {})
