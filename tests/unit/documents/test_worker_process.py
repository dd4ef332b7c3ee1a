"""`python -m services.documents` as scripts/start.sh runs it: it starts, answers the gRPC health protocol and
reflection, and refuses a document without a served tokenizer clearly (in the documents worker's own
environment, `make test-documents-isolated`, there is no torch to fall back on)."""

import os
import subprocess
import sys
import time

import grpc
import pytest

from tests.network import refusing_port
from torchgate.health_probe import check
from torchgate.v1 import documents_pb2, documents_pb2_grpc


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    port_file = tmp_path_factory.mktemp("documents") / "documents.port"
    env = {**os.environ, "TORCHGATE_DOCUMENTS_PORT": "0", "TORCHGATE_DOCUMENTS_PORT_FILE": str(port_file),
           "TORCHGATE_DOCUMENTS_METRICS_PORT": "0", "TORCHGATE_LOG_FORMAT": "text",
           "TORCHGATE_DOCUMENTS_EMBEDDING_ADDRESSES": f"127.0.0.1:{refusing_port()}"}
    process = subprocess.Popen([sys.executable, "-m", "services.documents"], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    try:
        give_up = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            assert process.poll() is None, process.stderr.read().decode()[-2000:]
            assert time.monotonic() < give_up
            time.sleep(0.1)
        address = f"127.0.0.1:{port_file.read_text().strip()}"
        while check(address, "torchgate.v1.DocumentService") != "SERVING":
            assert process.poll() is None and time.monotonic() < give_up, process.stderr.read().decode()[-2000:]
            time.sleep(0.2)
        yield address
    finally:
        process.terminate()
        process.wait(30)


def test_the_worker_serves_its_info_without_torch(worker):
    with grpc.insecure_channel(worker) as channel:
        info = documents_pb2_grpc.DocumentServiceStub(channel).Info(documents_pb2.DocumentsInfoRequest(), timeout=5)
        assert {"markdown", "pdf", "docx"} <= set(info.formats)
        with pytest.raises(grpc.RpcError) as refused:
            documents_pb2_grpc.DocumentServiceStub(channel).Chunk(documents_pb2.ChunkRequest(
                source=documents_pb2.Source(content=b"# A title\n\ntext"), model="some/model"), timeout=30)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "embedding workers" in refused.value.details()
