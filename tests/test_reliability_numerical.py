"""Numerical faults: a loss (or weights) that become NaN or infinite stop the run at once, on every process, with one
line naming the step; nothing non-finite is saved and the last good checkpoint is kept and resumable.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from pipelines.errors import run_cli
from trainers.guards import NonFiniteGuard
from trainers.image_classification import ImageClassificationTrainer

from helpers import faults
from helpers.data import make_medmnist_npz, tiny_run_config, write_config

MAX_STEPS, SAVE_STEPS = 6, 2


def run_config(tmp_path: Path) -> tuple[Path, Path]:
    make_medmnist_npz(tmp_path / "data" / "breastmnist.npz")
    values = tiny_run_config(
        tmp_path, tmp_path / "data", max_steps=MAX_STEPS, save_strategy="steps", save_steps=SAVE_STEPS
    )
    return write_config(tmp_path / "run.yaml", **values), Path(values["output_dir"])


def corrupt_step(monkeypatch: pytest.MonkeyPatch, step: int, corrupt) -> None:
    """Replace the training loss of optimizer step `step` by `corrupt(loss, logits)`."""
    original = ImageClassificationTrainer.compute_loss

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss, outputs = original(self, model, inputs, True, num_items_in_batch)
        if model.training and self.state.global_step + 1 == step:
            loss = corrupt(loss, outputs.logits)
        return (loss, outputs) if return_outputs else loss

    monkeypatch.setattr(ImageClassificationTrainer, "compute_loss", compute_loss)


def run_and_capture_error(script, config: Path, capsys: pytest.CaptureFixture) -> str:
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: script.main([str(config)]))
    assert exit_info.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, lines
    return lines[0]


def assert_kept_only(run_dir: Path, checkpoints: list[str]) -> None:
    assert sorted(path.name for path in run_dir.glob("checkpoint-*")) == checkpoints
    for name in ("model.safetensors", "metrics.json", "config.json"):
        assert not (run_dir / name).exists(), name
    for name, tensor in load_file(run_dir / checkpoints[-1] / "model.safetensors").items():
        assert torch.isfinite(tensor).all(), name


@pytest.mark.parametrize("bad", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_a_non_finite_loss_stops_the_run_at_that_step_and_keeps_the_last_good_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, bad: float
) -> None:
    script = faults.load_script("finetune")
    config, run_dir = run_config(tmp_path)
    corrupt_step(monkeypatch, 5, lambda loss, logits: loss * bad)
    line = run_and_capture_error(script, config, capsys)
    assert "The training loss became NaN or infinite at optimizer step 5" in line
    assert f"the last good checkpoint, {run_dir / 'checkpoint-4'}, is kept" in line
    assert_kept_only(run_dir, ["checkpoint-2", "checkpoint-4"])
    state = json.loads((run_dir / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4

    if bad == float("inf"):
        return  # resuming from the kept checkpoint is shown once, with NaN
    monkeypatch.undo()  # the cause fixed (say, a lower learning rate): the kept checkpoint resumes to the end
    script.main([str(config), "--resume_from_checkpoint", "true"])
    state = json.loads((run_dir / f"checkpoint-{MAX_STEPS}" / "trainer_state.json").read_text())
    assert [entry["step"] for entry in state["log_history"] if "loss" in entry] == list(range(1, MAX_STEPS + 1))


def test_weights_made_non_finite_by_a_finite_loss_are_never_saved(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    script = faults.load_script("finetune")
    config, run_dir = run_config(tmp_path)
    # sqrt(0) is 0, but its gradient is infinite: the loss stays finite while every gradient becomes NaN.
    corrupt_step(monkeypatch, 4, lambda loss, logits: loss + (logits.sum() * 0).sqrt())
    line = run_and_capture_error(script, config, capsys)
    assert "The weights became NaN or infinite at optimizer step 4" in line
    assert_kept_only(run_dir, ["checkpoint-2"])  # checkpoint-4 would have held the NaN weights


def test_a_non_finite_loss_before_any_checkpoint_says_there_is_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    script = faults.load_script("finetune")
    config, run_dir = run_config(tmp_path)
    corrupt_step(monkeypatch, 1, lambda loss, logits: loss * float("nan"))
    line = run_and_capture_error(script, config, capsys)
    assert "at optimizer step 1" in line and "no checkpoint had been saved yet" in line
    assert not list(run_dir.glob("checkpoint-*"))


@pytest.mark.slow
def test_a_nan_on_one_process_stops_both_at_the_same_step(tmp_path: Path) -> None:
    """Rank 1 alone sees a NaN loss at step 3; both processes stop there (rank 0 would otherwise wait forever in
    the next all-reduce) and each says why; checkpoint-2 is kept."""
    config, run_dir = run_config(tmp_path)
    env = faults.environment(FAULT_NAN_AT_STEP=3, FAULT_NAN_RANK=1)
    result = faults.run(faults.command("finetune", config, processes=2, faults=True), tmp_path / "ddp.log", env=env)
    assert result.returncode != 0
    lines = re.findall(r"^error: .*$", result.stdout, flags=re.MULTILINE)
    assert len(lines) == 2, result.stdout[-3000:]  # one per process: rank 0 decided too, it was not just killed
    for line in lines:
        assert re.fullmatch(
            r"error: The training loss became NaN or infinite at optimizer step 3, .*resume_from_checkpoint: true\.",
            line,
        )
        assert "checkpoint-2, is kept" in line
    assert_kept_only(run_dir, ["checkpoint-2"])


def test_the_loss_is_read_only_on_logging_steps_yet_the_message_names_the_first_bad_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    script = faults.load_script("finetune")
    make_medmnist_npz(tmp_path / "data" / "breastmnist.npz")
    values = tiny_run_config(tmp_path, tmp_path / "data", max_steps=6, logging_steps=3, save_strategy="no")
    config = write_config(tmp_path / "run.yaml", **values)
    checked_at = []
    original = NonFiniteGuard.check_loss
    monkeypatch.setattr(NonFiniteGuard, "check_loss", lambda self, args: checked_at.append(1) or original(self, args))
    corrupt_step(monkeypatch, 2, lambda loss, logits: loss * float("nan"))
    line = run_and_capture_error(script, config, capsys)
    assert "The training loss became NaN or infinite at optimizer step 2" in line
    assert len(checked_at) == 1  # read once, at the logging step 3: no host sync on the other steps
