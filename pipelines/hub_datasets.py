"""Hugging Face Hub datasets (or local dataset repos) as a `datasets.DatasetDict` with `image`/`label` columns."""

from __future__ import annotations

from pathlib import Path

import datasets
from datasets import ClassLabel, DatasetDict, Image, Sequence

from pipelines.errors import DataError, OfflineError, is_offline

# Files `save_to_disk` writes at a folder's top: a DatasetDict's index, or a lone Dataset's state.
SAVED_TO_DISK_MARKERS = ("dataset_dict.json", "state.json")


def load_hub_dataset(
    name: str,
    config_name: str | None = None,
    image_column: str = "image",
    label_column: str = "label",
    class_names: list[str] | None = None,
) -> DatasetDict:
    """Load a Hub dataset by id (from the local cache when offline) and keep only its images and labels.

    Args:
        name: A Hub dataset id such as ``"cifar10"``, a local folder laid out like a dataset repo, or a folder
            written by `save_to_disk` (a DatasetDict, or a Dataset, which becomes the train split).
        config_name: The dataset's config, if it has several.
        image_column: The column holding images (``"img"`` for cifar10).
        label_column: The column holding labels: a `ClassLabel`, a `Sequence` of `ClassLabel` (multi-label), or
            integers, in which case `class_names` gives their names.
        class_names: Names for integer labels.

    Returns:
        A DatasetDict with the dataset's own splits and columns ``image`` (encoded, decoded per batch) and ``label``.
    """
    raw = _load_raw(name, config_name)
    if not isinstance(raw, DatasetDict):
        raise DataError(f"Hub dataset '{name}' did not load as a DatasetDict of splits.")
    first = next(iter(raw.values()))
    missing = [column for column in (image_column, label_column) if column not in first.column_names]
    if missing:
        raise DataError(
            f"Hub dataset '{name}' has no column {', '.join(repr(c) for c in missing)}; its columns are "
            f"{first.column_names}: set image_column and label_column."
        )
    raw = raw.select_columns([image_column, label_column])
    renames = {old: new for old, new in ((image_column, "image"), (label_column, "label")) if old != new}
    if renames:
        raw = raw.rename_columns(renames)
    if isinstance(raw[next(iter(raw))].features["image"], Image):
        raw = raw.cast_column("image", Image(decode=False))
    return _with_named_labels(raw, name, class_names)


def _load_raw(name: str, config_name: str | None) -> DatasetDict | datasets.Dataset:
    """`load_dataset` for Hub ids and dataset repos; `load_from_disk` for a folder written by `save_to_disk` (a
    lone Dataset becomes the train split)."""
    local = Path(name).expanduser()
    if local.is_dir() and any((local / marker).is_file() for marker in SAVED_TO_DISK_MARKERS):
        loaded = datasets.load_from_disk(str(local))
        return DatasetDict({"train": loaded}) if isinstance(loaded, datasets.Dataset) else loaded
    try:
        return datasets.load_dataset(name, config_name)
    except Exception as error:  # datasets raises many types for "not found" / "no connection"
        reason = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        if local.exists():
            raise DataError(f"Dataset folder {local} could not be loaded ({reason}).") from None
        if name.startswith(("/", ".", "~")):
            raise DataError(f"Dataset folder {local} does not exist.") from None
        if is_offline():
            raise OfflineError(
                f"Hub dataset '{name}' is not in the local datasets cache ({datasets.config.HF_DATASETS_CACHE}) and "
                "HF_HUB_OFFLINE is set, so it cannot be downloaded; run once online to cache it."
            ) from None
        raise DataError(f"Hub dataset '{name}' could not be loaded: {reason}") from None


def _with_named_labels(raw: DatasetDict, name: str, class_names: list[str] | None) -> DatasetDict:
    feature = next(iter(raw.values())).features["label"]
    if isinstance(feature, ClassLabel) or (isinstance(feature, Sequence) and isinstance(feature.feature, ClassLabel)):
        return raw
    if not class_names:
        raise DataError(
            f"Hub dataset '{name}' stores labels as {feature}, not named classes; give class_names in label order."
        )
    for split, dataset in raw.items():
        labels = dataset["label"]
        bad = [label for label in labels if not isinstance(label, int) or not 0 <= label < len(class_names)]
        if bad:
            raise DataError(
                f"Hub dataset '{name}', split '{split}': label {bad[0]!r} is outside the {len(class_names)} class names."
            )
    return raw.cast_column("label", ClassLabel(names=list(class_names)))
