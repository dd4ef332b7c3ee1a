"""dtype=auto: bf16 where the CPU has it natively, kept only when a self-check agrees with fp32."""

import logging
import time

import numpy as np
import pytest

from services.runtime.device import DeviceError, select_precision
from services.runtime.precision import (
    Precision,
    cosine_agreement,
    cpu_bf16_flags,
    machine_to_itself,
    score_agreement,
    settle,
)

torch = pytest.importorskip("torch")


def cpuinfo(tmp_path, flags: str):
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu sse2 avx2 {flags}\n\n"
                    f"processor\t: 1\nflags\t\t: fpu sse2 avx2 {flags}\n")
    return path


@pytest.mark.parametrize(("flags", "found"), [
    ("avx512f avx512_bf16 avx512_vnni", ["avx512_bf16"]),
    ("amx_tile amx_bf16 avx512_bf16", ["amx_bf16", "avx512_bf16"]),
    ("avx512f avx512_vnni", []),
    ("", []),
])
def test_native_bf16_is_read_from_the_cpu_flags(tmp_path, flags, found):
    assert cpu_bf16_flags(cpuinfo(tmp_path, flags)) == found


def test_an_unreadable_cpuinfo_means_no_bf16(tmp_path):
    assert cpu_bf16_flags(tmp_path / "missing") == []


def test_auto_on_a_bf16_cpu_is_a_bf16_autocast_candidate_over_fp32_weights():
    chosen = select_precision("cpu", "auto", bf16_flags=["avx512_bf16"])
    assert (chosen.weights, chosen.autocast, chosen.name) == (torch.float32, torch.bfloat16, "bfloat16")
    assert "avx512_bf16" in chosen.reason


def test_auto_on_a_cpu_without_bf16_is_fp32():
    chosen = select_precision("cpu", "auto", bf16_flags=[])
    assert (chosen.weights, chosen.autocast, chosen.name) == (torch.float32, None, "float32")
    assert "no native bf16" in chosen.reason


def test_auto_on_cuda_is_fp16_weights():
    chosen = select_precision("cuda", "auto", bf16_flags=["avx512_bf16"])
    assert (chosen.weights, chosen.autocast) == (torch.float16, None)


@pytest.mark.parametrize(("requested", "weights"), [("float32", "float32"), ("fp32", "float32"),
                                                     ("bfloat16", "bfloat16"), ("bf16", "bfloat16")])
def test_an_explicit_dtype_wins_over_the_cpu_flags(requested, weights):
    chosen = select_precision("cpu", requested, bf16_flags=["avx512_bf16"])
    assert (chosen.weights, chosen.autocast) == (getattr(torch, weights), None)
    assert chosen.reason == f"configured {weights}"


@pytest.mark.parametrize(("device", "requested", "message"), [
    ("cpu", "float16", "not supported on CPU"), ("cpu", "int8", "unknown dtype")])
def test_impossible_dtypes_are_refused_with_the_fix(device, requested, message):
    with pytest.raises(DeviceError, match=message):
        select_precision(device, requested, bf16_flags=[])


class Sample:
    """A sample run that records the autocast it saw; bf16 runs take `bf16_s` and return `reduced`, fp32 ones
    take `fp32_s` and return `reference`."""

    def __init__(self, precision: Precision, reference: np.ndarray, reduced, fp32_s: float = 0.02,
                 bf16_s: float = 0.005):
        self.precision, self.reference, self.reduced, self.seen = precision, reference, reduced, []
        self.fp32_s, self.bf16_s = fp32_s, bf16_s

    def __call__(self) -> np.ndarray:
        self.seen.append(self.precision.autocast)
        if self.precision.autocast is None:
            time.sleep(self.fp32_s)
            return self.reference
        if isinstance(self.reduced, Exception):
            raise self.reduced
        time.sleep(self.bf16_s)
        return self.reduced


def candidate() -> Precision:
    return Precision(torch.float32, torch.bfloat16, "auto: the CPU has native bf16 (avx512_bf16)")


def test_a_bf16_candidate_that_agrees_with_fp32_is_kept(caplog):
    precision = candidate()
    reference = np.random.default_rng(0).standard_normal((4, 8))
    sample = Sample(precision, reference, reference + 1e-4)
    with caplog.at_level(logging.INFO):
        settled = settle(precision, sample, cosine_agreement, "m")
    assert sample.seen == [None, torch.bfloat16] + [None, torch.bfloat16] * 3, "warm-ups, then 3 rounds in turns"
    assert settled.autocast is torch.bfloat16 and "self-check passed" in settled.reason
    assert "x the speed of fp32" in settled.reason
    assert "computing in bf16" in caplog.text


def test_a_bf16_candidate_that_agrees_but_is_not_faster_here_falls_back_to_fp32(caplog):
    precision = candidate()
    reference = np.random.default_rng(2).standard_normal((4, 8))
    sample = Sample(precision, reference, reference, fp32_s=0.005, bf16_s=0.01)
    with caplog.at_level(logging.INFO):
        settled = settle(precision, sample, cosine_agreement, "m")
    assert settled.autocast is None and settled.name == "float32"
    assert "the speed of fp32 here" in settled.reason and settled.reason.endswith(": fp32")
    assert "bf16 is not faster here" in caplog.text


@pytest.mark.parametrize("reduced", [np.zeros((4, 8)) + 1, RuntimeError("no bf16 kernel")], ids=["disagrees", "fails"])
def test_a_bf16_candidate_that_disagrees_or_fails_falls_back_to_fp32_with_a_log_line(caplog, reduced):
    precision = candidate()
    reference = np.random.default_rng(1).standard_normal((4, 8))
    with caplog.at_level(logging.WARNING):
        settled = settle(precision, Sample(precision, reference, reduced), cosine_agreement, "m")
    assert settled.autocast is None and settled.name == "float32"
    assert "self-check failed" in settled.reason and "fp32" in settled.reason
    assert "bf16 self-check failed" in caplog.text


def test_a_precision_without_candidate_is_not_checked():
    precision = Precision(torch.float32, reason="configured float32")
    assert settle(precision, lambda: pytest.fail("ran a self-check"), cosine_agreement, "m") is precision


def test_agreement_tolerances():
    rows = np.eye(3)
    assert cosine_agreement(rows, rows)[0]
    tilted = rows + np.array([0.05, 0, 0])
    assert not cosine_agreement(rows, tilted)[0]
    assert score_agreement(np.array([0.5, 0.9]), np.array([0.51, 0.89]))[0]
    assert not score_agreement(np.array([0.5, 0.9]), np.array([0.53, 0.9]))[0]


def test_autocast_runs_matrix_products_in_bf16_only_when_chosen():
    weights = torch.ones(4, 4)
    with candidate().context():
        assert (torch.ones(2, 4) @ weights).dtype is torch.bfloat16
    with Precision(torch.float32).context():
        assert (torch.ones(2, 4) @ weights).dtype is torch.float32


def test_self_checks_take_the_machine_one_at_a_time(tmp_path, caplog):
    lock = tmp_path / "self-check.lock"
    with machine_to_itself(lock) as first:
        with caplog.at_level(logging.WARNING), machine_to_itself(lock, wait_s=0.2) as second:
            assert (first, second) == (True, False)
        assert "checking anyway" in caplog.text
    with machine_to_itself(lock) as again:
        assert again, "the lock is free once the first check ended"
    with machine_to_itself(tmp_path / "missing" / "self-check.lock") as unopenable:
        assert not unopenable
