"""MedMNIST .npz loading: real files, generated 3-channel and multi-label files, search order, and bad files."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from medmnist import INFO

import pipelines.medmnist_npz
from pipelines import DataArguments, DataError, ImageCollator, OfflineError, load_image_dataset
from pipelines.medmnist_npz import load_medmnist, locate_medmnist, medmnist_flags, medmnist_source, verify_md5

from helpers.data import make_medmnist_npz, real_medmnist_root, requires_real_medmnist


@requires_real_medmnist
def test_real_breastmnist_splits_labels_and_uint8_images() -> None:
    data = load_image_dataset(DataArguments(dataset_name="breastmnist", data_dir=str(real_medmnist_root())))
    assert {name: len(split) for name, split in data.dataset.items()} == {"train": 546, "validation": 78, "test": 156}
    assert data.label_names == ["malignant", "normal, benign"]
    assert not data.multi_label
    example = data.dataset["train"][0]
    assert example["image"].dtype == np.uint8 and example["image"].shape == (28, 28)
    raw = np.load(real_medmnist_root() / "breastmnist.npz")
    np.testing.assert_array_equal(data.dataset["test"][:5]["image"], raw["test_images"][:5])
    assert data.dataset["test"]["label"][:20] == raw["test_labels"][:20, 0].tolist()


@requires_real_medmnist
def test_real_pneumoniamnist_loads_with_md5_check() -> None:
    data = load_image_dataset(DataArguments(dataset_name="pneumoniamnist", data_dir=str(real_medmnist_root())))
    assert [len(data.dataset[s]) for s in ("train", "validation", "test")] == [4708, 524, 624]
    assert data.label_names == ["normal", "pneumonia"]


def test_three_channel_subset_keeps_rgb_and_collates_to_chw(tmp_path: Path) -> None:
    make_medmnist_npz(tmp_path / "pathmnist_64.npz", flag="pathmnist", size=64)
    data = load_image_dataset(
        DataArguments(dataset_name="pathmnist", medmnist_size=64, data_dir=str(tmp_path), verify_md5=False)
    )
    assert data.label_names == [INFO["pathmnist"]["label"][str(i)] for i in range(9)]
    assert data.dataset["train"][0]["image"].shape == (64, 64, 3)
    batch = ImageCollator(data.num_labels)(data.dataset["train"].__getitems__([0, 1, 2]))
    assert batch["pixel_values"].shape == (3, 3, 64, 64)
    assert batch["pixel_values"].dtype.is_floating_point is False


def test_multi_label_chestmnist_gives_multi_hot_labels(tmp_path: Path) -> None:
    path = make_medmnist_npz(tmp_path / "chestmnist.npz", flag="chestmnist")
    data = load_image_dataset(DataArguments(dataset_name="chestmnist", data_dir=str(tmp_path), verify_md5=False))
    assert data.multi_label and data.num_labels == 14
    raw = np.load(path)
    batch = ImageCollator(14, multi_label=True)(data.dataset["validation"].__getitems__(list(range(5))))
    np.testing.assert_array_equal(batch["labels"].numpy(), raw["val_labels"][:5].astype(np.float32))
    assert batch["pixel_values"].shape == (5, 1, 28, 28)


@pytest.mark.parametrize("size", [28, 64, 128, 224])
def test_every_size_maps_to_its_file_name_and_url(tmp_path: Path, size: int) -> None:
    name = "bloodmnist.npz" if size == 28 else f"bloodmnist_{size}.npz"
    make_medmnist_npz(tmp_path / name, flag="bloodmnist", size=size, counts=(3, 2, 2))
    splits = load_medmnist("bloodmnist", size, str(tmp_path), verify=False)
    assert splits["train"].features["image"].shape == (size, size, 3)
    url, md5 = medmnist_source("bloodmnist", size)
    assert url.split("/")[-1].split("?")[0] == name  # the release file of this size, not the 28 px one
    assert md5 == INFO["bloodmnist"]["MD5" if size == 28 else f"MD5_{size}"]


def test_every_2d_subset_is_supported() -> None:
    assert len(medmnist_flags()) == 12 and "chestmnist" in medmnist_flags()
    assert not any(flag.endswith("3d") for flag in medmnist_flags())


def test_search_order_is_data_dir_then_env_then_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second, home = tmp_path / "first", tmp_path / "env", tmp_path / "home"
    for folder in (first, second, home / ".medmnist"):
        make_medmnist_npz(folder / "breastmnist.npz")
    monkeypatch.setenv("MEDMNIST_ROOT", str(second))
    monkeypatch.setenv("HOME", str(home))
    assert locate_medmnist("breastmnist", 28, str(first)) == first / "breastmnist.npz"
    assert locate_medmnist("breastmnist", 28, None) == second / "breastmnist.npz"
    monkeypatch.delenv("MEDMNIST_ROOT")
    assert locate_medmnist("breastmnist", 28, None) == home / ".medmnist" / "breastmnist.npz"


def test_missing_file_offline_names_file_folders_env_and_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDMNIST_ROOT", str(tmp_path / "env"))
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(OfflineError) as error:
        load_image_dataset(DataArguments(dataset_name="dermamnist", data_dir=str(tmp_path / "given")))
    message = str(error.value)
    for part in (
        "dermamnist.npz",
        str(tmp_path / "given"),
        "MEDMNIST_ROOT",
        str(tmp_path / "env"),
        INFO["dermamnist"]["url"],
    ):
        assert part in message
    assert "offline" in message


def test_md5_mismatch_is_refused(npz_dir: Path) -> None:
    with pytest.raises(DataError, match="MD5"):
        load_image_dataset(DataArguments(dataset_name="breastmnist", data_dir=str(npz_dir)))


def test_md5_verified_once_then_remembered_until_file_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "file.bin"
    path.write_bytes(b"medmnist")
    expected = hashlib.md5(b"medmnist").hexdigest()
    hashed, md5 = [], hashlib.md5
    monkeypatch.setattr(
        pipelines.medmnist_npz.hashlib, "md5", lambda *args: hashed.append(path.read_bytes()) or md5(*args)
    )
    verify_md5(path, expected)
    verify_md5(path, expected)  # remembered: no error, and not hashed again
    assert hashed == [b"medmnist"]
    path.write_bytes(b"changed!")
    with pytest.raises(DataError, match="MD5"):
        verify_md5(path, expected)
    assert hashed == [b"medmnist", b"changed!"]  # a changed file is hashed again, and refused


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"val_labels": None}, "lacks val_labels"),
        ({"train_images": np.zeros((40, 28, 27), np.uint8)}, "shape"),
        ({"train_images": np.zeros((40, 28, 28), np.float32)}, "dtype float32"),
        ({"test_labels": np.full((16, 1), 2, np.uint8)}, "outside 0..1"),
        ({"val_labels": np.zeros((11, 1), np.uint8)}, "expected \\(12, 1\\)"),
        ({"train_images": np.zeros((0, 28, 28), np.uint8), "train_labels": np.zeros((0, 1), np.uint8)}, "no images"),
    ],
)
def test_bad_npz_contents_end_in_one_clear_sentence(tmp_path: Path, override: dict, message: str) -> None:
    make_medmnist_npz(tmp_path / "breastmnist.npz", **override)
    with pytest.raises(DataError, match=message) as error:
        load_medmnist("breastmnist", 28, str(tmp_path), verify=False)
    assert "\n" not in str(error.value)


def test_truncated_npz_is_reported_as_corrupt(npz_dir: Path) -> None:
    path = npz_dir / "breastmnist.npz"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataError, match="truncated or corrupt"):
        load_medmnist("breastmnist", 28, str(npz_dir), verify=False)


def test_unknown_flag_lists_the_subsets() -> None:
    with pytest.raises(DataError, match="pathmnist"):
        load_medmnist("nosuchmnist")
