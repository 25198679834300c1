"""Image folders (class subfolders, '{label}_{id}.jpg' names), Hub datasets, and split carving."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pytest
from datasets import ClassLabel, Dataset, Features, Image
from PIL import Image as PILImage

from pipelines import DataArguments, DataError, ImageCollator, OfflineError, load_image_dataset
from pipelines.folders import load_image_folder

PLANTS = ["Rudo", "Baya", "Greg", "Yuki"]


def save_image(path: Path, value: int, size: tuple[int, int] = (20, 16), mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = 3 if mode == "RGB" else 1
    array = np.full((size[1], size[0], channels), value, np.uint8).squeeze()
    PILImage.fromarray(array, mode=mode).save(path)


def test_flat_label_in_file_name_with_split_folders(tmp_path: Path) -> None:
    for split, count in (("train", 3), ("val", 2), ("test", 1)):
        for label in range(4):
            for index in range(count):
                save_image(tmp_path / split / f"{label}_{split}{index}abc.jpg", 60 * label)
    data = load_image_dataset(DataArguments(dataset_source="folder", data_dir=str(tmp_path), class_names=PLANTS))
    assert data.label_names == PLANTS
    assert [len(data.dataset[s]) for s in ("train", "validation", "test")] == [12, 8, 4]
    train = data.dataset["train"]
    for example in train:
        assert Path(example["image"]["path"]).name.startswith(f"{example['label']}_")
    batch = ImageCollator(4)(train.__getitems__([0, 5]))
    assert batch["pixel_values"].shape == (2, 3, 16, 20) and batch["pixel_values"].dtype.itemsize == 1
    # JPEG is lossy; the decoded value still identifies the class the file name gave.
    assert abs(int(batch["pixel_values"][1].float().mean()) - 60 * int(batch["labels"][1])) <= 3


def test_class_subfolders_without_split_folders_carve_seeded_stratified_splits(tmp_path: Path) -> None:
    for name in ("cat", "dog"):
        for index in range(20):
            save_image(tmp_path / name / f"{index}.png", 100 if name == "dog" else 10)
    args = DataArguments(dataset_source="folder", data_dir=str(tmp_path), validation_split_fraction=0.2)
    data = load_image_dataset(args)
    again = load_image_dataset(args)
    assert data.label_names == ["cat", "dog"]
    assert [len(data.dataset[s]) for s in ("train", "validation", "test")] == [28, 8, 4]
    assert sorted(data.dataset["validation"]["label"]) == [0, 0, 0, 0, 1, 1, 1, 1]
    assert data.dataset["validation"]["image"] == again.dataset["validation"]["image"]
    all_paths = [p["path"] for s in data.dataset.values() for p in s["image"]]
    assert len(set(all_paths)) == 40


def test_a_split_that_cannot_be_stratified_is_carved_at_random_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for name, count in (("benign", 10), ("malignant", 10), ("rare", 1)):
        for index in range(count):
            save_image(tmp_path / name / f"{index}.png", 10 * len(name))
    args = DataArguments(dataset_source="folder", data_dir=str(tmp_path), validation_split_fraction=0.2)
    with caplog.at_level(logging.WARNING, logger="pipelines.splits"):
        data = load_image_dataset(args)
    assert sum(len(split) for split in data.dataset.values()) == 21
    warnings = [record.getMessage() for record in caplog.records if record.name == "pipelines.splits"]
    assert len(warnings) == 2  # test carved first, then validation: neither can hold every class stratified
    assert (
        "not stratified: class 'rare' has a single image (stratifying needs two of each class) and 2 carved "
        "image(s) cannot hold one of each of the 3 classes"
    ) in warnings[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pipelines.splits"):
        test_class_subfolders_without_split_folders_carve_seeded_stratified_splits(tmp_path / "balanced")
    assert not [record for record in caplog.records if record.name == "pipelines.splits"]


def test_mixed_image_sizes_collate_to_a_list(tmp_path: Path) -> None:
    save_image(tmp_path / "train" / "a" / "1.png", 5, size=(10, 10))
    save_image(tmp_path / "train" / "a" / "2.png", 5, size=(12, 8))
    splits = load_image_folder(tmp_path)
    batch = ImageCollator(1)(list(splits["train"]))
    assert isinstance(batch["pixel_values"], list)
    assert [tuple(t.shape) for t in batch["pixel_values"]] == [(3, 10, 10), (3, 8, 12)]


def test_grayscale_mode_keeps_one_channel(tmp_path: Path) -> None:
    save_image(tmp_path / "train" / "x" / "1.png", 7, mode="L")
    splits = load_image_folder(tmp_path)
    batch = ImageCollator(1, image_mode="L")(list(splits["train"]))
    assert batch["pixel_values"].shape == (1, 1, 16, 20)


def test_empty_folder_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "train" / "cats").mkdir(parents=True)
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match="holds no images"):
        load_image_folder(tmp_path)


def test_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_image_folder(tmp_path / "nope")


def test_unreadable_image_is_named(tmp_path: Path) -> None:
    save_image(tmp_path / "a" / "good.png", 1)
    (tmp_path / "a" / "bad.jpg").write_bytes(b"not really a jpeg")
    with pytest.raises(DataError, match="bad.jpg is not a readable image"):
        load_image_folder(tmp_path)


def test_label_outside_class_names_is_named(tmp_path: Path) -> None:
    save_image(tmp_path / "train" / "0_a.jpg", 1)
    save_image(tmp_path / "train" / "7_b.jpg", 1)
    with pytest.raises(DataError, match="7_b.jpg: label '7' is outside the class names"):
        load_image_folder(tmp_path, class_names=PLANTS)


def test_hidden_files_and_folders_are_skipped(tmp_path: Path) -> None:
    for name in ("cat", "dog"):
        save_image(tmp_path / name / "1.png", 10)
    save_image(tmp_path / ".ipynb_checkpoints" / "1-checkpoint.png", 10)
    save_image(tmp_path / "cat" / "._1.png", 10)  # macOS metadata, not an image PIL can open
    (tmp_path / "cat" / "._2.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    splits = load_image_folder(tmp_path)
    assert splits["train"].features["label"].names == ["cat", "dog"]
    assert sorted(Path(image["path"]).name for image in splits["train"]["image"]) == ["1.png", "1.png"]


def test_stray_image_beside_class_folders_is_refused(tmp_path: Path) -> None:
    for name in ("cat", "dog"):
        save_image(tmp_path / name / "1.png", 10)
    save_image(tmp_path / "readme_picture.png", 10)
    with pytest.raises(DataError, match="readme_picture.png sits directly in .*beside its class subfolders"):
        load_image_folder(tmp_path)


@pytest.mark.parametrize("class_names", [None, ["cat", "dog"]])
def test_training_images_of_one_class_are_refused(tmp_path: Path, class_names: list[str] | None) -> None:
    for index in range(6):
        save_image(tmp_path / "cat" / f"{index}.png", 10)
    args = DataArguments(dataset_source="folder", data_dir=str(tmp_path), class_names=class_names)
    with pytest.raises(DataError, match=r"one class only \(cat\); a classifier needs at least two classes"):
        load_image_dataset(args)


def _cifar_like_repo(root: Path) -> Path:
    """A local dataset repo laid out like cifar10 on the Hub (parquet shards, `img`/`label` columns)."""
    features = Features({"img": Image(), "label": ClassLabel(names=["airplane", "automobile", "bird"])})
    rng = np.random.default_rng(0)
    for split, count in (("train", 12), ("test", 6)):
        images = [PILImage.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)) for _ in range(count)]
        dataset = Dataset.from_dict({"img": images, "label": [i % 3 for i in range(count)]}, features=features)
        (root / "plain_text").mkdir(parents=True, exist_ok=True)
        dataset.to_parquet(str(root / "plain_text" / f"{split}-00000-of-00001.parquet"))
    return root


def test_hub_style_dataset_with_custom_columns_and_carved_validation(tmp_path: Path) -> None:
    repo = _cifar_like_repo(tmp_path / "cifar_like")
    args = DataArguments(
        dataset_source="hub", dataset_name=str(repo), image_column="img", validation_split_fraction=0.25
    )
    data = load_image_dataset(args)
    assert data.label_names == ["airplane", "automobile", "bird"]
    assert [len(data.dataset[s]) for s in ("train", "validation", "test")] == [9, 3, 6]
    assert data.dataset["train"].column_names == ["image", "label"]
    batch = ImageCollator(3)(data.dataset["test"].__getitems__([0, 1]))
    assert batch["pixel_values"].shape == (2, 3, 32, 32)


def test_hub_dataset_missing_column_lists_the_columns(tmp_path: Path) -> None:
    repo = _cifar_like_repo(tmp_path / "cifar_like")
    with pytest.raises(DataError, match="has no column 'image'.*'img'"):
        load_image_dataset(DataArguments(dataset_source="hub", dataset_name=str(repo)))


def test_uncached_hub_dataset_offline_fails_at_once() -> None:
    start = time.perf_counter()
    with pytest.raises(OfflineError, match="HF_HUB_OFFLINE"):
        load_image_dataset(DataArguments(dataset_source="hub", dataset_name="someone/never-cached-dataset"))
    assert time.perf_counter() - start < 10


@pytest.mark.parametrize("lone_dataset", [False, True])
def test_dataset_saved_to_disk_loads_by_path(tmp_path: Path, lone_dataset: bool) -> None:
    repo = _cifar_like_repo(tmp_path / "cifar_like")
    saved = load_image_dataset(DataArguments(dataset_source="hub", dataset_name=str(repo), image_column="img")).dataset
    (saved["train"] if lone_dataset else saved).save_to_disk(str(tmp_path / "saved"))
    data = load_image_dataset(DataArguments(dataset_source="hub", dataset_name=str(tmp_path / "saved")))
    assert data.label_names == ["airplane", "automobile", "bird"]
    assert sum(len(split) for split in data.dataset.values()) == len(saved["train"]) + (
        0 if lone_dataset else len(saved["validation"]) + len(saved["test"])
    )


def test_missing_local_dataset_folder_is_not_blamed_on_offline_mode(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="Dataset folder .*nowhere does not exist"):
        load_image_dataset(DataArguments(dataset_source="hub", dataset_name=str(tmp_path / "nowhere")))
