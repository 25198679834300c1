"""Image folders as a `datasets.DatasetDict`.

Two layouts, each with or without `train/ val/ test/` split folders:
- class per subfolder: `root/[split/]<class name>/<any name>.jpg`;
- label in the file name: `root/[split/]<label>_<id>.jpg`, where `<label>` is a class index into
  `class_names` (as in `0_cafefa5f.jpg` for class 0) or a class name.
Images stay encoded on disk (`datasets.Image(decode=False)`); the collator decodes each batch.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

from datasets import ClassLabel, Dataset, DatasetDict, Features, Image
from PIL import Image as PILImage

from pipelines.collate import deep_pixels_message, is_8_bit, pil_reason
from pipelines.errors import DataError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
MAX_LABELS_SHOWN = 20  # a warning naming the labels found stays a few lines long
SPLIT_FOLDERS = {
    "train": "train",
    "val": "validation",
    "valid": "validation",
    "validation": "validation",
    "test": "test",
}

logger = logging.getLogger(__name__)


def load_image_folder(root: str | Path, class_names: list[str] | None = None) -> DatasetDict:
    """Load an image folder in either layout (see the module docstring).

    Args:
        root: The folder.
        class_names: Class names in label order. Required when file names carry integer labels; with class
            subfolders it fixes the label order (default: sorted folder names).

    Returns:
        A DatasetDict with the splits found (``train`` alone when there are no split folders), columns ``image``
        (file paths, decoded later) and ``label`` (`ClassLabel`).
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"Image folder {root} does not exist or is not a folder.")
    split_dirs = {
        SPLIT_FOLDERS[child.name.lower()]: child
        for child in sorted(root.iterdir())
        if child.is_dir() and child.name.lower() in SPLIT_FOLDERS
    }
    if not split_dirs:
        split_dirs = {"train": root}
    files = {split: _list_split(folder) for split, folder in split_dirs.items()}
    if not any(files.values()):
        raise DataError(
            f"{root} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))}); expected class subfolders or "
            "'<label>_<id>.jpg' files, optionally inside train/ val/ test/ folders."
        )
    by_subfolder = any(path.parent != folder for split, folder in split_dirs.items() for path in files[split])
    if by_subfolder:
        _refuse_files_beside_class_folders(split_dirs, files)
        names = class_names or sorted({path.parent.name for paths in files.values() for path in paths})
        labels = {split: [_subfolder_label(path, names) for path in paths] for split, paths in files.items()}
    else:
        found = Counter(_file_label_text(path) for paths in files.values() for path in paths)
        names = class_names or sorted(found, key=lambda label: (not label.isdigit(), len(label), label))
        if not class_names:
            _say_which_labels_became_classes(root, names, found)
        labels = {split: [_file_name_label(path, names) for path in paths] for split, paths in files.items()}
    features = Features({"image": Image(decode=False), "label": ClassLabel(names=list(names))})
    return DatasetDict(
        {
            split: Dataset.from_dict(
                {"image": [str(path) for path in paths], "label": labels[split]}, features=features
            )
            for split, paths in files.items()
            if paths
        }
    )


def _list_split(folder: Path) -> list[Path]:
    """Image files directly in `folder` or one level down, each checked to open as an image.

    Hidden files and folders are skipped, as `datasets`' imagefolder does: `.ipynb_checkpoints/` or macOS's
    `._photo.jpg` would otherwise become a class or stop the run.
    """
    candidates = sorted(folder.glob("*")) + sorted(folder.glob("*/*"))
    paths = [
        path
        for path in candidates
        if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not _is_hidden(path.relative_to(folder))
    ]
    for path in paths:
        check_image_file(path)
    return paths


def _is_hidden(relative: Path) -> bool:
    return any(part.startswith(".") or part == "__MACOSX" for part in relative.parts)


def _refuse_files_beside_class_folders(split_dirs: dict[str, Path], files: dict[str, list[Path]]) -> None:
    """In the class-per-subfolder layout an image directly in a split folder has no class: its label would be
    the split folder's own name, an extra class made of stray files."""
    for split, folder in split_dirs.items():
        stray = [path for path in files[split] if path.parent == folder]
        if stray:
            others = f" (and {len(stray) - 1} more)" if len(stray) > 1 else ""
            raise DataError(
                f"{stray[0]}{others} sits directly in {folder}, beside its class subfolders; move it into the "
                "folder of its class, or out of the dataset."
            )


def check_image_file(path: Path) -> None:
    """Raise `DataError` unless PIL recognises the file, its header and checksums are intact, and it has 8-bit pixels.

    Damage that only decoding reveals (a JPEG cut short: JPEG has no checksums to verify) is caught, with the
    file named, when `pipelines.decode_check` decodes every image before the run.
    """
    try:
        with PILImage.open(path) as image:
            mode = image.mode
            image.verify()
    # PIL's format plugins raise many types on malformed files (struct.error, IndexError, DecompressionBombError...).
    except Exception as error:
        raise DataError(f"{path} is not a readable image ({pil_reason(error)}); remove or replace it.") from None
    if not is_8_bit(mode):
        raise DataError(deep_pixels_message(path, mode))


def _say_which_labels_became_classes(root: Path, names: list[str], found: Counter) -> None:
    """Without class_names, whatever the file names hold becomes a class: a stray `4_x.jpg` beside labels 0-3 is a
    fifth class, silently. Name the labels found, with their counts, so that such a one stands out."""
    shown = ", ".join(f"'{name}' ({found[name]})" for name in names[:MAX_LABELS_SHOWN])
    more = f" and {len(names) - MAX_LABELS_SHOWN} more" if len(names) > MAX_LABELS_SHOWN else ""
    logger.warning(
        "%s: no class_names given, so the %d labels found in the file names became the classes, in this order "
        "(files): %s%s; give class_names in label order if that is not what you meant (a label outside them is "
        "then refused).",
        root,
        len(names),
        shown,
        more,
    )


def _subfolder_label(path: Path, names: list[str]) -> int:
    if path.parent.name not in names:
        raise DataError(f"{path}: its folder '{path.parent.name}' is not among the class names {names}.")
    return names.index(path.parent.name)


def _file_label_text(path: Path) -> str:
    label, separator, _ = path.stem.partition("_")
    if not separator or not label:
        raise DataError(f"{path}: a file directly in a split folder must be named '<label>_<id>{path.suffix}'.")
    return label


def _file_name_label(path: Path, names: list[str]) -> int:
    label = _file_label_text(path)
    if label in names:
        return names.index(label)
    if label.isdigit() and int(label) < len(names):
        return int(label)
    raise DataError(f"{path}: label '{label}' is outside the class names {names} (give class_names in label order).")
