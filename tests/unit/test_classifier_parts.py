import json

import numpy as np
import pytest

from services.classifier.complexity import TechniqueTable, complexity
from services.classifier.examples import load_examples
from services.classifier.head import (
    IN_SCOPE_RETENTION,
    Head,
    calibrate_temperature,
    learn_scope_threshold,
    softmax,
    train,
)
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


def clusters(rng, classes: int, per_class: int, dimension: int, spread: float):
    centres = rng.standard_normal((classes, dimension)) * 3
    labels = np.repeat(np.arange(classes), per_class)
    points = centres[labels] + rng.standard_normal((len(labels), dimension)) * spread
    return points / np.linalg.norm(points, axis=1, keepdims=True), labels


def negative_log_likelihood(probabilities: np.ndarray, labels: np.ndarray) -> float:
    return float(-np.log(probabilities[np.arange(len(labels)), labels]).mean())


def test_the_head_learns_separable_classes():
    points, labels = clusters(np.random.default_rng(0), classes=3, per_class=20, dimension=16, spread=0.5)
    head = train(points, labels, 3)
    assert head.cv_accuracy == 1.0
    assert (head.probabilities(points).argmax(axis=1) == labels).all()


def test_probabilities_are_the_softmax_of_the_logits_divided_by_the_temperature():
    rng = np.random.default_rng(4)
    weights, bias, points = rng.standard_normal((8, 3)), rng.standard_normal(3), rng.standard_normal((5, 8))
    logits = points @ weights + bias
    for temperature in (0.5, 1.0, 3.0):
        head = Head(weights, bias, temperature, cv_accuracy=1.0)
        scaled = np.exp(logits / temperature)
        np.testing.assert_allclose(head.probabilities(points), scaled / scaled.sum(axis=1, keepdims=True), rtol=1e-12)


def test_calibration_recovers_the_temperature_that_generated_the_labels():
    rng = np.random.default_rng(5)
    logits = rng.standard_normal((6000, 4)) * 4
    for true_temperature in (0.5, 2.0, 6.0):
        probabilities = softmax(logits / true_temperature)
        labels = np.array([rng.choice(4, p=row) for row in probabilities])
        assert calibrate_temperature(logits, labels) == pytest.approx(true_temperature, rel=0.15)


def test_the_calibrated_temperature_minimizes_the_held_out_likelihood():
    rng = np.random.default_rng(6)
    logits = rng.standard_normal((300, 3)) * 5
    labels = np.array([rng.choice(3, p=row) for row in softmax(logits / 7)])
    best = calibrate_temperature(logits, labels)
    at_best = negative_log_likelihood(softmax(logits / best), labels)
    for other in (best * 0.8, best * 1.25, 1.0):
        assert at_best <= negative_log_likelihood(softmax(logits / other), labels)


def test_accuracy_and_temperature_come_from_out_of_fold_logits():
    """Labels unrelated to the points: a head fits them in-sample but cannot predict held-out examples,
    so the honest accuracy is near chance and the temperature flattens the probabilities."""
    rng = np.random.default_rng(7)
    points = rng.standard_normal((60, 64))
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    labels = np.repeat(np.arange(3), 20)
    rng.shuffle(labels)
    head = train(points, labels, 3)
    in_sample = Head(head.weights, head.bias, 1.0, head.cv_accuracy).probabilities(points)
    assert (in_sample.argmax(axis=1) == labels).mean() > 0.9, "the head memorizes its training set"
    assert head.cv_accuracy < 0.6
    assert head.temperature > 3
    assert head.probabilities(points).max(axis=1).mean() < 0.5


def test_a_separable_set_keeps_sharp_probabilities_after_calibration():
    """Confident where the folds agree: a separable set gets a temperature that keeps probabilities sharp."""
    points, labels = clusters(np.random.default_rng(8), classes=4, per_class=15, dimension=32, spread=0.3)
    head = train(points, labels, 4)
    assert head.probabilities(points).max(axis=1).min() > 0.5


def directions(centres: list[int], per_cluster: int = 10, spread: float = 0.15, dimension: int = 16, seed: int = 0):
    """Unit vectors scattered around the given basis directions, labelled by cluster."""
    rng = np.random.default_rng(seed)
    points = np.concatenate([np.eye(dimension)[c] + spread * rng.standard_normal((per_cluster, dimension))
                             for c in centres])
    return points / np.linalg.norm(points, axis=1, keepdims=True), np.repeat(np.arange(len(centres)), per_cluster)


def test_the_scope_threshold_separates_intents_held_out_in_turn_from_the_rest():
    points, labels = directions([0, 1, 2])
    scope = learn_scope_threshold(points, labels, np.ones(len(labels), dtype=bool))
    within = (points[:10] @ points[:10].T)[~np.eye(10, dtype=bool)].min()
    across = (points[:10] @ points[10:].T).max()
    assert across < scope.threshold <= within
    assert (scope.in_scope_accuracy, scope.out_of_scope_recall, scope.accuracy) == (1.0, 1.0, 1.0)


def test_the_threshold_keeps_the_in_scope_texts_the_head_gets_right():
    points, labels = directions([0, 0, 1], spread=0.6)  # two intents share a direction: hard to tell apart
    correct = np.ones(len(labels), dtype=bool)
    scope = learn_scope_threshold(points, labels, correct)
    assert scope.in_scope_accuracy >= IN_SCOPE_RETENTION
    wrong = learn_scope_threshold(points, labels, np.zeros(len(labels), dtype=bool))
    assert wrong.in_scope_accuracy == 0.0, "an in-scope text the head gets wrong is never right"


def test_examples_labelled_out_of_scope_play_that_role_and_are_not_references():
    points, labels = directions([0, 1, 2, 3])
    scope = learn_scope_threshold(points, labels, labels != 3, out_of_scope_label=3)
    assert scope.out_of_scope_recall == 1.0 and scope.in_scope_accuracy == 1.0
