import pytest

from services.gpu.servicer import GpuServicer
from services.gpu.settings import GpuSettings
from tests.conftest import cpu_machine_only
from tests.unit.gateway.conftest import gateway_client, serving, unused_address


@pytest.fixture
async def gpu_worker():
    async with serving(GpuServicer(GpuSettings(port=0, metrics_port=0))) as worker:
        yield worker


@cpu_machine_only
async def test_gpu_routes_answer_on_a_cpu_machine_and_unknown_devices_are_404(gpu_worker):
    async with gateway_client(unused_address(), gpu=f"127.0.0.1:{gpu_worker.port}") as client:
        status = await client.get("/v1/gpu/status")
        devices = await client.get("/v1/gpu/devices")
        unknown = await client.get("/v1/gpu/devices/7")
        negative = await client.get("/v1/gpu/devices/-1")
    assert status.status_code == 200
    assert status.json() | {"cuda_runtime_version": ""} == {
        "cuda_available": False, "driver_version": "", "cuda_runtime_version": "", "device_count": 0,
        "devices": [], "source": "none"}
    assert devices.json() == {"devices": []}
    assert unknown.status_code == 404 and "no device 7" in unknown.json()["error"]["message"]
    assert negative.status_code == 422
