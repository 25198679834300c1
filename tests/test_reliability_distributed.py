"""The two-process CPU runs (DDP through accelerate launch) of fine-tuning and distillation, SIGKILLed between two
checkpoints (launcher and both workers) and relaunched with resume_from_checkpoint: true, end exactly where an
uninterrupted two-process run ends.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers import faults
from helpers.data import write_config
from helpers.resume import (
    assert_killed_between_checkpoints,
    assert_same_result_and_step_count,
    distill_values,
    finetune_values,
    kill_mid_interval,
)

PROCESSES = 2


@pytest.mark.slow
@pytest.mark.parametrize("script", ["finetune", "distill"])
def test_two_process_run_killed_between_checkpoints_resumes_to_the_uninterrupted_result(
    tmp_path: Path, script: str
) -> None:
    # Per process: batches of 8 of 40 images (padded to 48), so 3 steps an epoch. Resumed from checkpoint-2, the run
    # must skip the 2 batches of epoch 0 already trained on, redo step 3, and go on into epoch 1 as the reference did.
    values = (finetune_values if script == "finetune" else distill_values)(tmp_path, per_device_eval_batch_size=4)
    config = write_config(tmp_path / "run.yaml", **values)
    reference_dir, run_dir = tmp_path / "reference", Path(values["output_dir"])
    command = faults.command(script, config, "--output_dir", str(reference_dir), processes=PROCESSES)
    result = faults.run(command, tmp_path / "reference.log")
    assert result.returncode == 0, result.stdout[-3000:]

    kill_mid_interval(script, config, tmp_path, processes=PROCESSES)
    assert_killed_between_checkpoints(run_dir)

    command = faults.command(script, config, "--resume_from_checkpoint", "true", processes=PROCESSES)
    result = faults.run(command, tmp_path / "resumed.log")
    assert result.returncode == 0, result.stdout[-3000:]
    assert_same_result_and_step_count(run_dir, reference_dir)
