"""How many batches a model worker runs at once, and on how many threads each."""

import os

import pytest

from services.runtime.device import (
    available_cores,
    device_streams,
    limit_blas_threads,
    place,
    stream_layout,
    threads_per_stream,
)


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


def test_the_layout_reports_no_cpu_threads_on_cuda_where_torch_keeps_no_pool():
    assert stream_layout("cuda:0", requested_streams=2, cpu_threads=4) == (2, 0)
    assert stream_layout("cpu", requested_streams=2, cpu_threads=3) == (2, 3)


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


@pytest.mark.parametrize(("cpu_max", "limit"), [
    ("max 100000\n", None),
    ("100000 100000\n", 1),
    ("150000 100000\n", 2),
    ("50000 100000\n", 1),
    ("100000000 100000\n", None),
    (None, None),
])
def test_available_cores_follow_a_cgroup_cpu_quota(tmp_path, cpu_max, limit):
    path = tmp_path / "cpu.max"
    if cpu_max is not None:
        path.write_text(cpu_max)
    cores = len(os.sched_getaffinity(0))
    assert available_cores(path) == (min(cores, limit) if limit else cores)


def test_a_worker_process_gives_numpys_blas_one_thread():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    with threadpoolctl.threadpool_limits(limits=None):  # restores the test process's own limits afterwards
        limit_blas_threads()
        blas = threadpoolctl.threadpool_info()
        assert blas and all(pool["num_threads"] == 1 for pool in blas if pool["user_api"] == "blas")
