"""Fuzzed loaders: every malformed MedMNIST file or image folder ends in one clear `DataError`, or loads exactly.

Each property has an oracle: the test knows whether the input it built is valid. A valid input must load with
exactly the arrays (or pixels) that went in; an invalid one must raise `DataError`, one line, naming the file. A
crash inside numpy, zipfile, PIL or datasets fails the property, and so does a dataset that loads but is wrong.
"""

from __future__ import annotations

import functools
import io
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image as PILImage
from torch.utils.data import DataLoader

from pipelines import DataError, ImageCollator
from pipelines.collate import to_chw_uint8
from pipelines.errors import run_cli
from pipelines.folders import IMAGE_EXTENSIONS, load_image_folder
from pipelines.medmnist_npz import load_medmnist

from helpers.data import make_medmnist_npz

# Derandomized: CI sees the same examples every run (no flaky failures), and no example database is written.
FUZZ = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# flag: (channels, number of labels, multi-label)
FLAGS = {"breastmnist": (1, 2, False), "pathmnist": (3, 9, False), "chestmnist": (1, 14, True)}
IMAGE_DTYPES = [np.uint8, np.int8, np.uint16, np.int32, np.float32, np.float64, np.bool_]
LABEL_DTYPES = [np.uint8, np.int64, np.int8, np.uint16, np.float32, np.bool_]


def assert_clear(error: DataError, *names: str) -> None:
    message = str(error)
    assert "\n" not in message and message.strip(), message
    for name in names:
        assert name in message, (name, message)


# ---------------------------------------------------------------- MedMNIST .npz: array contents


@dataclass
class NpzCase:
    flag: str
    fault: str
    arrays: dict[str, np.ndarray]
    compressed: bool
    valid: bool


NPZ_FAULTS = [
    "none",
    "none",
    "none",
    "image dtype",
    "image shape",
    "zero-sized",
    "label count",
    "label shape",
    "label dtype",
    "label value",
    "missing array",
]


@st.composite
def npz_cases(draw: st.DrawFn) -> NpzCase:
    """A file in MedMNIST's format with random contents and at most one fault, in one of its three splits.

    Whether the file is valid is decided from the arrays themselves (a drawn "fault" can happen to be harmless).
    """
    flag = draw(st.sampled_from(sorted(FLAGS)))
    channels, num_labels, multi_label = FLAGS[flag]
    width, high = (num_labels, 1) if multi_label else (1, num_labels - 1)
    fault, faulty_split = draw(st.sampled_from(NPZ_FAULTS)), draw(st.sampled_from(["train", "val", "test"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    contents, valid = {}, True
    for split in ("train", "val", "test"):
        here = fault if split == faulty_split else "none"
        count = 0 if here == "zero-sized" else draw(st.integers(1, 3))
        expected_shape = (count, 28, 28) if channels == 1 else (count, 28, 28, 3)
        image_shape = expected_shape
        if here == "image shape":
            image_shape = draw(
                st.sampled_from(
                    [image_shape[:-1], (*image_shape, 1), (count, 28, 27, *image_shape[3:]), (count, 0, 28)]
                )
            )
        image_dtype = draw(st.sampled_from(IMAGE_DTYPES)) if here == "image dtype" else np.uint8
        # NaN-free values, out of uint8's range for the wider dtypes.
        images = rng.integers(-300, 300, size=image_shape).astype(image_dtype)
        label_count = draw(st.integers(0, 5)) if here == "label count" else count
        label_shape = (label_count, width)
        if here == "label shape":
            label_shape = draw(st.sampled_from([(label_count,), (label_count, 2 * width), (label_count, width, 1)]))
        label_dtype = draw(st.sampled_from(LABEL_DTYPES)) if here == "label dtype" else np.uint8
        labels = draw(arrays(label_dtype, label_shape, elements=label_values(label_dtype, high)))
        if here == "label value" and labels.size:
            label_dtype = draw(st.sampled_from([np.uint8, np.int8, np.int64]))
            info = np.iinfo(label_dtype)
            outside = [v for v in (-2, -1, high + 1, high + 2, info.min, info.max) if not 0 <= v <= high]
            labels = labels.astype(label_dtype)
            labels.flat[draw(st.integers(0, labels.size - 1))] = draw(
                st.sampled_from([v for v in outside if info.min <= v <= info.max])
            )
        drop = draw(st.sampled_from(["images", "labels"])) if here == "missing array" else None
        if drop != "images":
            contents[f"{split}_images"] = images
        if drop != "labels":
            contents[f"{split}_labels"] = labels
        valid &= (
            drop is None
            and images.dtype == np.uint8
            and images.shape == expected_shape
            and count > 0
            and np.issubdtype(labels.dtype, np.integer)
            and labels.shape == (count, width)
            and bool(((labels >= 0) & (labels <= high)).all())
        )
    return NpzCase(flag, fault, contents, draw(st.booleans()), valid)


def label_values(dtype: type, high: int) -> st.SearchStrategy:
    """Labels in 0..high as the dtype holds them (floats also between and just outside the classes, NaN-free)."""
    if dtype == np.bool_:
        return st.booleans()
    if np.issubdtype(dtype, np.floating):
        return st.floats(-2, high + 2, allow_nan=False, allow_infinity=False, width=32)
    return st.integers(0, high)


def expected_label(row: np.ndarray, multi_label: bool) -> int | list[int]:
    return np.flatnonzero(row).tolist() if multi_label else int(row[0])


@settings(FUZZ, max_examples=300)
@given(case=npz_cases())
def test_fuzzed_npz_contents_load_exactly_or_fail_clearly(case: NpzCase) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"{case.flag}.npz"
        (np.savez_compressed if case.compressed else np.savez)(path, **case.arrays)
        event(f"fault: {case.fault} -> {'loaded exactly' if case.valid else 'DataError'}")
        if not case.valid:
            with pytest.raises(DataError) as error:
                load_medmnist(case.flag, 28, folder, download=False, verify=False)
            assert_clear(error.value, path.name)
            return
        splits = load_medmnist(case.flag, 28, folder, download=False, verify=False)
        multi_label = FLAGS[case.flag][2]
        for npz_split, split in (("train", "train"), ("val", "validation"), ("test", "test")):
            dataset = splits[split].with_format("numpy", columns=["image"], dtype=np.uint8, output_all_columns=True)
            np.testing.assert_array_equal(dataset[:]["image"], case.arrays[f"{npz_split}_images"])
            labels = [expected_label(row, multi_label) for row in case.arrays[f"{npz_split}_labels"]]
            assert list(dataset["label"]) == labels


# ---------------------------------------------------------------- MedMNIST .npz: damaged bytes


@functools.cache
def good_npz_bytes(compressed: bool) -> bytes:
    """A valid small BreastMNIST-format file, compressed or stored (uncompressed)."""
    with tempfile.TemporaryDirectory() as folder:
        path = make_medmnist_npz(Path(folder) / "good.npz", counts=(3, 2, 2))
        if not compressed:
            with np.load(path) as npz:
                np.savez(path, **{key: npz[key] for key in npz.files})
        return path.read_bytes()


@dataclass(frozen=True)
class Damage:
    """Cut the file at a fraction of its length, XOR bytes, or replace it by `junk`.

    An edit's place is a fraction of the length (float) or an index (int; negative counts from the end, where the
    zip's central directory lies).
    """

    kind: str
    fraction: float = 0.0
    edits: tuple[tuple[float | int, int], ...] = ()
    junk: bytes = b""

    def __call__(self, data: bytes) -> bytes:
        if self.kind == "truncate":
            return data[: int(len(data) * self.fraction)]
        if self.kind == "replace":
            return self.junk
        out = bytearray(data)
        for where, xor in self.edits:
            out[where if isinstance(where, int) else int(len(out) * where)] ^= xor
        return bytes(out)


fractions = st.floats(0, 1, exclude_max=True)
# Anywhere; the first member's local header and .npy header; the central directory and end record.
places = st.one_of(fractions, st.integers(0, 200), st.integers(-420, -1))
damages = st.one_of(
    st.builds(Damage, kind=st.just("truncate"), fraction=fractions),
    st.builds(
        Damage,
        kind=st.just("overwrite"),
        edits=st.lists(st.tuples(places, st.integers(1, 255)), min_size=1, max_size=4).map(tuple),
    ),
    st.builds(Damage, kind=st.just("replace"), junk=st.binary(max_size=256)),
)


@settings(FUZZ, max_examples=300)
@given(compressed=st.booleans(), damage=damages)
def test_damaged_npz_files_fail_clearly_or_load_unchanged(compressed: bool, damage: Damage) -> None:
    original = good_npz_bytes(compressed)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "breastmnist.npz"
        path.write_bytes(damage(original))
        try:
            splits = load_medmnist("breastmnist", 28, folder, download=False, verify=False)
        except DataError as error:
            assert_clear(error, path.name)
            event(f"{damage.kind} -> DataError")
            return
        event(f"{damage.kind} -> loaded unchanged")
        # Damage the reader never looks at (a timestamp in a zip header, say) may load, but only unchanged.
        with np.load(io.BytesIO(original)) as npz:
            for npz_split, split in (("train", "train"), ("val", "validation"), ("test", "test")):
                assert (
                    np.asarray(splits[split]["image"], dtype=np.uint8).tolist() == npz[f"{npz_split}_images"].tolist()
                )
                assert splits[split]["label"] == npz[f"{npz_split}_labels"][:, 0].tolist()


# ---------------------------------------------------------------- image folders


def encoded(array: np.ndarray, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    PILImage.fromarray(array).save(buffer, format=fmt, **options)
    return buffer.getvalue()


@dataclass
class FolderCase:
    kind: str
    name: str
    data: bytes
    # The pixels (H, W, 3) the file must decode to if it loads at all; None: it must not load.
    pixels: np.ndarray | None


@st.composite
def bad_image_files(draw: st.DrawFn) -> FolderCase:
    """A file with an image extension that is not an image, a damaged PNG or JPEG, or a wrong-depth image."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    rgb = rng.integers(0, 256, size=(30, 40, 3), dtype=np.uint8)  # enough scan data to cut a JPEG inside it
    kind = draw(st.sampled_from(["not an image", "truncated", "truncated", "damaged png", "deep pixels", "huge size"]))
    if kind == "not an image":
        extension = draw(st.sampled_from(sorted(IMAGE_EXTENSIONS)))
        return FolderCase(kind, f"bad{extension}", draw(st.binary(max_size=200)), None)
    if kind == "deep pixels":
        # 16-bit and float pixels: PIL would clip them to 0..255 without a word.
        fmt, array = draw(
            st.sampled_from(
                [
                    ("PNG", rng.integers(0, 65536, size=(10, 12)).astype(np.uint16)),
                    ("TIFF", rng.integers(0, 65536, size=(10, 12)).astype(np.uint16)),
                    ("TIFF", rng.integers(-(2**31), 2**31 - 1, size=(10, 12)).astype(np.int32)),
                    ("TIFF", rng.normal(0, 1000, size=(10, 12)).astype(np.float32)),
                ]
            )
        )
        return FolderCase(kind, f"bad.{fmt.lower()}", encoded(array, fmt), None)
    if kind == "huge size":
        side = draw(st.integers(20_000, 200_000))
        return FolderCase(kind, "bad.ppm.png", f"P6\n{side} {side}\n255\n".encode() + bytes(30), None)
    fmt = "PNG" if kind == "damaged png" else draw(st.sampled_from(["PNG", "JPEG", "JPEG"]))
    data = encoded(rgb, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    pixels = np.asarray(PILImage.open(io.BytesIO(data)).convert("RGB"))
    if kind == "truncated":
        data = data[: draw(st.integers(0, len(data) - 1))]
    else:  # PNG only: every chunk carries a CRC (JPEG has none, so damaged JPEG pixels cannot be told from real ones)
        out = bytearray(data)
        for where, xor in draw(
            st.lists(st.tuples(st.integers(0, len(data) - 1), st.integers(1, 255)), min_size=1, max_size=3)
        ):
            out[where] ^= xor
        data = bytes(out)
    return FolderCase(f"{kind} {fmt}" if kind == "truncated" else kind, f"bad.{fmt.lower()}", data, pixels)


@settings(FUZZ, max_examples=300)
@given(case=bad_image_files())
def test_bad_image_files_fail_clearly_naming_the_file_or_decode_exactly(case: FolderCase) -> None:
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        for label, value in (("a", 30), ("b", 200)):
            (root / label).mkdir()
            PILImage.fromarray(np.full((10, 12, 3), value, np.uint8)).save(root / label / "good.png")
        bad = root / "a" / case.name
        bad.write_bytes(case.data)
        stage = "load"
        try:
            splits = load_image_folder(root)
            examples = list(splits["train"])
            stage = "decode"
            batch = ImageCollator(2)(examples)  # where a real run decodes: per batch, in the collator
        except DataError as error:
            assert_clear(error, str(bad))
            event(f"{case.kind} -> DataError at {stage}")
            return
        event(f"{case.kind} -> decoded exactly")
        assert case.pixels is not None, f"{case.name} loaded but is not a usable image"
        index = [Path(example["image"]["path"]).name for example in examples].index(case.name)
        decoded = batch["pixel_values"][index]
        np.testing.assert_array_equal(decoded.permute(1, 2, 0).numpy(), case.pixels)


# ---------------------------------------------------------------- the fixes the fuzzing led to, pinned


def test_sixteen_bit_png_is_refused_instead_of_clipped(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    PILImage.fromarray(np.full((8, 8), 4000, np.uint16)).save(tmp_path / "x" / "deep.png")
    with pytest.raises(DataError, match="deep.png has 16-bit or wider pixels"):
        load_image_folder(tmp_path)
    with pytest.raises(DataError, match="16-bit or wider"):  # Hub datasets reach the collator without a folder check
        to_chw_uint8({"path": None, "bytes": (tmp_path / "x" / "deep.png").read_bytes()})


def test_a_replaced_npz_with_the_same_size_and_time_is_not_served_from_the_stale_cache(tmp_path: Path) -> None:
    path = tmp_path / "breastmnist.npz"
    labels = np.zeros((3, 1), np.uint8)
    make_medmnist_npz(path, counts=(3, 2, 2), train_labels=labels)
    stamp = path.stat().st_mtime_ns
    assert load_medmnist("breastmnist", 28, str(tmp_path), verify=False)["train"]["label"] == [0, 0, 0]
    make_medmnist_npz(path, counts=(3, 2, 2), train_labels=labels + 1)  # same size: only the labels differ
    os.utime(path, ns=(stamp, stamp))  # as when both writes fall in one tick of the file system's clock
    assert load_medmnist("breastmnist", 28, str(tmp_path), verify=False)["train"]["label"] == [1, 1, 1]


def test_an_error_raised_in_a_dataloader_worker_still_ends_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    examples = [{"image": {"path": str(tmp_path / "broken.png"), "bytes": None}, "label": 0}]
    loader = DataLoader(examples, batch_size=1, collate_fn=ImageCollator(2), num_workers=1)
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: list(loader))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"error: {tmp_path / 'broken.png'} could not be decoded")


def test_decoded_pixels_of_a_good_file_are_untouched(tmp_path: Path) -> None:
    array = np.arange(10 * 12 * 3, dtype=np.uint8).reshape(10, 12, 3)
    (tmp_path / "a").mkdir()
    PILImage.fromarray(array).save(tmp_path / "a" / "x.png")
    example = list(load_image_folder(tmp_path)["train"])[0]
    torch.testing.assert_close(to_chw_uint8(example["image"]), torch.from_numpy(array).permute(2, 0, 1))
