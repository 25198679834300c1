"""MedMNIST's evaluation (ACC and AUC as its `medmnist.Evaluator` defines them) plus macro F1, as an `evaluate` module.

Config names are MedMNIST's task names:
- "binary-class": AUC on the positive-class score; ACC and F1 with the positive class at score > 0.5.
- "multi-class" and "ordinal-regression": mean one-vs-rest AUC; ACC and macro F1 of the argmax.
- "multi-label, binary-class": mean per-label AUC; mean per-label ACC and macro F1 at score > 0.5.

Departure from MedMNIST: a class (or label) with only positives or only negatives in the references has no AUC;
it is left out of the mean instead of raising, and the AUC is NaN when no class has both.
"""

import datasets
import evaluate
import numpy as np
from sklearn.metrics import f1_score, roc_auc_score

TASKS = ("binary-class", "multi-class", "ordinal-regression", "multi-label, binary-class")

_DESCRIPTION = __doc__
_KWARGS_DESCRIPTION = """
Args:
    predictions: (N, L) class scores: softmax probabilities (single-label) or sigmoid probabilities (multi-label).
    references: (N,) class indices, or (N, L) 0/1 for multi-label.
    threshold: score above which a binary or multi-label prediction counts as positive (default 0.5).
Returns:
    accuracy, auc, f1 (macro).
"""
_CITATION = """@article{medmnistv2, title={MedMNIST v2 - A large-scale lightweight benchmark for 2D and 3D biomedical
image classification}, author={Yang, Jiancheng and others}, journal={Scientific Data}, volume={10}, pages={41}, year={2023}}"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MedmnistClassification(evaluate.Metric):
    def _info(self):
        if self.config_name not in TASKS:
            raise ValueError(f"config_name is {self.config_name!r}; use one of {TASKS}.")
        multi_label = self.config_name == "multi-label, binary-class"
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Value("float32")),
                    "references": datasets.Sequence(datasets.Value("int32"))
                    if multi_label
                    else datasets.Value("int32"),
                }
            ),
        )

    def _compute(self, predictions, references, threshold=0.5):
        scores = np.asarray(predictions, dtype=np.float64)
        truth = np.asarray(references, dtype=np.int64)
        if self.config_name == "multi-label, binary-class":
            predicted = (scores > threshold).astype(np.int64)
            accuracy = float(np.mean(predicted == truth))  # = mean over labels of per-label accuracy
            auc = _mean_auc(truth, scores)
        elif self.config_name == "binary-class":
            predicted = (scores[:, -1] > threshold).astype(np.int64)
            accuracy = float(np.mean(predicted == truth))
            auc = _mean_auc(truth[:, None] == 1, scores[:, -1:])
        else:
            predicted = scores.argmax(axis=1)
            accuracy = float(np.mean(predicted == truth))
            auc = _mean_auc(truth[:, None] == np.arange(scores.shape[1]), scores)
        f1 = f1_score(truth, predicted, average="macro", zero_division=0)
        return {"accuracy": accuracy, "auc": auc, "f1": float(f1)}


def _mean_auc(truth, scores):
    """Mean ROC AUC over columns of a (N, L) 0/1 truth matrix, skipping columns with a single class present."""
    aucs = [
        roc_auc_score(truth[:, column], scores[:, column])
        for column in range(truth.shape[1])
        if 0 < truth[:, column].sum() < truth.shape[0]
    ]
    return float(np.mean(aucs)) if aucs else float("nan")
