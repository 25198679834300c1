"""One call from a dataset spec to train/validation/test splits of uint8 images and their label names."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from datasets import Array2D, Array3D, Dataset, DatasetDict

from pipelines.arguments import DataArguments
from pipelines.decode_check import check_images_decode
from pipelines.errors import DataError
from pipelines.folders import load_image_folder
from pipelines.hub_datasets import load_hub_dataset
from pipelines.labels import is_multi_label, label_names
from pipelines.medmnist_npz import load_medmnist
from pipelines.splits import standard_splits, subsample


@dataclass(frozen=True)
class ImageData:
    """A loaded dataset: `dataset` has train/validation/test splits with `image` and `label` columns."""

    dataset: DatasetDict
    label_names: list[str]
    multi_label: bool

    @property
    def num_labels(self) -> int:
        return len(self.label_names)


def load_image_dataset(args: DataArguments) -> ImageData:
    """Load the dataset `args` describes (MedMNIST, Hub or folder) with standard splits and label names."""
    if args.dataset_source == "medmnist":
        raw = load_medmnist(args.dataset_name, args.medmnist_size, args.data_dir, args.download, args.verify_md5)
    elif args.dataset_source == "hub":
        raw = load_hub_dataset(
            args.dataset_name, args.dataset_config_name, args.image_column, args.label_column, args.class_names
        )
    else:
        raw = load_image_folder(args.data_dir, args.class_names)
    # What was loaded: a folder's data_dir, even when a leftover dataset_name (from the YAML it was adapted from) is set.
    refuse_single_class(raw["train"], args.data_dir if args.dataset_source == "folder" else args.dataset_name)
    splits = standard_splits(raw, args.validation_split_fraction, args.test_split_fraction, args.split_seed)
    splits = DatasetDict(
        {
            name: subsample(
                split, args.max_train_samples if name == "train" else args.max_eval_samples, args.split_seed
            )
            for name, split in splits.items()
        }
    )
    for name, split in splits.items():
        if len(split) == 0:
            raise DataError(f"The {name} split is empty; add images or lower the split fractions.")
    check_images_decode(splits, args.image_mode)  # a damaged file fails now, named, not after training
    return ImageData(with_uint8_format(splits), label_names(splits["train"]), is_multi_label(splits["train"]))


def refuse_single_class(train: Dataset, source: str) -> None:
    """A single-label classifier needs two classes: with one, its loss is 0 from the first step and AUC undefined."""
    if is_multi_label(train):
        return
    names = label_names(train)
    present = sorted({int(label) for label in train["label"]})
    if len(names) < 2 or len(present) < 2:
        found = ", ".join(names[label] for label in present)
        raise DataError(
            f"{source} has training images of one class only ({found}); a classifier needs at least two classes."
        )


def with_uint8_format(data: DatasetDict | Dataset) -> DatasetDict | Dataset:
    """Array images come out of the dataset as uint8 numpy arrays (datasets' default would widen them to int64).

    Apply it again after `add_column`: datasets adds a new column to the formatted ones, and would cast it
    to uint8 too.
    """
    features = (data["train"] if isinstance(data, DatasetDict) else data).features
    if isinstance(features["image"], (Array2D, Array3D)):
        return data.with_format("numpy", columns=["image"], dtype=np.uint8, output_all_columns=True)
    return data
