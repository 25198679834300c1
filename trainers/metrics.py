"""Classification metrics for `Trainer.compute_metrics`, from the `evaluate` module kept in this repo."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import evaluate
import numpy as np
from transformers import EvalPrediction

METRIC_SCRIPT = Path(__file__).parent / "metric_scripts" / "medmnist_classification.py"


def task_name(num_labels: int, multi_label: bool) -> str:
    """MedMNIST's task name for a label space (ordinal tasks are evaluated as multi-class)."""
    if multi_label:
        return "multi-label, binary-class"
    return "binary-class" if num_labels == 2 else "multi-class"


@cache
def load_metric(task: str) -> evaluate.EvaluationModule:
    # keep_in_memory: no cache file, so several processes (DDP) never contend for one lock.
    return evaluate.load(str(METRIC_SCRIPT), task, keep_in_memory=True)


def scores_from_logits(logits: np.ndarray, multi_label: bool) -> np.ndarray:
    """Softmax (single-label) or sigmoid (multi-label) probabilities, in float64 for stable AUCs."""
    logits = np.asarray(logits, dtype=np.float64)
    if multi_label:
        return 1.0 / (1.0 + np.exp(-logits))
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def classification_metrics(logits: np.ndarray, labels: np.ndarray, multi_label: bool) -> dict[str, float]:
    """ACC, AUC (MedMNIST definitions) and macro F1 from raw logits (N, L) and labels (N,) or (N, L)."""
    scores = scores_from_logits(logits, multi_label)
    metric = load_metric(task_name(scores.shape[1], multi_label))
    references = np.asarray(labels).astype(np.int64)
    return metric.compute(predictions=scores, references=references)


class ComputeMetrics:
    """`compute_metrics` for `Trainer`: `EvalPrediction` (logits, labels) -> accuracy, auc, f1."""

    names = ("accuracy", "auc", "f1")

    def __init__(self, multi_label: bool) -> None:
        self.multi_label = multi_label

    def __call__(self, prediction: EvalPrediction) -> dict[str, float]:
        logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        return classification_metrics(logits, prediction.label_ids, self.multi_label)
