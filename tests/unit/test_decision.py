"""The self-check's cached decision: its key changes with everything the outcome depends on, nothing else."""

from pathlib import Path

import pytest

from services.runtime.decision import Decision, cpu_identity, decision_key, load_decision, save_decision

SETTINGS = {"device": "cpu", "dtype": "auto", "backend": "auto"}


@pytest.fixture
def model(tmp_path) -> Path:
    directory = tmp_path / "model"
    directory.mkdir()
    (directory / "model.safetensors").write_bytes(b"weights")
    (directory / "config.json").write_text("{}")
    return directory


def key(model: Path, **changes) -> str:
    parts = {"role": "EmbeddingAdapter", "layout": (2, 1), "settings": SETTINGS, "cpu": "EPYC|avx512_bf16", **changes}
    return decision_key(model, parts["role"], parts["layout"], parts["settings"], parts["cpu"])


def test_the_same_model_machine_and_settings_give_the_same_key(model):
    assert key(model) == key(model)


@pytest.mark.parametrize("change", [
    {"cpu": "Xeon|avx512_bf16 amx_bf16"},
    {"cpu": "EPYC|avx2"},
    {"layout": (1, 2)},
    {"layout": (2, 2)},
    {"settings": {**SETTINGS, "dtype": "float32"}},
    {"settings": {**SETTINGS, "backend": "openvino"}},
    {"role": "CrossEncoderAdapter"},
], ids=["other cpu model", "other cpu flags", "one stream", "more threads", "dtype", "backend", "other adapter"])
def test_a_changed_cpu_layout_setting_or_adapter_gives_another_key(model, change):
    assert key(model, **change) != key(model)


def test_changed_model_files_give_another_key(model):
    before = key(model)
    (model / "model.safetensors").write_bytes(b"other weights")
    assert key(model) != before


def test_this_machines_identity_names_its_cpu_model_and_flags(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: AMD EPYC 9R14\nflags\t\t: fpu avx512_bf16\n\n"
                       "processor\t: 1\nmodel name\t: AMD EPYC 9R14\nflags\t\t: fpu avx512_bf16\n")
    assert cpu_identity(cpuinfo) == "AMD EPYC 9R14|fpu avx512_bf16"


def test_a_decision_round_trips_and_a_damaged_one_reads_as_none(tmp_path):
    decision = Decision("bfloat16", "passed", "traced", "openvino", "bfloat16", "bf16", False, "1.2x torch")
    save_decision(tmp_path, "k", decision)
    assert load_decision(tmp_path, "k") == decision
    assert load_decision(tmp_path, "absent") is None
    (tmp_path / "k.json").write_text("{not json")
    assert load_decision(tmp_path, "k") is None


def test_an_unwritable_directory_keeps_nothing_and_does_not_fail(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("")
    save_decision(blocked / "decisions", "k", Decision("", "", "eager", "torch", "", "", False, ""))
    assert load_decision(blocked / "decisions", "k") is None
