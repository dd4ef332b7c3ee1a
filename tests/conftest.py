"""Markers come from the folder a test lives in; see pyproject's marker list."""

import signal
from pathlib import Path

import pytest

# SIGTERM (CI's or `timeout`'s) stops the run like Ctrl-C: fixtures tear down and stop the processes they
# started, where a plain SIGTERM would end pytest with its workers still running.
signal.signal(signal.SIGTERM, signal.default_int_handler)

# Tests that describe a machine without a GPU; on one with a GPU, tests/gpu checks the CUDA side instead.
cpu_machine_only = pytest.mark.skipif(Path("/dev/nvidiactl").exists(), reason="this machine has an NVIDIA GPU")

_FOLDER_MARKERS = {"unit": pytest.mark.unit, "integration": pytest.mark.integration, "e2e": pytest.mark.e2e,
                   "gpu": pytest.mark.gpu}


def pytest_collection_modifyitems(items):
    for item in items:
        parts = Path(item.fspath).parts
        for folder, marker in _FOLDER_MARKERS.items():
            if folder in parts:
                item.add_marker(marker)
        if "e2e" in parts:
            item.add_marker(pytest.mark.slow)
