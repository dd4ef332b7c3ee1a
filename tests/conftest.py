"""Markers come from the folder a test lives in; see pyproject's marker list."""

from pathlib import Path

import pytest

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
