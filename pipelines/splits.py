"""Every dataset leaves `pipelines` with exactly `train`, `validation` and `test` splits (`SPLITS`); a split named on
the command line is checked against them here."""

from __future__ import annotations

import logging

from datasets import ClassLabel, Dataset, DatasetDict

from pipelines.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")


def check_split(name: str, given: str | None = None) -> str:
    """`name` when it is one of `SPLITS`; otherwise a one-sentence `ConfigError` naming them (and quoting `given`,
    the option's text, when it held several names)."""
    if name not in SPLITS:
        raise ConfigError(f"split is '{given or name}'; use one of {', '.join(SPLITS)}.")
    return name


SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "validation": "validation",
    "valid": "validation",
    "val": "validation",
    "dev": "validation",
    "test": "test",
    "testing": "test",
}


def standard_splits(
    dataset: DatasetDict, validation_fraction: float = 0.1, test_fraction: float = 0.1, seed: int = 42
) -> DatasetDict:
    """Rename splits to train/validation/test and carve any missing one off train (seeded, stratified).

    Carving takes `test_fraction` of train for a missing test split first, then `validation_fraction` of
    what remains for a missing validation split.
    """
    named: dict[str, Dataset] = {}
    for name, split in dataset.items():
        standard = SPLIT_ALIASES.get(name.lower())
        if standard and standard not in named:
            named[standard] = split
    if "train" not in named:
        raise DataError(f"The dataset has no train split (it has {list(dataset)}); name one 'train'.")
    for missing, fraction in (("test", test_fraction), ("validation", validation_fraction)):
        if missing not in named:
            named["train"], named[missing] = carve(named["train"], fraction, seed)
    return DatasetDict({name: named[name] for name in ("train", "validation", "test")})


def carve(train: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """Split `fraction` of `train` off, stratified by label when every class has at least two images."""
    if len(train) < 2:
        raise DataError(f"The train split has {len(train)} image(s), too few to carve a missing split from.")
    stratify = None
    if isinstance(train.features["label"], ClassLabel):
        counts = {}
        for label in train["label"]:
            counts[label] = counts.get(label, 0) + 1
        carved = round(fraction * len(train))
        reason = unstratified_reason(counts, train.features["label"].names, carved)
        if not reason:
            stratify = "label"
        else:
            # A silent random split of a small or unbalanced dataset can leave whole classes out of the carved
            # split, and its AUC then covers fewer classes (or none): say so, with the reason that applies.
            logger.warning(
                "Carving %d of %d images off train at random, not stratified: %s; give the dataset its own "
                "validation/test splits, or more images per class.",
                carved,
                len(train),
                reason,
            )
    parts = train.train_test_split(test_size=fraction, seed=seed, stratify_by_column=stratify)
    return parts["train"], parts["test"]


def unstratified_reason(counts: dict[int, int], names: list[str], carved: int) -> str:
    """Why a split of `carved` images cannot be stratified over classes with these image `counts` ("" when it can):
    a class with a single image (it cannot be on both sides), and/or fewer carved images than classes."""
    reasons = []
    rarest = min(counts, key=counts.get)
    if counts[rarest] < 2:
        reasons.append(f"class '{names[rarest]}' has a single image (stratifying needs two of each class)")
    if carved < len(counts):
        reasons.append(f"{carved} carved image(s) cannot hold one of each of the {len(counts)} classes")
    return " and ".join(reasons)


def subsample(dataset: Dataset, limit: int | None, seed: int) -> Dataset:
    """A seeded random subset of at most `limit` rows (the dataset itself when `limit` is None)."""
    if limit is None or limit >= len(dataset):
        return dataset
    return dataset.shuffle(seed=seed).select(range(limit))
