"""Atomic outputs: a run that dies while saving its final model, or while writing any report, leaves nothing that
looks complete (a folder that loads, a metrics.json), and the next run (resume: true) completes it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from safetensors.torch import load_file
from safetensors.torch import save as save_tensors
from transformers import AutoModelForImageClassification

import trainers.checkpoints
from pipelines.errors import UserFacingError
from pipelines.io import atomic_write_bytes, atomic_write_json, make_folder
from trainers.checkpoints import COMPLETION_MARKERS, STAGING_FOLDER
from trainers.distill_results import ResultRow, write_results
from trainers.hub import write_model_card
from trainers.report.cost import ModelCost
from trainers.report.figures import plot_confusion_matrix
from trainers.run_outputs import write_metrics

from helpers import faults
from helpers.data import make_medmnist_npz, tiny_run_config, write_config

MAX_STEPS = 4


def run_values(tmp_path: Path, **overrides: object) -> dict:
    make_medmnist_npz(tmp_path / "data" / "breastmnist.npz", counts=(40, 13, 17))
    values = tiny_run_config(tmp_path, tmp_path / "data", max_steps=MAX_STEPS, save_strategy="steps", save_steps=2)
    return {**values, **overrides}


def assert_nothing_looks_complete(run_dir: Path) -> None:
    for name in COMPLETION_MARKERS:
        assert not (run_dir / name).exists(), name
    with pytest.raises((OSError, ValueError)):  # no config.json: transformers cannot even tell the architecture
        AutoModelForImageClassification.from_pretrained(run_dir)
    assert not [path.name for path in run_dir.glob(".*.tmp")]  # no stray temporary report files either


@pytest.mark.slow
def test_run_killed_during_the_final_save_leaves_no_complete_looking_folder(tmp_path: Path) -> None:
    script = faults.load_script("finetune")
    values = run_values(tmp_path)
    config = write_config(tmp_path / "run.yaml", **values)
    run_dir = Path(values["output_dir"])
    # A finished earlier run in the same folder: its metrics.json and config.json must not vouch for the new weights.
    script.main([str(config), "--max_steps", "2"])
    assert (run_dir / "metrics.json").is_file() and (run_dir / "config.json").is_file()

    fault_dir, log = tmp_path / "faults", tmp_path / "killed.log"
    env = faults.environment(FAULT_DIR=fault_dir, FAULT_PAUSE_IN_FINAL_SAVE=1)
    process = faults.start(faults.command("finetune", config, "--overwrite_output_dir", "true", faults=True), log, env)
    faults.wait_for(faults.markers(fault_dir, "final-save", 1), process, log)
    faults.kill_tree(process)

    staged = run_dir / STAGING_FOLDER
    assert (staged / "model.safetensors").is_file() and (staged / "config.json").is_file()  # killed mid-save indeed
    assert_nothing_looks_complete(run_dir)

    # Relaunching finds all training done (checkpoint-4), saves the model again and completes the folder.
    script.main([str(config), "--resume_from_checkpoint", "true"])
    assert not staged.exists()
    assert json.loads((run_dir / "metrics.json").read_text())["test"]["samples"] == 17
    final = load_file(run_dir / "model.safetensors")
    for name, tensor in load_file(run_dir / f"checkpoint-{MAX_STEPS}" / "model.safetensors").items():
        assert torch.equal(final[name], tensor), name
    AutoModelForImageClassification.from_pretrained(run_dir)


class Killed(BaseException):
    """Stands for SIGKILL: a BaseException, so no `except Exception` cleanup runs."""


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A complete run folder, copied by each test below so that a new run can die in it."""
    tmp_path = tmp_path_factory.mktemp("finished")
    values = run_values(tmp_path, save_strategy="no")
    faults.load_script("finetune").main([str(write_config(tmp_path / "run.yaml", **values))])
    return Path(values["output_dir"]), values


@pytest.mark.parametrize("moved_before_death", [0, 2])  # of the 4 staged files: before the first, mid-way
def test_death_between_renames_of_the_final_save_leaves_a_folder_that_does_not_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, finished_run: tuple[Path, dict], moved_before_death: int
) -> None:
    earlier, values = finished_run
    run_dir = tmp_path / "run"
    shutil.copytree(earlier, run_dir)
    # A second fresh run into the finished folder, which it may replace (issue 29: without this it is refused).
    config = write_config(tmp_path / "run.yaml", **{**values, "output_dir": str(run_dir), "overwrite_output_dir": True})
    script = faults.load_script("finetune")
    renames: list[str] = []

    def replace(source: str | Path, target: str | Path) -> None:
        if len(renames) == moved_before_death:
            raise Killed
        renames.append(Path(target).name)
        os.replace(source, target)

    # Only the checkpoints module sees the dying rename.
    monkeypatch.setattr(trainers.checkpoints, "os", types.SimpleNamespace(**{**vars(os), "replace": replace}))
    with pytest.raises(Killed):
        script.main([str(config)])
    assert "config.json" not in renames  # it is always moved last
    assert_nothing_looks_complete(run_dir)


def _row(accuracy: float) -> ResultRow:
    cost = ModelCost(
        parameters=1000,
        size_on_disk_bytes=4000,
        latency_ms_batch_1=1.0,
        latency_ms_batch_64=0.1,
        latency_ms_batch_1_quartiles=[0.9, 1.2],
        latency_ms_batch_64_quartiles=[0.09, 0.11],
        throughput_images_per_s=10000.0,
        device="cpu",
        dtype="float32",
    )
    return ResultRow("student (distilled)", "run", "ResNet", cost, {"accuracy": accuracy})


WRITERS = {
    "metrics.json": lambda folder, value: write_metrics(folder / "metrics.json", {"test": {"accuracy": value}}),
    "results.md": lambda folder, value: write_results(folder, [_row(value)], "distill.py run.yaml"),
    "README.md": lambda folder, value: write_model_card(folder, ModelCard(f"---\nlicense: mit\n---\n# {value}\n")),
    "confusion_matrix.png": lambda folder, value: plot_confusion_matrix(
        np.array([0, 1, 1]), np.array([0, 1, int(value)]), ["a", "b"], folder / "confusion_matrix.png"
    ),
    "teacher-logits.safetensors": lambda folder, value: atomic_write_bytes(
        folder / "teacher-logits.safetensors", save_tensors({"logits": torch.full((3, 2), value)})
    ),
}


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_a_report_write_killed_part_way_leaves_the_previous_file_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    WRITERS[name](tmp_path, 0.0)
    before = {path.name: path.read_bytes() for path in tmp_path.iterdir()}
    real_fdopen = os.fdopen

    def dying_fdopen(handle: int, mode: str) -> object:
        out = real_fdopen(handle, mode)
        write = out.write

        def write_half_then_die(data: bytes) -> int:
            write(data[: len(data) // 2])
            out.flush()
            raise Killed

        out.write = write_half_then_die
        return out

    monkeypatch.setattr(os, "fdopen", dying_fdopen)
    with pytest.raises(Killed):
        WRITERS[name](tmp_path, 1.0)
    monkeypatch.undo()
    after = {path.name: path.read_bytes() for path in tmp_path.iterdir() if not path.name.endswith(".tmp")}
    assert after == before  # every finished file whole and unchanged; only a hidden .tmp may be left


@pytest.mark.parametrize("below", ["", "report", "report/figures"])
def test_a_file_where_an_output_folder_belongs_is_one_sentence_naming_it(tmp_path: Path, below: str) -> None:
    blocking = tmp_path / "taken"
    blocking.write_text("not a folder\n")
    folder = blocking / below if below else blocking
    expected = f"Output folder {blocking}" + (f" (needed for {folder})" if below else "") + " is an existing file"
    with pytest.raises(UserFacingError, match=re.escape(expected)):
        make_folder(folder)
    with pytest.raises(UserFacingError, match=re.escape(expected)) as raised:
        atomic_write_json(folder / "metrics.json", {"accuracy": 1.0})
    assert isinstance(raised.value, OSError)  # callers that caught the old FileExistsError still catch it
    assert "\n" not in str(raised.value)
    assert blocking.read_text() == "not a folder\n"  # the file in the way is left alone


def test_json_outputs_are_strict_json(tmp_path: Path) -> None:
    # An AUC is undefined (NaN) on a split of one class; Python's default NaN token breaks other JSON readers.
    atomic_write_json(
        tmp_path / "m.json", {"test": {"auc": float("nan"), "accuracy": 0.5}, "curve": [1.0, float("inf")]}
    )
    text = (tmp_path / "m.json").read_text()
    assert json.loads(text, parse_constant=lambda token: pytest.fail(f"non-JSON token {token}")) == {
        "test": {"auc": None, "accuracy": 0.5},
        "curve": [1.0, None],
    }
