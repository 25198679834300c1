"""Classification numbers beyond ACC/AUC/F1: per-class precision and recall, calibration, ROC curves."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import precision_recall_fscore_support, roc_curve

from pipelines.errors import ConfigError
from pipelines.labels import predicted_classes
from trainers.metrics import classification_metrics, scores_from_logits


@dataclass
class Calibration:
    """Expected calibration error and the reliability diagram's bins (Guo et al., 2017, "On Calibration of
    Modern Neural Networks": equal-width confidence bins, ECE = sum over bins of |accuracy - confidence|
    weighted by the share of predictions in the bin)."""

    ece: float
    bin_edges: np.ndarray  # (M + 1,)
    bin_confidence: np.ndarray  # (M,) mean confidence per bin, NaN when empty
    bin_accuracy: np.ndarray  # (M,)
    bin_count: np.ndarray  # (M,)


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> Calibration:
    """ECE of predictions with `confidence` (N,) in [0, 1] and `correct` (N,) 0/1."""
    confidence, correct = np.asarray(confidence, dtype=np.float64), np.asarray(correct, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    # Bins are (low, high]; a confidence of exactly 0 joins the first bin.
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore"):
        mean_confidence = np.bincount(which, weights=confidence, minlength=bins) / count
        accuracy = np.bincount(which, weights=correct, minlength=bins) / count
    gaps = np.where(count > 0, np.abs(accuracy - mean_confidence), 0.0)
    ece = float((gaps * count).sum() / max(len(confidence), 1))
    return Calibration(ece, edges, mean_confidence, accuracy, count)


def calibration_of(logits: np.ndarray, labels: np.ndarray, multi_label: bool, bins: int = 15) -> Calibration:
    """Single-label: confidence of the predicted class. Multi-label: every (image, label) probability, with
    'correct' meaning the label is present (a calibrated 0.7 is right 70% of the time)."""
    scores = scores_from_logits(logits, multi_label)
    if multi_label:
        return expected_calibration_error(scores.ravel(), np.asarray(labels).ravel(), bins)
    predicted = scores.argmax(axis=1)
    return expected_calibration_error(scores.max(axis=1), predicted == np.asarray(labels), bins)


def per_class_precision_recall(
    logits: np.ndarray, labels: np.ndarray, multi_label: bool, label_names: list[str]
) -> dict[str, dict[str, float]]:
    """{class name: {"precision", "recall", "support"}} at the same decision rule as ACC."""
    predicted = predicted_classes(np.asarray(logits), multi_label)
    labels = np.asarray(labels).astype(np.int64)
    indices = None if multi_label else list(range(len(label_names)))
    precision, recall, _, support = precision_recall_fscore_support(
        labels, predicted, labels=indices, average=None, zero_division=0
    )
    return {
        name: {"precision": float(p), "recall": float(r), "support": int(s)}
        for name, p, r, s in zip(label_names, precision, recall, support)
    }


def roc_curves(logits: np.ndarray, labels: np.ndarray, multi_label: bool, label_names: list[str]) -> dict[str, tuple]:
    """{curve name: (false positive rates, true positive rates)}: the positive class for a binary task, one
    vs rest per class for multi-class, one per label for multi-label; classes absent from `labels` are skipped."""
    scores = scores_from_logits(logits, multi_label)
    labels = np.asarray(labels).astype(np.int64)
    truth = labels if multi_label else (labels[:, None] == np.arange(scores.shape[1]))
    columns = [scores.shape[1] - 1] if (not multi_label and scores.shape[1] == 2) else range(scores.shape[1])
    curves = {}
    for column in columns:
        if 0 < truth[:, column].sum() < len(truth):
            false_positive, true_positive, _ = roc_curve(truth[:, column], scores[:, column])
            curves[label_names[column]] = (false_positive, true_positive)
    return curves


def classification_summary(
    logits: np.ndarray, labels: np.ndarray, multi_label: bool, label_names: list[str]
) -> dict[str, object]:
    """Everything the report says about one model's predictions, as plain numbers."""
    calibration = calibration_of(logits, labels, multi_label)
    return {
        **classification_metrics(logits, labels, multi_label),
        "ece": calibration.ece,
        "per_class": per_class_precision_recall(logits, labels, multi_label, label_names),
    }


@dataclass
class LabelSpace:
    """The labels a report compares models on, and where each model keeps them among its outputs."""

    names: list[str]
    columns: list[list[int]]  # per model: its output index of each shared label
    dataset_columns: list[int]  # the dataset's index of each shared label

    def restrict(self, model_index: int, logits: np.ndarray) -> np.ndarray:
        """A model's logits (N, L_model) -> (N, S) for the shared labels."""
        return np.asarray(logits)[:, self.columns[model_index]]

    def keep(self, labels: np.ndarray, multi_label: bool) -> tuple[np.ndarray, np.ndarray]:
        """Which images to keep (single-label: those whose class is shared) and their labels in shared indices."""
        labels = np.asarray(labels)
        if multi_label:
            return np.ones(len(labels), dtype=bool), labels[:, self.dataset_columns]
        position = {dataset: shared for shared, dataset in enumerate(self.dataset_columns)}
        keep = np.array([int(label) in position for label in labels], dtype=bool)
        return keep, np.array([position[int(label)] for label in labels[keep]], dtype=np.int64)


def shared_label_space(model_labels: list[list[str]], dataset_labels: list[str], allow_mismatch: bool) -> LabelSpace:
    """All models must have the dataset's labels in its order, unless `allow_mismatch`: then the labels every
    model and the dataset share, in the dataset's order."""
    if not allow_mismatch:
        for index, labels in enumerate(model_labels):
            if labels != dataset_labels:
                raise ConfigError(
                    f"Model {index + 1} has labels {labels} but the dataset has {dataset_labels}; compare models "
                    "with one label space, or pass --allow_label_mismatch to use only the labels they share."
                )
        identity = list(range(len(dataset_labels)))
        return LabelSpace(list(dataset_labels), [identity] * len(model_labels), identity)
    names = [name for name in dataset_labels if all(name in labels for labels in model_labels)]
    if len(names) < 2:
        raise ConfigError(f"The models and the dataset share {len(names)} label(s) ({names}); at least 2 are needed.")
    return LabelSpace(
        names,
        [[labels.index(name) for name in names] for labels in model_labels],
        [dataset_labels.index(n) for n in names],
    )
