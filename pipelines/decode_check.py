"""Every encoded image of a dataset decoded once before a run starts, its verdict cached.

A JPEG cut short keeps a valid header, and JPEG has no checksum to verify, so the folder check cannot see the
damage: the collator met it only when it decoded the batch, and a file in the validation or test split stopped the
run after training, leaving a model without metrics.json. Decoding everything first costs little next to training,
and a split seen to decode whole (the same files, sizes and modification times, or the same bytes) is not decoded
again. MedMNIST's arrays are pixels already and need nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict, Image

from pipelines.collate import decode
from pipelines.io import atomic_write_json, cache_dir

VERDICTS_FILE = "decoded-splits.json"
BATCH = 256

logger = logging.getLogger(__name__)


def check_images_decode(splits: DatasetDict, mode: str = "RGB") -> None:
    """Decode each encoded image of every split once, unless that split was seen to decode whole before.

    Args:
        splits: Splits whose ``image`` column is `datasets.Image(decode=False)` (folders, Hub); others are skipped.
        mode: The PIL mode the collator will decode to.

    Raises:
        DataError: naming the first image that does not decode (cut short, corrupt, or wider than 8 bits).
    """
    verdicts_path = cache_dir() / VERDICTS_FILE
    verdicts = _read_verdicts(verdicts_path)
    for name, split in splits.items():
        if not isinstance(split.features["image"], Image):
            continue
        stamp = split_stamp(split)
        if stamp in verdicts:
            continue
        logger.info(
            "Decoding the %d images of the %s split once, to find damaged files before training.", len(split), name
        )
        for row, encoded in enumerate(_encoded_images(split)):
            decode(encoded, mode, where=encoded.get("path") or f"Image {row} of the {name} split")
        verdicts[stamp] = len(split)  # the number of images, for a reader of the file
        _save_verdicts(verdicts_path, verdicts)  # per split: a later split's damaged file keeps this verdict


def split_stamp(split: Dataset) -> str:
    """A digest of what the split's images are: each file's path, size and modification time, or its bytes."""
    digest = hashlib.blake2b(digest_size=16)
    for encoded in _encoded_images(split):
        if encoded.get("bytes"):
            digest.update(encoded["bytes"])
        else:
            digest.update(_file_stamp(encoded["path"]).encode())
        digest.update(b"\0")
    return digest.hexdigest()


def _file_stamp(path: str) -> str:
    try:
        status = os.stat(path)
    except OSError:  # gone: decoding it names it
        return f"{path}|missing"
    return f"{Path(path).resolve()}|{status.st_size}|{status.st_mtime_ns}"


def _encoded_images(split: Dataset) -> Any:
    """The split's ``{"path", "bytes"}`` images, read a batch at a time (a Hub split may not fit in memory)."""
    for batch in split.select_columns(["image"]).iter(batch_size=BATCH):
        yield from batch["image"]


def _read_verdicts(path: Path) -> dict[str, int]:
    try:
        verdicts = json.loads(path.read_text())
    except (OSError, ValueError):  # none yet, or unreadable: check again
        return {}
    return verdicts if isinstance(verdicts, dict) else {}


def _save_verdicts(path: Path, verdicts: dict[str, int]) -> None:
    try:
        atomic_write_json(path, verdicts)
    except OSError as error:  # a read-only cache costs the next run's decoding, not this run
        logger.warning("Could not cache which splits decode whole (%s): %s", path, error.strerror or error)
