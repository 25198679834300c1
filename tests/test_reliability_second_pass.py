"""Reliability: one writer per run folder, EXIF orientation, images that fail only when decoded, and errors that
must end in one sentence that keeps their cause."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image
from PIL import Image as PILImage
from transformers import TrainingArguments
from transformers.image_utils import load_image

import explain.cli as explain_cli
from explain.inputs import load_image_files
from pipelines import DataArguments, decode_check, load_image_dataset
from pipelines.collate import to_chw_uint8
from pipelines.config import parse_config
from pipelines.errors import ConfigError, DataError, UserFacingError
from pipelines.folders import load_image_folder
from pipelines.locks import LOCK_NAME, FolderInUseError, read_holder, run_folder_lock
from pipelines.models import build_classifier, load_classifier
from trainers.arguments import ModelArguments

from helpers import faults
from helpers.data import make_medmnist_npz, tiny_run_config, write_config
from helpers.models import PROCESSOR_32, TINY_RESNET
from helpers.project import load_script

# ---------------------------------------------------------------- 1. one writer per run folder


def dead_pid() -> int:
    """The id of a process of this host that has ended (its parent reaped it)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def write_lock(folder: Path, pid: int, host: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    holder = {"pid": pid, "host": host, "started": "2026-01-01T00:00:00Z", "command": "finetune.py old.yaml"}
    (folder / LOCK_NAME).write_text(json.dumps(holder))


def test_a_held_folder_is_refused_in_one_sentence_naming_the_holder(tmp_path: Path) -> None:
    with run_folder_lock(tmp_path / "run"):
        holder = read_holder(tmp_path / "run" / LOCK_NAME)
        assert (holder.pid, holder.host) == (os.getpid(), socket.gethostname())
        with pytest.raises(FolderInUseError) as refused, run_folder_lock(tmp_path / "run"):
            pass
    message = str(refused.value)
    assert f"pid {os.getpid()} on host {socket.gethostname()}" in message and "\n" not in message
    assert not (tmp_path / "run").exists()  # released, and the folder it made (left empty) removed


def test_a_lock_of_a_process_on_another_host_is_never_taken_over(tmp_path: Path) -> None:
    write_lock(tmp_path / "run", dead_pid(), "some-other-machine")
    with pytest.raises(FolderInUseError, match="on host some-other-machine"), run_folder_lock(tmp_path / "run"):
        pass
    assert read_holder(tmp_path / "run" / LOCK_NAME).host == "some-other-machine"  # left as it was


def test_a_stale_lock_is_taken_over_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    pid = dead_pid()
    write_lock(tmp_path / "run", pid, socket.gethostname())
    with caplog.at_level(logging.WARNING), run_folder_lock(tmp_path / "run"):
        assert read_holder(tmp_path / "run" / LOCK_NAME).pid == os.getpid()
    assert f"it names pid {pid} on host {socket.gethostname()}" in caplog.text
    assert "no longer runs" in caplog.text
    assert not (tmp_path / "run" / LOCK_NAME).exists()


def test_an_unreadable_lock_is_refused_saying_which_file_to_delete(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / LOCK_NAME).write_text("")  # a holder killed between creating and writing it
    with pytest.raises(FolderInUseError, match="delete that file if no run"), run_folder_lock(tmp_path / "run"):
        pass


def test_the_lock_is_released_on_an_error_and_the_outputs_stay(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), run_folder_lock(tmp_path / "run"):
        (tmp_path / "run" / "metrics.json").write_text("{}")
        raise RuntimeError("the run failed")
    assert sorted(path.name for path in (tmp_path / "run").iterdir()) == ["metrics.json"]


@pytest.mark.slow
def test_the_lock_is_released_on_sigterm(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    code = (
        "import sys, time\nfrom pipelines.locks import run_folder_lock\n"
        f"with run_folder_lock({str(folder)!r}):\n    print('held', flush=True)\n    time.sleep(120)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=faults.ROOT)
    assert holder.stdout.readline().strip() == "held"
    assert read_holder(folder / LOCK_NAME).pid == holder.pid
    holder.send_signal(signal.SIGTERM)
    assert holder.wait(timeout=60) == 128 + signal.SIGTERM
    assert not (folder / LOCK_NAME).exists()


def test_the_other_processes_of_a_distributed_run_take_no_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with run_folder_lock(tmp_path / "run"):  # the run's main process (rank 0) holds it
        monkeypatch.setenv("RANK", "1")
        with run_folder_lock(tmp_path / "run"):  # rank 1 of the same run is not refused
            assert read_holder(tmp_path / "run" / LOCK_NAME).pid == os.getpid()


def unwritable_folder(tmp_path: Path) -> Path:
    """A folder this process cannot create: under a read-only folder, or (as root, whom modes do not stop) sysfs."""
    if os.geteuid() != 0:
        locked = tmp_path / "read-only"
        locked.mkdir(mode=0o555)
        return locked / "run"
    if not Path("/sys/kernel").is_dir():
        pytest.skip("running as root without sysfs: no folder here refuses a write")
    return Path("/sys/swys-read-only-run")


def test_an_output_dir_that_cannot_be_written_is_one_sentence(tmp_path: Path, npz_dir: Path) -> None:
    output_dir = unwritable_folder(tmp_path)
    config = write_config(tmp_path / "c.yaml", **tiny_run_config(tmp_path, npz_dir, output_dir=str(output_dir)))
    with pytest.raises(UserFacingError, match=f"Output folder {output_dir} cannot be written") as refused:
        load_script("finetune").main([str(config)])
    assert "\n" not in str(refused.value)


@pytest.mark.slow
def test_a_second_run_into_a_live_runs_folder_is_refused_and_the_first_keeps_its_own_metrics(tmp_path: Path) -> None:
    data = tmp_path / "data"
    make_medmnist_npz(data / "breastmnist.npz", counts=(64, 24, 24))
    # Evaluated and saved every 2 steps, best model reloaded at the end: the path on which two runs sharing a folder
    # would load each other's checkpoints as their own "best".
    values = tiny_run_config(
        tmp_path,
        data,
        max_steps=6,
        eval_strategy="steps",
        eval_steps=2,
        save_strategy="steps",
        save_steps=2,
        load_best_model_at_end=True,
        metric_for_best_model="auc",
    )
    config = write_config(tmp_path / "run.yaml", **values)
    go = tmp_path / "faults" / "go"
    first = faults.start(
        faults.command("finetune", config, "--seed", "1", faults=True),
        tmp_path / "first.log",
        faults.environment(FAULT_PAUSE_AT_STEP=3, FAULT_DIR=tmp_path / "faults", FAULT_RESUME_WHEN=go),
    )
    try:
        faults.wait_for(faults.markers(tmp_path / "faults", "paused", 1), first, tmp_path / "first.log")
        before = sorted(path.relative_to(tmp_path).as_posix() for path in (tmp_path / "run").rglob("*"))
        second = faults.run(faults.command("finetune", config, "--seed", "2"), tmp_path / "second.log")
        after = sorted(path.relative_to(tmp_path).as_posix() for path in (tmp_path / "run").rglob("*"))
        go.write_text("")
        assert first.wait(timeout=300) == 0, (tmp_path / "first.log").read_text()[-3000:]
    finally:
        if first.poll() is None:
            faults.kill_tree(first)
    assert second.returncode == 2, second.stdout[-3000:]
    refusal = second.stdout.strip().splitlines()[-1]
    assert refusal.startswith(f"error: {tmp_path / 'run'} is in use by another run (pid {first.pid} on host ")
    assert "Traceback" not in second.stdout
    assert after == before  # the refused run wrote nothing into the folder
    assert not (tmp_path / "run" / LOCK_NAME).exists()

    # Run A's metrics are those of run A alone: the same run (seed 1), by itself, in a fresh folder.
    alone = faults.run(
        faults.command("finetune", config, "--seed", "1", "--output_dir", str(tmp_path / "alone")),
        tmp_path / "alone.log",
    )
    assert alone.returncode == 0, alone.stdout[-3000:]
    shared = json.loads((tmp_path / "run" / "metrics.json").read_text())
    own = json.loads((tmp_path / "alone" / "metrics.json").read_text())
    for split in ("validation", "test"):
        for metric in ("accuracy", "auc", "loss"):
            assert shared[split][metric] == pytest.approx(own[split][metric], abs=1e-5), (split, metric)


# ---------------------------------------------------------------- 2. EXIF orientation


def save_sideways_photo(path: Path) -> None:
    """A 40 x 24 JPEG whose EXIF says "rotate 90 degrees clockwise to view" (Orientation 6, as phones write)."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(24, 40, 3), dtype=np.uint8)
    pixels[:, :8] = (255, 0, 0)  # a red band on the stored image's left, to see where it ends up
    exif = PILImage.Exif()
    exif[ORIENTATION_TAG] = 6
    path.parent.mkdir(parents=True, exist_ok=True)
    PILImage.fromarray(pixels).save(path, exif=exif, quality=95)


ORIENTATION_TAG = 0x0112


def test_images_are_decoded_upright_as_transformers_loads_them(tmp_path: Path) -> None:
    photo = tmp_path / "folder" / "train" / "cat_1.jpg"
    save_sideways_photo(photo)
    served = torch.from_numpy(np.array(load_image(str(photo)))).permute(2, 0, 1)  # what pipeline() sees
    assert served.shape == (3, 40, 24)  # upright: the stored 24 x 40 turned

    assert torch.equal(to_chw_uint8({"path": str(photo), "bytes": None}), served)  # folder datasets
    assert torch.equal(to_chw_uint8({"path": None, "bytes": photo.read_bytes()}), served)  # Hub datasets
    assert torch.equal(to_chw_uint8(PILImage.open(photo)), served)  # PIL images
    assert torch.equal(load_image_files([str(photo)], num_channels=3).images[0], served)  # explain --images


# ---------------------------------------------------------------- 3. images that fail only when decoded


def save_jpeg(path: Path, value: int, cut: bool = False) -> None:
    """A 32 x 32 noisy JPEG; `cut` keeps only its first half: the header is whole, the pixels end early."""
    rng = np.random.default_rng(value)
    pixels = np.clip(value + rng.integers(0, 60, size=(32, 32, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    PILImage.fromarray(pixels).save(path, quality=95)
    if cut:
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def make_split_folder(root: Path, cut: Path | None = None) -> None:
    for split, count in (("train", 8), ("val", 4), ("test", 4)):
        for index in range(count):
            label = index % 2
            path = root / split / f"{label}_{index}.jpg"
            save_jpeg(path, 40 + 150 * label, cut=path.relative_to(root) == cut)


def test_an_image_cut_short_in_the_test_split_stops_the_run_before_training(tmp_path: Path) -> None:
    make_split_folder(tmp_path / "photos", cut=Path("test/1_3.jpg"))
    values = tiny_run_config(tmp_path, tmp_path / "photos", dataset_source="folder", class_names=["a", "b"])
    with pytest.raises(DataError, match=re.escape(f"{tmp_path / 'photos' / 'test' / '1_3.jpg'} could not be decoded")):
        load_script("finetune").main([str(write_config(tmp_path / "c.yaml", **values))])
    assert not (tmp_path / "run").exists()  # stopped before training: no model without metrics.json


def test_a_split_seen_to_decode_is_not_decoded_again_until_a_file_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_split_folder(tmp_path / "photos")
    args = DataArguments(dataset_source="folder", data_dir=str(tmp_path / "photos"), class_names=["a", "b"])
    decoded: list[str] = []
    real_decode = decode_check.decode
    monkeypatch.setattr(
        decode_check, "decode", lambda image, *a, **k: decoded.append(image["path"]) or real_decode(image, *a, **k)
    )

    load_image_dataset(args)
    assert len(decoded) == 16  # every image of the three splits, once
    decoded.clear()
    load_image_dataset(args)
    assert decoded == []  # the verdict is cached

    save_jpeg(tmp_path / "photos" / "val" / "1_1.jpg", 190, cut=True)  # damaged after the first check
    with pytest.raises(DataError, match=re.escape(f"{tmp_path / 'photos' / 'val' / '1_1.jpg'} could not be decoded")):
        load_image_dataset(args)
    # Only the changed split is decoded again, up to the damaged file.
    assert decoded and all(Path(path).parent.name == "val" for path in decoded)
    assert decoded[-1] == str(tmp_path / "photos" / "val" / "1_1.jpg")


def test_a_hub_image_that_does_not_decode_is_named_by_split_and_row(tmp_path: Path) -> None:
    save_jpeg(tmp_path / "good.jpg", 40)
    save_jpeg(tmp_path / "cut.jpg", 190, cut=True)
    good, cut = ((tmp_path / name).read_bytes() for name in ("good.jpg", "cut.jpg"))
    features = Features({"image": Image(decode=False), "label": ClassLabel(names=["a", "b"])})
    rows = [{"bytes": good, "path": None}] * 3 + [{"bytes": cut, "path": None}]
    split = Dataset.from_dict({"image": rows, "label": [0, 1, 0, 1]}, features=features)
    with pytest.raises(DataError, match="Image 3 of the test split could not be decoded"):
        decode_check.check_images_decode(DatasetDict({"test": split}))


def test_explain_names_an_image_file_cut_short_instead_of_an_oserror(tmp_path: Path) -> None:
    save_jpeg(tmp_path / "cut.jpg", 190, cut=True)
    with pytest.raises(DataError, match=re.escape(f"{tmp_path / 'cut.jpg'} could not be decoded")) as refused:
        load_image_files([str(tmp_path / "cut.jpg")], num_channels=3)
    assert "\n" not in str(refused.value)


def test_explain_images_given_a_folder_says_it_is_a_folder(tmp_path: Path) -> None:
    make_split_folder(tmp_path / "photos")
    with pytest.raises(DataError, match=f"{re.escape(str(tmp_path / 'photos'))} is a folder; give its image"):
        load_image_files([str(tmp_path / "photos")], num_channels=3)


# ---------------------------------------------------------------- 5. messages that keep the cause


def test_a_yaml_syntax_error_says_what_was_found_and_where(tmp_path: Path) -> None:
    config = tmp_path / "tabbed.yaml"
    config.write_text("seed: 1\n\tmax_steps: 4\n")
    with pytest.raises(ConfigError) as refused:
        parse_config((DataArguments, ModelArguments, TrainingArguments), [str(config)])
    assert str(refused.value) == (
        f"{config} is not valid YAML: found character '\\t' that cannot start any token at line 2, column 1 "
        "(YAML indents with spaces, not tabs)."
    )


@pytest.mark.parametrize(
    ("model_type", "named"),
    [("resnett", "did you mean 'resnet'"), ("banana", "image classifiers include 'vit', 'deit', 'resnet'")],
)
def test_an_unknown_model_type_names_the_closest_few_in_one_short_sentence(model_type: str, named: str) -> None:
    with pytest.raises(DataError) as refused:
        build_classifier({"model_type": model_type}, ["a", "b"])
    message = str(refused.value)
    assert message.startswith(f"model_config: transformers has no model_type '{model_type}'; ") and named in message
    assert len(message) < 200 and "\n" not in message


def pickled_model(folder: Path) -> Path:
    """A tiny classifier saved with only pickled weights (pytorch_model.bin)."""
    labels = ["malignant", "normal, benign"]  # BreastMNIST's, as the evaluation below needs
    model, processor = build_classifier(TINY_RESNET, labels, image_processor_config=PROCESSOR_32)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    (folder / "model.safetensors").unlink()
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    return folder


def test_the_pickle_advice_works_in_explain_and_evaluate(tmp_path: Path) -> None:
    folder = str(pickled_model(tmp_path / "pickled"))
    with pytest.raises(DataError, match="--allow_pickle on the command line"):
        load_classifier(folder)
    save_jpeg(tmp_path / "photo.jpg", 90)
    explain = explain_cli.main
    common = ["--model", folder, "--images", str(tmp_path / "photo.jpg"), "--methods", "gradcam", "--device", "cpu"]
    with pytest.raises(DataError, match="holds only pickled weights"):
        explain([*common, "--out", str(tmp_path / "refused")])
    index = explain([*common, "--allow_pickle", "--out", str(tmp_path / "explained")])
    assert [entry["file"] for entry in index["files"]][:2] == ["overlay.png", "methods.png"]

    make_medmnist_npz(tmp_path / "data" / "breastmnist.npz", counts=(8, 4, 6))
    evaluate = load_script("report").main
    report = evaluate(
        [
            *("--models", folder, "--dataset_name", "breastmnist", "--data_dir", str(tmp_path / "data")),
            *("--verify_md5", "false", "--explain_images", "4", "--latency_repeats", "1", "--steps", "2"),
            *("--device", "cpu", "--allow_pickle", "--out", str(tmp_path / "report")),
        ]
    )
    assert report["images"] == 6 and 0.0 <= report["models"]["pickled"]["classification"]["accuracy"] <= 1.0


def test_the_pickle_advice_works_in_shrink(tmp_path: Path) -> None:
    """shrink.py once advised --allow_pickle and then refused it as an unknown option."""
    folder = str(pickled_model(tmp_path / "pickled"))
    shrink = load_script("shrink").main
    with pytest.raises(DataError, match="--allow_pickle on the command line"):
        shrink([folder, "--shrink_method", "int8", "--output_dir", str(tmp_path / "refused")])
    record = shrink([folder, "--shrink_method", "int8", "--allow_pickle", "--output_dir", str(tmp_path / "int8")])
    assert record["method"] == "int8" and (tmp_path / "int8" / "shrink.json").is_file()


# ---------------------------------------------------------------- 6. inputs that mean something else


def test_a_flat_folder_without_class_names_warns_naming_the_labels_found(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for index in range(12):
        save_jpeg(tmp_path / "photos" / f"{index % 3}_{index}.jpg", 40 + 60 * (index % 3))
    save_jpeg(tmp_path / "photos" / "7_stray.jpg", 250)  # a label beyond the others
    with caplog.at_level(logging.WARNING, logger="pipelines.folders"):
        dataset = load_image_folder(tmp_path / "photos")
    assert dataset["train"].features["label"].names == ["0", "1", "2", "7"]  # what it did, and still does
    (warning,) = [record.getMessage() for record in caplog.records if record.name == "pipelines.folders"]
    assert "no class_names given, so the 4 labels found in the file names became the classes" in warning
    assert "'0' (4), '1' (4), '2' (4), '7' (1)" in warning

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pipelines.folders"):
        load_image_folder(tmp_path / "photos", class_names=["a", "b", "c", "d", "e", "f", "g", "h"])
    assert not [record for record in caplog.records if record.name == "pipelines.folders"]  # names given: no guess
