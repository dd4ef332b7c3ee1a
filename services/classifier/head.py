"""The few-shot head: multinomial logistic regression on normalized embeddings, temperature-calibrated."""

from dataclasses import dataclass

import numpy as np


@dataclass
class Head:
    weights: np.ndarray      # (dimension, intents)
    bias: np.ndarray         # (intents,)
    temperature: float
    cv_accuracy: float

    def probabilities(self, embeddings: np.ndarray) -> np.ndarray:
        return softmax((embeddings @ self.weights + self.bias) / self.temperature)


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
    accuracy = float((held_out_logits.argmax(axis=1) == labels).mean())
    weights, bias = fit(embeddings, labels, classes)
    return Head(weights, bias, calibrate_temperature(held_out_logits, labels), accuracy)


def calibrate_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature minimizing the held-out negative log-likelihood (a grid is plenty for one number)."""
    candidates = np.exp(np.linspace(np.log(0.01), np.log(100), 400))
    rows = np.arange(len(labels))
    losses = [-np.log(softmax(logits / t)[rows, labels] + 1e-12).mean() for t in candidates]
    return float(candidates[int(np.argmin(losses))])
