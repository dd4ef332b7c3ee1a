import json

import numpy as np
import pytest

from services.classifier.complexity import TechniqueTable, complexity
from services.classifier.examples import load_examples
from services.classifier.head import calibrate_temperature, train
from services.classifier.settings import DATA


def test_complexity_grows_with_length_and_multi_step_language():
    assert complexity("What is DNS?")[0] == "simple"
    moderate = "Explain how DNS resolution works for a browser request, step by step, for a new engineer."
    assert complexity(moderate)[0] == "moderate"
    hard = ("Compare three database designs for a multi-tenant product, evaluate the trade-offs, then design a "
            "migration plan in several steps and explain why each step is safe. Finally estimate the cost.")
    assert complexity(hard)[0] == "complex"


def test_techniques_come_from_the_table_intent_first_then_complexity():
    table = TechniqueTable.load(DATA / "techniques.yaml")
    assert table.suggest("reasoning", "simple") == ["chain_of_thought", "self_consistency"]
    assert table.suggest("reasoning", "complex") == ["chain_of_thought", "self_consistency", "tree_of_thoughts",
                                                     "constitutional_ai"]
    assert table.suggest("my_own_intent", "simple") == ["zero_shot", "few_shot"]


def test_the_shipped_examples_have_at_least_15_per_default_intent():
    examples = load_examples(DATA / "intents.yaml")
    assert len(examples.intents) == 10
    assert min(examples.count(intent) for intent in examples.intents) >= 15
    assert len(set(examples.texts)) == len(examples.texts)


@pytest.mark.parametrize(
    ("content", "suffix", "message"),
    [
        ("intents:\n  only_one:\n    examples: [a, b]\n", ".yaml", "at least two intents"),
        ("intents:\n  a:\n    examples: [x]\n  b:\n    examples: [y, z]\n", ".yaml", "'a' needs at least two"),
        (json.dumps({"text": "x"}), ".jsonl", "needs \"text\" and \"intent\""),
    ],
)
def test_bad_example_files_are_refused_with_the_fix(tmp_path, content, suffix, message):
    path = tmp_path / f"examples{suffix}"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        load_examples(path)


def test_the_head_learns_separable_classes_and_calibrates_a_temperature():
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((3, 16)) * 3
    labels = np.repeat(np.arange(3), 20)
    points = centres[labels] + rng.standard_normal((60, 16)) * 0.5
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    head = train(points, labels, 3)
    assert head.cv_accuracy == 1.0
    assert (head.probabilities(points).argmax(axis=1) == labels).all()
    assert 0.05 <= head.temperature <= 20


def test_temperature_scaling_prefers_softer_logits_when_they_are_overconfident():
    logits = np.array([[10.0, 0.0], [10.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    labels = np.array([0, 0, 1, 1])
    assert calibrate_temperature(logits, labels) > 2
