"""How a worker picks its backend: the candidates DTYPE allows, the speed and agreement rules, failed conversions."""

from pathlib import Path

import numpy as np
import pytest

from services.runtime.backend import (
    BackendError,
    Candidate,
    Request,
    Trial,
    candidates,
    choose,
    settle_backend,
)
from services.runtime.device import DeviceError
from services.runtime.precision import cosine_agreement


@pytest.mark.parametrize(("dtype", "native_bf16", "quantize", "expected"), [
    ("auto", True, "none", ["bfloat16", "float32"]),
    ("auto", False, "none", ["float32"]),
    ("float32", True, "none", ["float32"]),
    ("bfloat16", True, "none", ["bfloat16"]),
    ("auto", True, "int8", ["bfloat16", "float32", "int8+bfloat16", "int8+float32"]),
])
def test_candidates_follow_the_dtype_setting_and_the_cpu(dtype, native_bf16, quantize, expected):
    request = Request(dtype=dtype, native_bf16=native_bf16, quantize=quantize)
    assert [candidate.dtype for candidate in candidates(request)] == expected


def trial(dtype: str, seconds: float, agrees: bool = True) -> Trial:
    precision = "bf16" if dtype.endswith("bfloat16") else "f32"
    return Trial(Candidate(precision, dtype.startswith("int8")), None, seconds, agrees, "min cosine x")


def test_auto_keeps_the_fastest_agreeing_candidate_only_when_it_beats_torch_by_1_1x():
    trials = [trial("bfloat16", 0.5), trial("float32", 0.8), trial("int8+bfloat16", 0.4, agrees=False)]
    chosen, why = choose(Request(), 1.0, trials)
    assert chosen is trials[0] and "2.00x torch" in why
    chosen, why = choose(Request(), 0.52, trials)
    assert chosen is None and why.startswith("OpenVINO was not 1.1x faster than torch here")


def test_explicit_openvino_keeps_an_agreeing_candidate_whatever_its_speed():
    chosen, _ = choose(Request(backend="openvino"), 0.1, [trial("float32", 1.0)])
    assert chosen is not None


def test_no_agreeing_candidate_means_torch():
    chosen, why = choose(Request(), 1.0, [trial("bfloat16", 0.1, agrees=False)])
    assert chosen is None and why.startswith("no OpenVINO candidate agreed with fp32")


class UnconvertibleEncoder:
    """A packed encoder whose forward OpenVINO's converter cannot trace."""

    graph = None

    def module(self):
        import torch

        class Broken(torch.nn.Module):
            def forward(self, input_ids, position_ids, attention_mask, token_type_ids):
                raise RuntimeError("this forward cannot be traced")

        return Broken()


def settle(backend: str, tmp_path: Path):
    import torch

    sample = np.ones((2, 4), dtype=np.float32)
    example = (torch.zeros(1, 4, dtype=torch.long),) * 2 + (torch.ones(1, 1, 4, 4, dtype=torch.bool),
                                                            torch.zeros(1, 4, dtype=torch.long))
    model = tmp_path / "model.bin"
    model.write_bytes(b"weights")
    return settle_backend(Request(backend=backend, cache_dir=str(tmp_path / "cache")), "cpu", UnconvertibleEncoder(),
                          example, model, "test", lambda: sample, None, cosine_agreement)


def test_auto_falls_back_to_torch_with_the_reason_when_conversion_fails(tmp_path):
    backend = settle("auto", tmp_path)
    assert backend.name == "torch"
    assert backend.reason.startswith("auto: OpenVINO conversion failed") and "cannot be traced" in backend.reason


def test_explicit_openvino_refuses_to_start_when_conversion_fails(tmp_path):
    with pytest.raises(BackendError, match="INFERENCE_BACKEND=openvino: OpenVINO conversion failed"):
        settle("openvino", tmp_path)
    assert issubclass(BackendError, DeviceError), "a configuration error: one line, exit 1"


def test_cuda_and_padded_models_stay_on_torch(tmp_path):
    run = lambda: np.ones((1, 1))  # noqa: E731
    on_cuda = settle_backend(Request(), "cuda", UnconvertibleEncoder(), (), tmp_path, "test", run, None,
                             cosine_agreement)
    padded = settle_backend(Request(), "cpu", None, (), tmp_path, "test", run, None, cosine_agreement)
    assert (on_cuda.name, padded.name) == ("torch", "torch")
    assert "CUDA stays on torch" in on_cuda.reason and "padded batches" in padded.reason
    with pytest.raises(BackendError):
        settle_backend(Request(backend="openvino"), "cpu", None, (), tmp_path, "test", run, None, cosine_agreement)
