"""MedMNIST 2D subsets from their official .npz files, as a `datasets.DatasetDict` of uint8 images.

The file is looked for in `data_dir`, then `$MEDMNIST_ROOT`, then `~/.medmnist`, and downloaded (URL and MD5
from `medmnist.INFO`) only when it is missing and the machine is not offline. Its MD5 is checked before its
first use; a verified file is remembered by path, size and modification time so a 12 GB file is hashed once.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from datasets import Array2D, Array3D, ClassLabel, Dataset, DatasetDict, Features, Sequence
from datasets.exceptions import DatasetGenerationError
from medmnist import INFO
from tqdm.auto import tqdm

from pipelines.errors import DataError, OfflineError, is_offline
from pipelines.io import atomic_write_text, cache_dir

SPLITS = {"train": "train", "val": "validation", "test": "test"}
MULTI_LABEL_TASK = "multi-label, binary-class"
# What zipfile, zlib and numpy raise on a damaged .npz (found by tests/test_reliability_fuzz.py): a bad
# checksum or header, an unsupported compression method, version or flag (NotImplementedError), an
# "encrypted" member (RuntimeError), a member cut short (EOFError).
UNREADABLE_NPZ = (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError, zlib.error)
UNREADABLE_NPZ += (NotImplementedError, RuntimeError, OverflowError)


def medmnist_flags() -> list[str]:
    """The 2D MedMNIST subsets this loader supports."""
    return [flag for flag in INFO if not flag.endswith("3d")]


def medmnist_info(flag: str) -> dict:
    if flag not in medmnist_flags():
        raise DataError(f"'{flag}' is not a 2D MedMNIST subset; choose one of {', '.join(medmnist_flags())}.")
    return INFO[flag]


def medmnist_file_name(flag: str, size: int) -> str:
    return f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz"


def medmnist_source(flag: str, size: int) -> tuple[str, str]:
    """The download URL and MD5 that `medmnist.INFO` lists for this subset and size."""
    info = medmnist_info(flag)
    suffix = "" if size == 28 else f"_{size}"
    if f"url{suffix}" not in info:
        raise DataError(f"MedMNIST lists no {size} px release of '{flag}'.")
    return info[f"url{suffix}"], info[f"MD5{suffix}"]


def search_folders(data_dir: str | None) -> list[Path]:
    """Folders searched for a MedMNIST file, in order: `data_dir`, `$MEDMNIST_ROOT`, `~/.medmnist`."""
    folders = [data_dir, os.environ.get("MEDMNIST_ROOT"), str(Path("~/.medmnist").expanduser())]
    return [Path(folder).expanduser() for folder in folders if folder]


def locate_medmnist(flag: str, size: int, data_dir: str | None = None, download: bool = True) -> Path:
    """The path of the subset's .npz, downloading it into `data_dir` (or ~/.medmnist) when missing."""
    name = medmnist_file_name(flag, size)
    folders = search_folders(data_dir)
    for folder in folders:
        if (folder / name).is_file():
            return folder / name
    url, md5 = medmnist_source(flag, size)
    searched = ", ".join(str(folder) for folder in folders)
    missing = f"{name} is not in {searched} (MEDMNIST_ROOT={os.environ.get('MEDMNIST_ROOT', 'unset')})"
    if is_offline() or not download:
        reason = "this machine is offline (HF_HUB_OFFLINE is set)" if is_offline() else "download is off"
        raise OfflineError(
            f"{missing} and {reason}; download it from {url} into one of those folders or set MEDMNIST_ROOT to its folder."
        )
    target = folders[0] if data_dir else folders[-1]
    return _download(url, md5, target / name, missing)


def _download(url: str, md5: str, destination: Path, missing: str) -> Path:
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=30) as response, open(partial, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"download {destination.name}") as bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    bar.update(len(chunk))
    except (urllib.error.URLError, OSError, TimeoutError) as error:
        partial.unlink(missing_ok=True)
        raise OfflineError(
            f"{missing} and downloading {url} failed ({error}); download it by hand into {destination.parent} "
            "or set MEDMNIST_ROOT to its folder."
        ) from None
    verify_md5(partial, md5, shown_name=destination.name)
    os.replace(partial, destination)
    return destination


def verify_md5(path: Path, expected: str, shown_name: str | None = None) -> None:
    """Raise `DataError` unless the file's MD5 is `expected`; a file seen to match is not hashed again."""
    stamp = f"{path.resolve()}|{path.stat().st_size}|{path.stat().st_mtime_ns}"
    verified_file = cache_dir() / "medmnist-md5-verified.json"
    verified = json.loads(verified_file.read_text()) if verified_file.is_file() else {}
    if verified.get(stamp) == expected:
        return
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 22):
            digest.update(chunk)
    if digest.hexdigest() != expected:
        raise DataError(
            f"{shown_name or path} has MD5 {digest.hexdigest()} but MedMNIST lists {expected}; the file is corrupt "
            "or not the official release: delete it and download it again (or set verify_md5 to false for your own file)."
        )
    verified[stamp] = expected
    atomic_write_text(verified_file, json.dumps(verified, indent=1))


def load_medmnist(
    flag: str, size: int = 28, data_dir: str | None = None, download: bool = True, verify: bool = True
) -> DatasetDict:
    """Load a 2D MedMNIST subset as train/validation/test splits of uint8 images at their native size.

    The first load converts the .npz to Arrow files in the datasets cache (keyed by the file's path, size and
    modification time); later loads memory-map them, so even the 224 px subsets need little RAM.

    Args:
        flag: The subset, e.g. ``"breastmnist"`` (see `medmnist_flags()`).
        size: 28, 64, 128 or 224.
        data_dir: A folder searched before `$MEDMNIST_ROOT` and `~/.medmnist`.
        download: Download the file when it is not found (never when offline).
        verify: Check the file's MD5 against `medmnist.INFO`; turn off only for your own files in MedMNIST's format.

    Returns:
        A DatasetDict with columns ``image`` (uint8, (H, W) for grayscale or (H, W, 3)) and ``label``
        (`ClassLabel`, or a `Sequence` of `ClassLabel` holding the present labels for multi-label ChestMNIST).
    """
    info = medmnist_info(flag)
    path = locate_medmnist(flag, size, data_dir, download)
    if verify:
        verify_md5(path, medmnist_source(flag, size)[1])
    names = [info["label"][str(index)] for index in range(len(info["label"]))]
    multi_label = info["task"] == MULTI_LABEL_TASK
    channels = info["n_channels"]
    check_npz(path, size, channels, len(names), multi_label)
    image_feature = Array2D((size, size), "uint8") if channels == 1 else Array3D((size, size, 3), "uint8")
    label_feature = Sequence(ClassLabel(names=names)) if multi_label else ClassLabel(names=names)
    features = Features({"image": image_feature, "label": label_feature})
    stamp = content_stamp(path)
    splits = {}
    for npz_split, split in SPLITS.items():
        try:
            splits[split] = Dataset.from_generator(
                _examples,
                features=features,
                gen_kwargs={
                    "path": str(path.resolve()),
                    "split": npz_split,
                    "multi_label": multi_label,
                    "stamp": stamp,
                },
            )
        except DatasetGenerationError as error:
            cause = error.__cause__ or error
            reason = (str(cause).splitlines() or [""])[0]
            raise DataError(
                f"{path} could not be read ({type(cause).__name__}: {reason}); it is truncated or corrupt: "
                "delete it and download it again."
            ) from None
    return DatasetDict(splits)


def _examples(path: str, split: str, multi_label: bool, stamp: str) -> Iterator[dict]:
    """One split's rows; `stamp` only makes the datasets cache key change when the file does."""
    with np.load(path, allow_pickle=False) as npz:
        images, labels = npz[f"{split}_images"], npz[f"{split}_labels"]
    for image, label in zip(images, labels):
        yield {"image": image, "label": np.flatnonzero(label).tolist() if multi_label else int(label[0])}


def check_npz(path: Path, size: int, channels: int, num_labels: int, multi_label: bool) -> None:
    """Check every key, dtype and shape (from the array headers, without decompressing images) and every label."""
    headers = _read_headers(path)
    for split in SPLITS:
        image_key, label_key = f"{split}_images", f"{split}_labels"
        missing = [key for key in (image_key, label_key) if key not in headers]
        if missing:
            raise DataError(
                f"{path.name} lacks {', '.join(missing)}; a MedMNIST .npz holds train/val/test _images and _labels arrays."
            )
        (image_shape, image_dtype), (label_shape, label_dtype) = headers[image_key], headers[label_key]
        expected = ("N", size, size) if channels == 1 else ("N", size, size, 3)
        if image_dtype != np.uint8:
            raise DataError(f"{path.name}: {image_key} has dtype {image_dtype}; MedMNIST images are uint8.")
        if len(image_shape) != len(expected) or tuple(image_shape[1:]) != expected[1:]:
            raise DataError(
                f"{path.name}: {image_key} has shape {image_shape}, expected {expected} for this subset and size."
            )
        if image_shape[0] == 0:
            raise DataError(f"{path.name}: {image_key} holds no images.")
        width = num_labels if multi_label else 1
        if tuple(label_shape) != (image_shape[0], width):
            raise DataError(
                f"{path.name}: {label_key} has shape {label_shape}, expected ({image_shape[0]}, {width}) to match {image_key}."
            )
        if not np.issubdtype(label_dtype, np.integer):
            raise DataError(f"{path.name}: {label_key} has dtype {label_dtype}; labels must be integers.")
        labels = _read_arrays(path, [label_key])[label_key]
        high = 1 if multi_label else num_labels - 1
        if labels.min() < 0 or labels.max() > high:
            raise DataError(
                f"{path.name}: {label_key} holds values from {labels.min()} to {labels.max()}, outside 0..{high} "
                f"({'0/1 per label' if multi_label else f'{num_labels} label names'})."
            )


def _read_headers(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shape and dtype of each array in an .npz, read from the .npy headers only.

    Each header must also agree with its member's stored size, so that a damaged header can neither describe
    arrays that are not there nor make a reader allocate for them.
    """
    headers = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                with archive.open(info) as stream:
                    version = np.lib.format.read_magic(stream)
                    read_header = {
                        (1, 0): np.lib.format.read_array_header_1_0,
                        (2, 0): np.lib.format.read_array_header_2_0,
                    }.get(version)
                    if read_header is None:
                        raise ValueError(f"{info.filename} uses .npy format version {version}")
                    shape, _, dtype = read_header(stream)
                    data_bytes = info.file_size - stream.tell()
                if dtype.hasobject or math.prod(shape) * dtype.itemsize != data_bytes:
                    raise ValueError(
                        f"{info.filename} holds {data_bytes} data bytes, not a {dtype} array of shape {shape}"
                    )
                headers[info.filename.removesuffix(".npy")] = (shape, dtype)
    except UNREADABLE_NPZ as error:
        raise _unreadable(path, error) from None
    return headers


def _read_arrays(path: Path, keys: list[str]) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in keys}
    except UNREADABLE_NPZ as error:
        raise _unreadable(path, error) from None


def _unreadable(path: Path, error: Exception) -> DataError:
    return DataError(
        f"{path} is not a readable .npz file ({type(error).__name__}: {error}); it is truncated or corrupt: "
        "delete it and download it again."
    )


def content_stamp(path: Path) -> str:
    """Size, modification time and every member's CRC-32: what the Arrow cache is keyed on.

    The CRCs come from the zip's directory (no decompression). Size and time alone can match for a file
    rewritten within one tick of the file system's clock, and the cache would then serve the old contents.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            crcs = "-".join(f"{info.CRC:08x}" for info in archive.infolist())
    except UNREADABLE_NPZ as error:
        raise _unreadable(path, error) from None
    return f"{path.stat().st_size}-{path.stat().st_mtime_ns}-{crcs}"
