"""Kill and resume: a run SIGKILLed between two checkpoints, relaunched with resume_from_checkpoint: true, ends
exactly where an uninterrupted run with the same seed ends, after exactly the configured number of optimizer steps.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pipelines import DataError
from trainers.checkpoints import newest_complete_checkpoint
from trainers.image_classification import resolve_resume

from helpers import faults
from helpers.data import write_config
from helpers.resume import (
    MAX_STEPS,
    assert_killed_between_checkpoints,
    assert_same_result_and_step_count,
    distill_values,
    finetune_values,
    kill_mid_interval,
    run_reference_here,
)


@pytest.mark.slow
@pytest.mark.parametrize("script", ["finetune", "distill"])
def test_run_killed_between_checkpoints_resumes_to_the_uninterrupted_result(tmp_path: Path, script: str) -> None:
    values = (finetune_values if script == "finetune" else distill_values)(tmp_path)
    config = write_config(tmp_path / "run.yaml", **values)
    run_dir, reference_dir = Path(values["output_dir"]), tmp_path / "reference"
    run_reference_here(script, config, reference_dir)

    kill_mid_interval(script, config, tmp_path, OMP_NUM_THREADS=1)
    assert_killed_between_checkpoints(run_dir)

    command = faults.command(script, config, "--resume_from_checkpoint", "true")
    result = faults.run(command, tmp_path / "resumed.log", env=faults.environment(OMP_NUM_THREADS=1))
    assert result.returncode == 0, result.stdout[-3000:]
    assert_same_result_and_step_count(run_dir, reference_dir)


def test_resume_true_skips_a_checkpoint_the_run_died_while_writing(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    for step in (2, 4):
        (run_dir / f"checkpoint-{step}").mkdir(parents=True)
    (run_dir / "checkpoint-2" / "trainer_state.json").write_text(json.dumps({"global_step": 2}))
    (run_dir / "checkpoint-4" / "model.safetensors").write_bytes(b"cut short")  # no trainer_state.json yet
    (run_dir / "checkpoint-10").mkdir()
    (run_dir / "checkpoint-10" / "trainer_state.json").write_text('{"global_step": 1')  # cut off mid-write
    assert resolve_resume(True, str(run_dir)) == str(run_dir / "checkpoint-2")
    assert newest_complete_checkpoint(run_dir) == run_dir / "checkpoint-2"
    with pytest.raises(DataError, match="checkpoint-4 is not a complete checkpoint") as error:
        resolve_resume(str(run_dir / "checkpoint-4"), str(run_dir))
    assert "\n" not in str(error.value)
    assert resolve_resume("true", str(tmp_path / "nothing-yet")) is None


def test_resume_after_a_death_during_a_checkpoint_save_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    """In-process: checkpoint-4 as a kill during its save leaves it (weights written, no trainer state)."""
    script = faults.load_script("finetune")
    values = finetune_values(tmp_path)
    config = write_config(tmp_path / "run.yaml", **values)
    run_dir = Path(values["output_dir"])
    script.main([str(config)])
    reference = load_file(run_dir / "model.safetensors")

    for name in ("checkpoint-6", "model.safetensors", "config.json", "metrics.json"):
        path = run_dir / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    for name in ("trainer_state.json", "optimizer.pt", "scheduler.pt", "rng_state.pth"):
        (run_dir / "checkpoint-4" / name).unlink()
    script.main([str(config), "--resume_from_checkpoint", "true"])  # resumes from checkpoint-2, not the broken 4

    state = json.loads((run_dir / "checkpoint-6" / "trainer_state.json").read_text())
    assert [entry["step"] for entry in state["log_history"] if "loss" in entry] == list(range(1, MAX_STEPS + 1))
    for name, tensor in load_file(run_dir / "model.safetensors").items():
        torch.testing.assert_close(tensor, reference[name], atol=1e-6, rtol=1e-5)
