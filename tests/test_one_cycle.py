"""``lr_scheduler_type: one_cycle``: the learning rate of every optimizer step is torch's `OneCycleLR`'s, also across
a kill and a resume; the one_cycle keys are checked; the other schedules are transformers' own, unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import TrainerCallback
from transformers.trainer_utils import SchedulerType

from pipelines import ConfigError, DataArguments, load_image_dataset
from pipelines.config import parse_config
from pipelines.models import build_classifier
from trainers.arguments import OneCycleTrainingArguments
from trainers.image_classification import ImageClassificationTrainer, build_trainer

from helpers import faults
from helpers.data import make_medmnist_npz, write_config
from helpers.models import PROCESSOR_32, TINY_RESNET
from helpers.resume import (
    MAX_STEPS,
    assert_killed_between_checkpoints,
    assert_same_result_and_step_count,
    finetune_values,
    kill_mid_interval,
    run_reference_here,
)

ONE_CYCLE = {
    "lr_scheduler_type": "one_cycle",
    "one_cycle_max_lr": 0.02,
    "one_cycle_pct_start": 0.4,
    "one_cycle_div_factor": 10.0,
    "one_cycle_final_div_factor": 100.0,
}


def reference_rates(steps: int, max_lr: float, pct_start: float, div_factor: float, final_div_factor: float):
    """The learning rate torch's OneCycleLR gives each of `steps` optimizer steps, and after the last one."""
    optimizer = torch.optim.AdamW([torch.zeros(1, requires_grad=True)], lr=1.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=max_lr,
        total_steps=steps,
        pct_start=pct_start,
        div_factor=div_factor,
        final_div_factor=final_div_factor,
    )
    rates = []
    for _ in range(steps):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    return rates, optimizer.param_groups[0]["lr"]


def reference_for(values: dict, steps: int):
    return reference_rates(
        steps,
        values["one_cycle_max_lr"],
        values["one_cycle_pct_start"],
        values["one_cycle_div_factor"],
        values["one_cycle_final_div_factor"],
    )


class RecordRates(TrainerCallback):
    """The learning rate and Adam beta1 each optimizer step is taken with."""

    def __init__(self) -> None:
        self.rates: list[float] = []
        self.beta1: list[float] = []

    def on_pre_optimizer_step(self, args, state, control, optimizer=None, **kwargs) -> None:
        self.rates.append(optimizer.param_groups[0]["lr"])
        self.beta1.append(optimizer.param_groups[0]["betas"][0])


def test_every_optimizer_step_takes_one_cycle_lrs_rate(tmp_path: Path) -> None:
    make_medmnist_npz(tmp_path / "breastmnist.npz", counts=(40, 8, 8))
    data_args = DataArguments(dataset_name="breastmnist", data_dir=str(tmp_path), verify_md5=False)
    data = load_image_dataset(data_args)
    model, processor = build_classifier(TINY_RESNET, data.label_names, image_processor_config=PROCESSOR_32)
    steps = 10
    args = OneCycleTrainingArguments(
        output_dir=str(tmp_path / "run"),
        use_cpu=True,
        report_to="none",
        max_steps=steps,
        per_device_train_batch_size=8,
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
        learning_rate=1.0,  # ignored: one_cycle_max_lr sets the peak
        **ONE_CYCLE,
    )
    assert args.lr_scheduler_type == "one_cycle"
    trainer = build_trainer(ImageClassificationTrainer, model, processor, args, data, data_args)
    recorder = RecordRates()
    trainer.add_callback(recorder)
    trainer.train()

    expected, after_last = reference_for(ONE_CYCLE, steps)
    assert isinstance(trainer.lr_scheduler, torch.optim.lr_scheduler.OneCycleLR)
    assert recorder.rates == pytest.approx(expected, rel=1e-12)
    assert recorder.rates[0] == pytest.approx(0.02 / 10)  # starts at max_lr / div_factor
    assert max(recorder.rates) == pytest.approx(0.02) and recorder.rates.index(max(recorder.rates)) == 3
    assert recorder.beta1[0] == pytest.approx(0.95) and min(recorder.beta1) == pytest.approx(0.85)  # torch's default
    # Trainer logs the rate each step was taken with, which the kill-and-resume test below reads back.
    logged = [entry["learning_rate"] for entry in trainer.state.log_history if "loss" in entry]
    assert logged == pytest.approx(expected, rel=1e-12)
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(after_last, rel=1e-12)


def test_other_schedules_are_still_transformers_own(tmp_path: Path) -> None:
    args = OneCycleTrainingArguments(output_dir=str(tmp_path), lr_scheduler_type="cosine", report_to="none")
    assert args.lr_scheduler_type == SchedulerType.COSINE
    with pytest.raises(ValueError, match="is not a valid SchedulerType"):
        OneCycleTrainingArguments(output_dir=str(tmp_path), lr_scheduler_type="one_cycel", report_to="none")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"warmup_steps": 0.1}, "warmup_steps is 0.1, but one_cycle warms up by itself"),
        ({"one_cycle_pct_start": 1.0}, "one_cycle_pct_start is 1.0; it must lie strictly between 0 and 1"),
        ({"one_cycle_max_lr": 0}, "one_cycle_max_lr is 0; it must be greater than 0"),
        ({"one_cycle_div_factor": -1}, "one_cycle_div_factor is -1"),
        ({"lr_scheduler_kwargs": {"eta_min": 0.1}}, "lr_scheduler_kwargs are not read by one_cycle"),
    ],
)
def test_bad_one_cycle_settings_are_one_sentence(tmp_path: Path, values: dict, message: str) -> None:
    config = write_config(tmp_path / "run.yaml", output_dir=str(tmp_path), report_to="none", **{**ONE_CYCLE, **values})
    with pytest.raises(ConfigError, match=message) as error:
        parse_config((OneCycleTrainingArguments,), [str(config)])
    assert "\n" not in str(error.value)


@pytest.mark.slow
def test_one_cycle_rates_and_result_survive_a_kill_and_resume(tmp_path: Path) -> None:
    values = finetune_values(tmp_path, **ONE_CYCLE, learning_rate=1.0)
    config = write_config(tmp_path / "run.yaml", **values)
    run_dir, reference_dir = Path(values["output_dir"]), tmp_path / "reference"
    run_reference_here("finetune", config, reference_dir)

    kill_mid_interval("finetune", config, tmp_path, OMP_NUM_THREADS=1)
    assert_killed_between_checkpoints(run_dir)
    command = faults.command("finetune", config, "--resume_from_checkpoint", "true")
    result = faults.run(command, tmp_path / "resumed.log", env=faults.environment(OMP_NUM_THREADS=1))
    assert result.returncode == 0, result.stdout[-3000:]

    assert_same_result_and_step_count(run_dir, reference_dir)
    state = json.loads((run_dir / f"checkpoint-{MAX_STEPS}" / "trainer_state.json").read_text())
    logged = [entry["learning_rate"] for entry in state["log_history"] if "loss" in entry]
    expected, _ = reference_for(ONE_CYCLE, MAX_STEPS)
    # Steps 1-2 come from the killed run's checkpoint, 3-6 from the resumed run, which continued the cycle.
    assert logged == pytest.approx(expected, rel=1e-12)
    assert logged[2] != pytest.approx(expected[0])  # a scheduler restarted on resume would begin the cycle again
    scheduler = torch.load(run_dir / f"checkpoint-{MAX_STEPS}" / "scheduler.pt", weights_only=True)
    assert scheduler["total_steps"] == MAX_STEPS
