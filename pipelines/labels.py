"""Labels in words and the decision rule: a dataset's or a model's class names, what a label (a class index or a
multi-hot row) says in words, and which classes a model's logits predict.

Single-label: the predicted class is the argmax. Multi-label: every label whose logit is above 0 (probability above
0.5), as MedMNIST's evaluator decides (see trainers/metric_scripts/medmnist_classification.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from datasets import ClassLabel, Dataset
from datasets import Sequence as SequenceFeature
from transformers import PreTrainedModel

from pipelines.errors import DataError

Array = np.ndarray | torch.Tensor


def is_multi_label(dataset: Dataset) -> bool:
    return isinstance(dataset.features["label"], SequenceFeature)


def label_names(dataset: Dataset) -> list[str]:
    """A dataset's class names in label order (its `ClassLabel`, or the `ClassLabel` inside a multi-label list)."""
    feature = dataset.features["label"]
    feature = feature.feature if isinstance(feature, SequenceFeature) else feature
    if not isinstance(feature, ClassLabel):
        raise DataError(f"The label column is {feature}, not named classes.")
    return list(feature.names)


def model_label_names(model: PreTrainedModel) -> list[str]:
    """A classifier's class names in output order (its config's id2label; an index without a name as the index)."""
    id2label = {int(key): value for key, value in model.config.id2label.items()}
    return [str(id2label.get(index, index)) for index in range(model.config.num_labels)]


def is_multi_label_model(model: torch.nn.Module) -> bool:
    """Whether the model was trained multi-label (its config says so); False for a model without a config."""
    return getattr(getattr(model, "config", None), "problem_type", None) == "multi_label_classification"


def label_text(label: Any, names: Sequence[str]) -> str:
    """A label in words: a class index as its name; a multi-hot row (multi-label) as its names, comma-separated, or
    ``none`` when no label is present."""
    values = np.asarray(label.cpu() if isinstance(label, torch.Tensor) else label)
    if values.ndim == 0:
        return str(names[int(values)])
    return ", ".join(name for name, present in zip(names, values) if present) or "none"


def predicted_classes(logits: Array, multi_label: bool) -> Array:
    """The prediction of logits (N, L): the argmax class (N,), or 0/1 per label (N, L) at logit > 0 for
    multi-label; numpy in, numpy out, torch in, torch out."""
    if multi_label:
        return (logits > 0).astype(np.int64) if isinstance(logits, np.ndarray) else (logits > 0).long()
    return logits.argmax(axis=1) if isinstance(logits, np.ndarray) else logits.argmax(dim=1)
