"""The few-shot head: multinomial logistic regression on normalized embeddings, temperature-calibrated."""

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Head:
    weights: np.ndarray      # (dimension, intents)
    bias: np.ndarray         # (intents,)
    temperature: float
    cv_accuracy: float
    # Each example's intent as predicted by the head that did not see it (k-fold).
    held_out_predictions: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))

    def probabilities(self, embeddings: np.ndarray) -> np.ndarray:
        return softmax((embeddings @ self.weights + self.bias) / self.temperature)


# Out-of-scope detection may cost at most this share of the in-scope texts the head classifies right.
IN_SCOPE_RETENTION = 0.95


@dataclass
class IntentScores:
    """A text's calibrated probability per label, and whether it lies beyond every intent's examples; `labels`
    names the probabilities when the labels can change while serving (a reloaded example file), else None
    (the model's labels). Zero-shot scoring reads the text's normalized embedding (`vector`, few-shot) or the
    checkpoint's raw `logits`."""

    probabilities: np.ndarray
    beyond_intents: bool = False
    labels: tuple[str, ...] | None = None
    vector: np.ndarray | None = None
    logits: np.ndarray | None = None


@dataclass
class ScopeThreshold:
    """Out-of-scope detection: a text whose nearest in-scope example is less similar than `threshold` (cosine)
    belongs to no intent. The figures are the cross-validated ones the threshold was chosen by."""

    threshold: float
    in_scope_accuracy: float
    out_of_scope_recall: float
    accuracy: float


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def fit(embeddings: np.ndarray, labels: np.ndarray, classes: int, l2: float = 1e-3) -> tuple[np.ndarray, np.ndarray]:
    """Full-batch L-BFGS on cross-entropy + L2 (torch)."""
    import torch

    x = torch.from_numpy(embeddings.astype(np.float32))
    y = torch.from_numpy(labels.astype(np.int64))
    weights = torch.zeros(x.shape[1], classes, requires_grad=True)
    bias = torch.zeros(classes, requires_grad=True)
    optimizer = torch.optim.LBFGS([weights, bias], lr=1, max_iter=200, line_search_fn="strong_wolfe")

    def loss():
        optimizer.zero_grad()
        value = torch.nn.functional.cross_entropy(x @ weights + bias, y) + l2 * weights.pow(2).sum()
        value.backward()
        return value

    with torch.enable_grad():
        optimizer.step(loss)
    return weights.detach().numpy(), bias.detach().numpy()


def stratified_folds(labels: np.ndarray, folds: int) -> np.ndarray:
    """Fold number of each example: every class spread evenly over the folds."""
    assignment = np.zeros(len(labels), dtype=int)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        assignment[members] = np.arange(len(members)) % folds
    return assignment


def train(embeddings: np.ndarray, labels: np.ndarray, classes: int, folds: int = 5) -> Head:
    """k-fold out-of-fold logits give the accuracy and the temperature; the final head uses every example."""
    folds = max(2, min(folds, np.bincount(labels).min()))
    assignment = stratified_folds(labels, folds)
    held_out_logits = np.zeros((len(labels), classes))
    for fold in range(folds):
        train_rows, test_rows = assignment != fold, assignment == fold
        weights, bias = fit(embeddings[train_rows], labels[train_rows], classes)
        held_out_logits[test_rows] = embeddings[test_rows] @ weights + bias
    predictions = held_out_logits.argmax(axis=1)
    accuracy = float((predictions == labels).mean())
    weights, bias = fit(embeddings, labels, classes)
    return Head(weights, bias, calibrate_temperature(held_out_logits, labels), accuracy, predictions)


def learn_scope_threshold(embeddings: np.ndarray, labels: np.ndarray, correct: np.ndarray,
                          out_of_scope_label: int | None = None) -> ScopeThreshold:
    """The similarity threshold that best separates in-scope texts from texts of no intent, from the examples
    alone: each intent in turn is held out entirely and its examples play the out-of-scope role.

    An in-scope example scores its similarity to the nearest *other* in-scope example and counts as right when
    it clears the threshold and the head that did not see it (`correct`) named its intent; a held-out-intent
    example scores its similarity to the nearest example of the other intents and counts as right below the
    threshold, as do examples labelled out of scope. The threshold maximises accuracy over both roles
    together (the middle of the best range), capped so that at least IN_SCOPE_RETENTION of the in-scope
    examples the head gets right keep their intent: a held-out intent of the same file is nearer to the others
    than most out-of-scope traffic, so the uncapped cut refuses in-scope texts that real traffic would not
    contest (README, design notes). `embeddings` are L2-normalized.
    """
    in_scope = labels != out_of_scope_label
    similarity = embeddings @ embeddings[in_scope].T
    reference_labels = labels[in_scope]
    self_match = np.flatnonzero(in_scope)[:, None] == np.arange(len(labels))[None, in_scope]
    nearest_other = np.where(self_match, -np.inf, similarity[in_scope]).max(axis=1)
    nearest_other_intent = np.where(reference_labels[None, :] == labels[in_scope][:, None], -np.inf,
                                    similarity[in_scope]).max(axis=1)
    out_of_scope_scores = np.concatenate([nearest_other_intent, similarity[~in_scope].max(axis=1)])
    in_scope_scores, in_scope_correct = nearest_other, correct[in_scope]

    candidates = np.unique(np.concatenate([in_scope_scores, out_of_scope_scores]))
    cuts = np.concatenate([[candidates[0] - 1e-6], (candidates[:-1] + candidates[1:]) / 2, [candidates[-1] + 1e-6]])
    kept = (in_scope_scores[None, :] >= cuts[:, None]) & in_scope_correct[None, :]
    refused = out_of_scope_scores[None, :] < cuts[:, None]
    right = kept.sum(axis=1) + refused.sum(axis=1)
    best = np.flatnonzero(right == right.max())
    retained = kept.sum(axis=1) >= IN_SCOPE_RETENTION * in_scope_correct.sum()
    choice = min(best[len(best) // 2], np.flatnonzero(retained).max())
    return ScopeThreshold(
        threshold=float(cuts[choice]),
        in_scope_accuracy=float(kept[choice].mean()),
        out_of_scope_recall=float(refused[choice].mean()),
        accuracy=float(right[choice] / (len(in_scope_scores) + len(out_of_scope_scores))),
    )


def calibrate_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature minimizing the held-out negative log-likelihood (a grid is plenty for one number)."""
    candidates = np.exp(np.linspace(np.log(0.01), np.log(100), 400))
    rows = np.arange(len(labels))
    losses = [-np.log(softmax(logits / t)[rows, labels] + 1e-12).mean() for t in candidates]
    return float(candidates[int(np.argmin(losses))])
