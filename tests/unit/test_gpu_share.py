"""A model worker's GPU share against a real GPU worker (gRPC, ledger) whose NVML readings are faked."""

import asyncio
import os

import pytest

from services.gpu.servicer import GpuServicer
from services.gpu.settings import GpuSettings
from services.runtime.device import DeviceError
from services.runtime.gpu_share import GpuShare, share_mb
from tests.fakes import OneGpu
from tests.workers import started

MB = 1024 * 1024


@pytest.fixture
async def gpu_worker():
    settings = GpuSettings(port=0, metrics_port=0, lease_ttl_s=2, max_lease_ttl_s=2, grace_period_s=0)
    servicer = GpuServicer(settings)
    worker = await started(servicer)
    servicer.readings = OneGpu()
    yield servicer, f"127.0.0.1:{worker.port}"
    await worker.stop(0)


def test_the_share_is_the_configured_one_or_the_measured_one_with_headroom():
    assert share_mb(1000 * MB, configured_mb=3000) == 3000
    assert share_mb(1000 * MB) == 1536, "1000 MB x 1.5, rounded up to 64 MB"
    assert share_mb(0) == 64


async def test_a_share_is_reserved_for_this_process_renewed_while_held_and_released(gpu_worker):
    servicer, address = gpu_worker
    share = GpuShare(address, "torchgate-embedding")
    lease = await share.reserve(2000, device=0)
    assert (lease.memory_mb, lease.device, lease.pid, lease.service) == (2000, 0, os.getpid(), "torchgate-embedding")
    await asyncio.sleep(3)  # past the 2 s lifetime: only renewals keep it
    assert [held.lease_id for held in servicer.ledger.active()] == [lease.lease_id]
    await share.release()
    assert servicer.ledger.active() == []


async def test_a_share_that_does_not_fit_is_refused_with_the_reason(gpu_worker):
    _, address = gpu_worker
    holder = GpuShare(address, "torchgate-reranking")
    await holder.reserve(4000, device=0)
    try:
        with pytest.raises(DeviceError, match="cannot reserve 2000 MB on cuda:0.*1000 MB unreserved"):
            await GpuShare(address, "torchgate-embedding").reserve(2000, device=0)
    finally:
        await holder.release()


async def test_a_lapsed_lease_is_claimed_anew(gpu_worker):
    servicer, address = gpu_worker
    share = GpuShare(address, "torchgate-embedding")
    lease = await share.reserve(500, device=0)
    servicer.ledger.release(lease.lease_id)  # as after a GPU worker restart
    await asyncio.sleep(1.5)
    assert [held.memory_mb for held in servicer.ledger.active()] == [500]
    assert share.lease.lease_id != lease.lease_id
    await share.release()
