"""What `python -m explain` and the explorer explain: image files, or images of a dataset split with their labels.

Images stay uint8 at their native size, as the collator batches them for training; each model's own preprocessing
makes its inputs from them (`explain.explainer.Explainer.pixel_values`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pipelines.arguments import DataArguments
from pipelines.collate import ImageCollator, to_chw_uint8
from pipelines.errors import DataError
from pipelines.folders import check_image_file
from pipelines.labels import label_text
from pipelines.loading import load_image_dataset


@dataclass
class Inputs:
    """The images to explain and what is known about them.

    Attributes:
        images: uint8 (B, C, H, W), or a list of uint8 (C, H, W) of different sizes.
        names: Where each image comes from (``test[12]``, or a file path as given).
        labels: int64 (B,) or multi-hot (B, L) true labels, or None for files.
        label_names: The dataset's label names, or None for files.
    """

    images: torch.Tensor | list[torch.Tensor]
    names: list[str]
    labels: torch.Tensor | None = None
    label_names: list[str] | None = None


def load_image_files(paths: Sequence[str], num_channels: int) -> Inputs:
    """Image files as uint8 tensors, converted to grey or RGB to match the model.

    Raises:
        DataError: a path that is missing, a folder, or not an image that decodes fully.
    """
    mode = "L" if num_channels == 1 else "RGB"
    images = []
    for path in paths:
        if Path(path).is_dir():
            raise DataError(
                f"{path} is a folder; give its image files ({path}/*.jpg), or explain it as a dataset "
                f"(--dataset_source folder --data_dir {path})."
            )
        if not Path(path).is_file():
            raise DataError(f"Image file {path} does not exist.")
        check_image_file(Path(path))
        images.append(to_chw_uint8({"path": str(path)}, mode))  # decoded as in training: upright, fully, or named
    shapes = {tuple(image.shape) for image in images}
    stacked = torch.stack(images) if len(shapes) == 1 else images
    # Paths as given: base names alone would make a/x.png and b/x.png the same entry of index.json.
    return Inputs(stacked, [str(path) for path in paths])


def spread_over_classes(labels: np.ndarray, count: int) -> list[int]:
    """`count` indices taken in turn from each class (in index order), so every class appears when it can."""
    if labels.ndim > 1:  # multi-label: no single class to spread over
        return list(range(min(count, len(labels))))
    queues = [list(np.flatnonzero(labels == label)) for label in np.unique(labels)]
    chosen: list[int] = []
    while len(chosen) < min(count, len(labels)):
        for queue in queues:
            if queue and len(chosen) < count:
                chosen.append(int(queue.pop(0)))
    return sorted(chosen)


@dataclass
class LabelledSplit:
    """One split of a dataset, with what it takes to batch its images and name its labels.

    Attributes:
        name: The split's name (``test``).
        rows: The split (a `datasets.Dataset` with ``image`` and ``label`` columns).
        collator: Batches its rows as uint8 images and label tensors.
        label_names: The dataset's class names.
        multi_label: Whether each image has a set of labels.
    """

    name: str
    rows: Any
    collator: ImageCollator
    label_names: list[str]
    multi_label: bool

    def labels(self) -> torch.Tensor:
        """Every label of the split: int64 (N,) classes, or multi-hot (N, L) for multi-label data."""
        return self.collator.labels([{"label": label} for label in self.rows["label"]])

    def take(self, indices: Sequence[int]) -> Inputs:
        """The images at `indices`, named ``<split>[<index>]``, with their labels."""
        batch = self.collator([self.rows[int(index)] for index in indices])
        names = [f"{self.name}[{index}]" for index in indices]
        return Inputs(batch["pixel_values"], names, batch["labels"], self.label_names)


def load_split(data_args: DataArguments, name: str, model: nn.Module) -> LabelledSplit:
    """One split of the dataset `data_args` describes, checked to have the model's number of classes."""
    return load_splits(data_args, [name], model)[name]


def load_splits(data_args: DataArguments, names: Sequence[str], model: nn.Module) -> dict[str, LabelledSplit]:
    """`load_split` for several splits of one dataset, loaded once."""
    data = load_image_dataset(data_args)
    num_labels = model.config.num_labels
    if data.num_labels != num_labels:
        raise DataError(
            f"The model has {num_labels} classes but the dataset has {data.num_labels} ({', '.join(data.label_names)}); "
            "explain it on the dataset it was trained for."
        )
    collator = ImageCollator(data.num_labels, data.multi_label, data_args.image_mode)
    return {
        name: LabelledSplit(name, data.dataset[name], collator, data.label_names, data.multi_label) for name in names
    }


def true_texts(inputs: Inputs) -> list[str] | None:
    """Each image's true label, or for multi-label data its comma-separated label set; None for image files."""
    if inputs.labels is None:
        return None
    return [label_text(label, inputs.label_names) for label in inputs.labels]
