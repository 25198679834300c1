"""Issue 29, finding 3: a fresh finetune or distill refuses to replace a trained model (a teacher students were
distilled from) unless told to with --overwrite_output_dir true; resuming a run in its folder still works."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines import ConfigError, run_cli

from helpers.data import make_medmnist_npz, tiny_run_config, write_config
from helpers.distill import distill_config, save_teacher
from helpers.project import load_script

finetune = load_script("finetune").main
distill = load_script("distill").main


def teacher_config(tmp_path: Path, **overrides: object) -> Path:
    """A run into tmp_path/teacher, which already holds a trained model."""
    make_medmnist_npz(tmp_path / "data" / "breastmnist.npz")
    save_teacher(tmp_path / "teacher")
    values = tiny_run_config(tmp_path, tmp_path / "data", output_dir=str(tmp_path / "teacher"), max_steps=2)
    return write_config(tmp_path / "run.yaml", **{**values, **overrides})


def error_lines(capsys: pytest.CaptureFixture) -> list[str]:
    """The script's own sentences (saving the stand-in model above draws a progress bar on stderr too)."""
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]


def refusal(folder: Path) -> str:
    """The one sentence a fresh run into a folder holding a trained model ends in."""
    return (
        f"error: {folder} already holds a trained model, which this run would replace; give another output_dir, or "
        "pass --overwrite_output_dir true to replace it."
    )


def test_a_fresh_finetune_refuses_to_replace_a_trained_model(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = teacher_config(tmp_path)
    weights = (tmp_path / "teacher" / "model.safetensors").read_bytes()
    with pytest.raises(SystemExit) as exit_:
        run_cli(lambda: finetune([str(config)]))
    assert exit_.value.code == 2
    assert error_lines(capsys) == [refusal(tmp_path / "teacher")]
    assert (tmp_path / "teacher" / "model.safetensors").read_bytes() == weights
    assert sorted(path.name for path in (tmp_path / "teacher").iterdir()) == [
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
    ]


def test_overwrite_output_dir_lets_a_fresh_finetune_replace_it(tmp_path: Path) -> None:
    config = teacher_config(tmp_path)
    weights = (tmp_path / "teacher" / "model.safetensors").read_bytes()
    finetune([str(config), "--overwrite_output_dir", "true"])
    assert (tmp_path / "teacher" / "model.safetensors").read_bytes() != weights
    assert (tmp_path / "teacher" / "metrics.json").is_file()


def test_resuming_a_finished_run_in_its_folder_is_no_overwrite(tmp_path: Path) -> None:
    config = teacher_config(tmp_path, output_dir=str(tmp_path / "run"), save_strategy="steps", save_steps=2)
    finetune([str(config)])
    weights = (tmp_path / "run" / "model.safetensors").read_bytes()
    finetune([str(config), "--resume_from_checkpoint", "true"])  # restores the finished checkpoint, trains nothing
    assert (tmp_path / "run" / "model.safetensors").read_bytes() == weights


def test_resume_with_no_checkpoint_to_resume_is_a_fresh_run_and_refused(tmp_path: Path) -> None:
    """resume_from_checkpoint: true starts afresh when the folder has no checkpoint, so it would replace the model."""
    config = teacher_config(tmp_path)
    with pytest.raises(ConfigError, match="already holds a trained model"):
        finetune([str(config), "--resume_from_checkpoint", "true"])


def test_a_fresh_distill_refuses_to_replace_a_trained_student(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = distill_config(tmp_path, train_baseline=False)
    save_teacher(tmp_path / "student")  # a trained model where the student would go
    with pytest.raises(SystemExit) as exit_:
        run_cli(lambda: distill([str(config)]))
    assert exit_.value.code == 2
    assert error_lines(capsys) == [refusal(tmp_path / "student")]
    assert not (tmp_path / "student" / "results.json").exists()
