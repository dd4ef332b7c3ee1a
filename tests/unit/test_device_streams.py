"""How many batches a model worker runs at once, and on how many threads each."""

import pytest

from services.runtime.device import device_streams, place, threads_per_stream


@pytest.mark.parametrize(("device", "requested", "cores", "streams"), [
    ("cpu", 0, 2, 2),
    ("cpu", 0, 16, 2),
    ("cpu", 0, 1, 1),
    ("cuda", 0, 16, 1),
    ("cuda:1", 0, 16, 1),
    ("cpu", 1, 2, 1),
    ("cpu", 4, 2, 4),
    ("cuda", 2, 16, 2),
])
def test_auto_streams_are_two_on_a_multi_core_cpu_and_one_on_cuda_unless_configured(device, requested, cores,
                                                                                      streams):
    assert device_streams(device, requested, cores=cores) == streams


@pytest.mark.parametrize(("streams", "cpu_threads", "cores", "threads"), [
    (2, 0, 2, 1),
    (2, 0, 16, 8),
    (1, 0, 2, 2),
    (4, 0, 2, 1),
    (2, 3, 2, 3),
])
def test_each_stream_gets_its_share_of_the_cores_unless_threads_are_configured(streams, cpu_threads, cores,
                                                                               threads):
    assert threads_per_stream(streams, cpu_threads, cores=cores) == threads


def test_placing_a_model_on_cpu_sizes_torchs_pool_for_one_stream():
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    try:
        place("cpu", "float32", cpu_threads=0, requested_streams=1)
        assert torch.get_num_threads() == threads_per_stream(1)
        place("cpu", "float32", cpu_threads=1, requested_streams=2)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
