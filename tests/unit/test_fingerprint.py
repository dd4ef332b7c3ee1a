"""The model fingerprint: equal for the same model served the same way, different for anything that changes
results."""

from dataclasses import replace

from services.runtime.adapter import ModelDescription
from services.runtime.fingerprint import fingerprint


def model_in(directory, **fields) -> ModelDescription:
    (directory / "config.json").write_text('{"hidden_size": 8}')
    (directory / "weights").mkdir(exist_ok=True)
    (directory / "weights" / "model.safetensors").write_bytes(bytes(range(256)) * 8)
    return ModelDescription(model_id="org/model", model_path=str(directory), device="cpu", dtype="float32",
                            max_input_tokens=128, **fields)


def test_the_same_model_served_the_same_way_has_one_fingerprint(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second = model_in(tmp_path / "a"), model_in(tmp_path / "b")
    assert fingerprint(first) == fingerprint(second) == fingerprint(replace(first, device="cpu"))
    assert len(fingerprint(first)) == 64 and int(fingerprint(first), 16) >= 0
    # Which CUDA device serves it does not change results; the kind of device may.
    assert fingerprint(replace(first, device="cuda:0")) == fingerprint(replace(first, device="cuda:1"))


def test_weights_configuration_files_precision_prompts_and_examples_each_change_it(tmp_path):
    model = model_in(tmp_path)
    base = fingerprint(model)
    examples = tmp_path.parent / "examples.yaml"
    examples.write_text("greeting: [hello]")
    with_examples = fingerprint(replace(model, result_files=[str(examples)]))
    variants = {
        "dtype": fingerprint(replace(model, dtype="bfloat16")),
        "device kind": fingerprint(replace(model, device="cuda:0")),
        "prompts": fingerprint(replace(model, prompts={"query": "query: "})),
        "model id": fingerprint(replace(model, model_id="org/other")),
        "examples": with_examples,
    }
    examples.write_text("greeting: [hello, hi]")
    variants["edited examples"] = fingerprint(replace(model, result_files=[str(examples)]))
    weights = tmp_path / "weights" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x00")
    variants["one weight byte"] = fingerprint(model)
    (tmp_path / "config.json").write_text('{"hidden_size": 16}')
    variants["configuration"] = fingerprint(model)
    assert base not in variants.values()
    assert len(set(variants.values())) == len(variants), variants
