"""Run on a machine with CUDA (the lent GPU machine): real device names, memory figures and fp16 embeddings."""

import numpy as np
import pytest

from tests.network import worker_channel

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


async def test_the_gpu_worker_reads_real_devices_and_grants_leases():
    from services.gpu.servicer import build
    from services.gpu.settings import GpuSettings
    from services.runtime.worker import Worker
    from torchgate.v1 import gpu_pb2, gpu_pb2_grpc

    settings = GpuSettings(port=0, metrics_port=0)
    worker = Worker(build(settings), settings)
    await worker.start()
    await worker.wait_serving()
    async with worker_channel(worker.port) as channel:
        stub = gpu_pb2_grpc.GpuServiceStub(channel)
        status = await stub.GetStatus(gpu_pb2.GetStatusRequest())
        print("\n", status)
        assert status.cuda_available and status.device_count == torch.cuda.device_count()
        device = status.devices[0]
        assert device.name == torch.cuda.get_device_name(0)
        assert device.memory_total_mb > 1000 and 0 < device.memory_free_mb <= device.memory_total_mb
        lease = await stub.Reserve(gpu_pb2.ReserveRequest(service="test", memory_mb=1024))
        assert (await stub.GetDevice(gpu_pb2.GetDeviceRequest(index=lease.device))).reserved_mb == 1024
        await stub.Release(gpu_pb2.ReleaseRequest(lease_id=lease.lease_id))
    await worker.stop(0)


def test_fp16_embeddings_on_cuda_match_cpu_fp32():
    from sentence_transformers import SentenceTransformer

    from services.embedding.adapter import EmbeddingAdapter
    from services.runtime.adapter import ModelSpec
    from services.runtime.models import resolve_model

    texts = ["The cat sat on the mat.", "GPUs multiply matrices quickly.", "word " * 200]
    adapter = EmbeddingAdapter(ModelSpec("sentence-transformers/all-MiniLM-L6-v2", device="cuda"))
    described = adapter.load()
    assert (described.device, described.dtype) == ("cuda", "float16")
    served = adapter.postprocess(*(lambda p: (p, adapter.forward(p)))(adapter.preprocess(texts)))
    reference = SentenceTransformer(str(resolve_model("sentence-transformers/all-MiniLM-L6-v2")), device="cpu")
    expected = reference.encode(texts, normalize_embeddings=True)
    served = np.stack(served)
    cosine = (served * expected).sum(1) / np.linalg.norm(served, axis=1)
    assert cosine.min() >= 0.999
