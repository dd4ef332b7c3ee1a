import os
import subprocess
import sys

import grpc
import pytest

from services.gpu.servicer import build
from services.gpu.settings import GpuSettings
from tests.conftest import cpu_machine_only
from tests.network import worker_channel
from tests.workers import serving
from torchgate.v1 import gpu_pb2, gpu_pb2_grpc

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(torch.cuda.is_available(),
                                reason="checks the CPU-only answers; tests/gpu covers CUDA machines")


@pytest.fixture(scope="module")
async def gpu_stub():
    settings = GpuSettings(port=0, metrics_port=0)
    async with serving(build(settings)) as worker, worker_channel(worker.port) as channel:
        yield gpu_pb2_grpc.GpuServiceStub(channel)


@cpu_machine_only
async def test_a_cpu_machine_reports_no_cuda_and_no_devices(gpu_stub):
    status = await gpu_stub.GetStatus(gpu_pb2.GetStatusRequest())
    assert (status.cuda_available, status.device_count, status.source) == (False, 0, "none")
    assert list(status.devices) == [] and list((await gpu_stub.ListDevices(gpu_pb2.ListDevicesRequest())).devices) == []


@cpu_machine_only
@pytest.mark.parametrize(
    ("call", "code", "message"),
    [
        ("GetDevice", grpc.StatusCode.NOT_FOUND, "no device 0; this machine has 0 CUDA device(s)"),
        ("Reserve", grpc.StatusCode.RESOURCE_EXHAUSTED, "no CUDA device"),
        ("Release", grpc.StatusCode.NOT_FOUND, "no active lease"),
        ("ReserveNoService", grpc.StatusCode.INVALID_ARGUMENT, "service is required"),
    ],
)
async def test_errors_have_precise_codes(gpu_stub, call, code, message):
    requests = {
        "GetDevice": lambda: gpu_stub.GetDevice(gpu_pb2.GetDeviceRequest(index=0)),
        "Reserve": lambda: gpu_stub.Reserve(gpu_pb2.ReserveRequest(service="embedding", memory_mb=100)),
        "Release": lambda: gpu_stub.Release(gpu_pb2.ReleaseRequest(lease_id="nope")),
        "ReserveNoService": lambda: gpu_stub.Reserve(gpu_pb2.ReserveRequest(memory_mb=100)),
    }
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await requests[call]()
    assert error.value.code() == code and message in error.value.details()


@pytest.mark.parametrize("worker", ["services.gpu", "services.embedding"])
def test_require_gpu_makes_any_worker_exit_non_zero_with_one_clear_line(worker):
    env = {**os.environ, "TORCHGATE_REQUIRE_GPU": "1", "TORCHGATE_GPU_PORT": "0", "TORCHGATE_EMBEDDING_PORT": "0",
           "TORCHGATE_GPU_METRICS_PORT": "0", "TORCHGATE_EMBEDDING_METRICS_PORT": "0"}
    result = subprocess.run([sys.executable, "-m", worker], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == (
        "torchgate: TORCHGATE_REQUIRE_GPU=1 but no CUDA device is usable on this machine")

