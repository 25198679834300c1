"""Issue 29, finding 7's smaller items: training curves without a logged training loss, a summary line and an error
naming the data that was loaded, the carve warning's reason, and the lock takeover's note on a folder of maps."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from datasets import ClassLabel, Dataset, Features, Value

from pipelines import DataArguments, DataError, load_image_dataset
from pipelines.locks import LOCK_NAME, run_folder_lock
from pipelines.splits import carve

from helpers.data import make_medmnist_npz, tiny_run_config, write_config
from helpers.project import load_script
from helpers.standins import write_plants_folder

finetune = load_script("finetune").main


def test_training_curves_are_written_when_no_training_loss_was_logged(tmp_path: Path) -> None:
    make_medmnist_npz(tmp_path / "data" / "breastmnist.npz")
    values = tiny_run_config(tmp_path, tmp_path / "data", max_steps=2, logging_steps=10)
    values.update(eval_strategy="steps", eval_steps=1)  # two evaluations, no training loss (logged every 10 steps)
    finetune([str(write_config(tmp_path / "run.yaml", **values))])
    assert (tmp_path / "run" / "training_curves.png").stat().st_size > 0


def test_the_summary_line_names_the_folder_that_was_loaded(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_plants_folder(tmp_path / "plants", ["fern", "palm"], size=32)
    values = tiny_run_config(tmp_path, tmp_path / "plants", max_steps=1, dataset_source="folder")
    values.update(class_names=["fern", "palm"], dataset_name="pneumoniamnist")  # left over from a MedMNIST recipe
    finetune([str(write_config(tmp_path / "run.yaml", **values))])
    [summary] = [line for line in capsys.readouterr().out.splitlines() if " -> " in line]
    assert summary == f"resnet on image folder plants -> {tmp_path / 'run'}"


def test_a_single_class_folder_is_named_by_its_folder_not_a_leftover_dataset_name(tmp_path: Path) -> None:
    write_plants_folder(tmp_path / "plants", ["fern"], size=32)
    args = DataArguments(dataset_source="folder", data_dir=str(tmp_path / "plants"), dataset_name="pneumoniamnist")
    with pytest.raises(DataError, match=f"^{tmp_path / 'plants'} has training images of one class only"):
        load_image_dataset(args)


def labelled(counts: list[int]) -> Dataset:
    labels = [label for label, count in enumerate(counts) for _ in range(count)]
    features = Features({"x": Value("int64"), "label": ClassLabel(names=[f"c{i}" for i in range(len(counts))])})
    return Dataset.from_dict({"x": list(range(len(labels))), "label": labels}, features=features)


@pytest.mark.parametrize(
    ("counts", "reason"),
    [
        ([5, 5, 5, 5], "2 carved image(s) cannot hold one of each of the 4 classes;"),
        ([20, 1], "class 'c1' has a single image (stratifying needs two of each class);"),
    ],
)
def test_the_carve_warning_gives_the_reason_that_applies(
    counts: list[int], reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="pipelines.splits"):
        carve(labelled(counts), 0.1, seed=0)
    [warning] = [record.getMessage() for record in caplog.records if record.name == "pipelines.splits"]
    assert f"not stratified: {reason} give the dataset" in warning


def test_the_lock_takeover_note_says_what_a_maps_folder_holds(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "maps"
    folder.mkdir()
    for name in ("maps-00000.arrow", "maps-00001.arrow", "state.json"):
        (folder / name).write_text("")
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # its id now names no process of this host: a killed run's lock
    holder = {"pid": child.pid, "host": socket.gethostname(), "started": "2026-01-01T00:00:00Z", "command": "x"}
    (folder / LOCK_NAME).write_text(json.dumps(holder))
    with caplog.at_level(logging.WARNING, logger="pipelines.locks"), run_folder_lock(folder):
        pass
    [note] = [record.getMessage() for record in caplog.records if record.name == "pipelines.locks"]
    assert "checkpoint" not in note
    assert note.endswith("what it left stays: maps-00000.arrow, maps-00001.arrow, state.json.")
