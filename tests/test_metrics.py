"""Metrics against hand-computed values and against MedMNIST's own evaluator."""

from __future__ import annotations

import math

import numpy as np
import pytest
from medmnist.evaluator import getACC, getAUC

from trainers.losses import classification_loss
from trainers.metrics import classification_metrics, scores_from_logits, task_name


def logits_for(probabilities: np.ndarray) -> np.ndarray:
    """Logits whose softmax is `probabilities` (rows sum to 1)."""
    return np.log(probabilities)


def test_binary_auc_acc_f1_by_hand() -> None:
    positive = np.array([0.1, 0.4, 0.35, 0.8, 0.7, 0.2])
    labels = np.array([0, 0, 1, 1, 0, 1])
    metrics = classification_metrics(logits_for(np.stack([1 - positive, positive], 1)), labels, multi_label=False)
    # positives {0.35, 0.8, 0.2} vs negatives {0.1, 0.4, 0.7}: pairs won 1 + 3 + 1 = 5 of 9
    assert metrics["auc"] == pytest.approx(5 / 9)
    # predicted positive at > 0.5: [0, 0, 0, 1, 1, 0] -> correct 0,0,_,1,_,_ = 3 of 6
    assert metrics["accuracy"] == pytest.approx(3 / 6)
    # class 1: tp 1, fp 1, fn 2 -> F1 2/5; class 0: tp 2, fp 2, fn 1 -> F1 4/7
    assert metrics["f1"] == pytest.approx((2 / 5 + 4 / 7) / 2)


def test_multi_class_one_vs_rest_auc_and_argmax_accuracy_by_hand() -> None:
    probabilities = np.array([[0.7, 0.2, 0.1], [0.2, 0.5, 0.3], [0.1, 0.3, 0.6], [0.4, 0.4, 0.2]])
    labels = np.array([0, 1, 2, 1])
    metrics = classification_metrics(logits_for(probabilities), labels, multi_label=False)
    # class 0: pos {0.7} vs {0.2, 0.1, 0.4} -> 1; class 1: pos {0.5, 0.4} vs {0.2, 0.3} -> 1;
    # class 2: pos {0.6} vs {0.1, 0.3, 0.2} -> 1
    assert metrics["auc"] == pytest.approx(1.0)
    # argmax [0, 1, 2, 0 (tie -> first)] -> 3 of 4
    assert metrics["accuracy"] == pytest.approx(0.75)


def test_multi_label_mean_per_label_auc_and_accuracy_by_hand() -> None:
    probabilities = np.array([[0.9, 0.2], [0.6, 0.7], [0.3, 0.4], [0.1, 0.8]])
    labels = np.array([[1, 0], [0, 1], [1, 0], [0, 1]])
    metrics = classification_metrics(np.log(probabilities / (1 - probabilities)), labels, multi_label=True)
    # label 0: pos {0.9, 0.3} vs neg {0.6, 0.1} -> 3/4; label 1: pos {0.7, 0.8} vs {0.2, 0.4} -> 1
    assert metrics["auc"] == pytest.approx((0.75 + 1.0) / 2)
    # at > 0.5: label 0 predicts [1, 1, 0, 0] -> 2/4 right; label 1 predicts [0, 1, 0, 1] -> 4/4
    assert metrics["accuracy"] == pytest.approx((0.5 + 1.0) / 2)


@pytest.mark.parametrize(
    ("task", "classes"), [("binary-class", 2), ("multi-class", 6), ("multi-label, binary-class", 5)]
)
def test_agrees_with_medmnist_evaluator(task: str, classes: int) -> None:
    rng = np.random.default_rng(1)
    multi_label = task.startswith("multi-label")
    logits = rng.normal(size=(200, classes))
    labels = rng.integers(0, 2, size=(200, classes)) if multi_label else rng.integers(0, classes, size=200)
    ours = classification_metrics(logits, labels, multi_label)
    scores = scores_from_logits(logits, multi_label)
    assert task_name(classes, multi_label) == task
    assert ours["auc"] == pytest.approx(getAUC(labels, scores, task))
    assert ours["accuracy"] == pytest.approx(getACC(labels, scores, task))


def test_a_class_absent_from_the_references_is_left_out_of_the_auc() -> None:
    probabilities = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1]])
    metrics = classification_metrics(logits_for(probabilities), np.array([0, 1, 0]), multi_label=False)
    assert metrics["auc"] == pytest.approx(1.0)  # class 2 never occurs: skipped, not an error
    single = classification_metrics(logits_for(probabilities), np.array([0, 0, 0]), multi_label=False)
    assert math.isnan(single["auc"])


def test_loss_is_cross_entropy_or_bce_with_optional_smoothing() -> None:
    import torch

    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 0])
    expected = (-(torch.log_softmax(logits, 1)[:, 0])).mean()
    torch.testing.assert_close(classification_loss(logits, labels), expected)
    smoothed = classification_loss(logits, labels, label_smoothing=0.2)
    log_p = torch.log_softmax(logits, 1)
    by_hand = -(0.9 * log_p[:, 0] + 0.1 * log_p[:, 1]).mean()
    torch.testing.assert_close(smoothed, by_hand)
    multi = classification_loss(logits, torch.tensor([[1.0, 0.0], [0.0, 1.0]]), multi_label=True)
    p = torch.sigmoid(logits)
    bce = -(torch.log(p[0, 0]) + torch.log(1 - p[0, 1]) + torch.log(1 - p[1, 0]) + torch.log(p[1, 1])) / 4
    torch.testing.assert_close(multi, bce)


def test_label_smoothing_moves_targets_as_documented() -> None:
    import torch

    logits = torch.tensor([[2.0, -1.0, 0.5], [-0.3, 1.5, -2.0]])
    # Multi-label, eps 0.1: targets move towards 0.5 by eps, 1 -> 0.95 and 0 -> 0.05; BCE with logits by hand.
    multi_hot = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    targets = 0.9 * multi_hot + 0.05
    p = torch.sigmoid(logits)
    bce = -(targets * torch.log(p) + (1 - targets) * torch.log(1 - p)).mean()
    torch.testing.assert_close(classification_loss(logits, multi_hot, True, 0.1), bce)
    # Single-label, 3 classes, eps 0.3: the true class gets 1 - eps + eps/3 = 0.8, each other class eps/3 = 0.1
    # (3 classes, so eps/K and eps/(K-1) would differ).
    smoothed = torch.tensor([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1]])
    by_hand = -(smoothed * torch.log_softmax(logits, 1)).sum(1).mean()
    torch.testing.assert_close(classification_loss(logits, torch.tensor([0, 1]), label_smoothing=0.3), by_hand)
