"""Kill-and-resume runs: the configs, the kill between two checkpoints, the uninterrupted reference and the
comparison of the two."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from pipelines.models import build_classifier

from helpers import faults
from helpers.data import make_medmnist_npz, tiny_run_config
from helpers.models import PROCESSOR_32, TINY_RESNET, TINY_VIT

MAX_STEPS, SAVE_STEPS, KILL_AFTER_STEP = 6, 2, 3  # killed after step 3: checkpoint-2 on disk, checkpoint-4 not yet
COMPARED_METRICS = ("samples", "accuracy", "auc", "f1", "loss")


def finetune_values(tmp_path: Path, **overrides: object) -> dict:
    make_medmnist_npz(tmp_path / "data" / "breastmnist.npz", counts=(40, 13, 17))
    values = tiny_run_config(
        tmp_path, tmp_path / "data", max_steps=MAX_STEPS, save_strategy="steps", save_steps=SAVE_STEPS
    )
    values.update(overrides)
    return values


def distill_values(tmp_path: Path, **overrides: object) -> dict:
    """A DeiT student (distillation token) with a ResNet teacher; teacher logits cached, as by default."""
    teacher, processor = build_classifier(
        TINY_RESNET, ["malignant", "normal, benign"], image_processor_config=PROCESSOR_32
    )
    teacher.save_pretrained(tmp_path / "teacher")
    processor.save_pretrained(tmp_path / "teacher")
    values = finetune_values(
        tmp_path,
        model_config={**TINY_VIT, "model_type": "deit"},
        deit_distillation_token=True,
        teacher_model_name_or_path=str(tmp_path / "teacher"),
        train_augmentation=False,
        train_baseline=False,
        latency_repeats=1,
    )
    values.update(overrides)
    return values


def kill_mid_interval(script: str, config: Path, tmp_path: Path, processes: int = 1, **env: object) -> None:
    """Start the run, wait until it has finished step 3 (checkpoint-2 written), SIGKILL it there."""
    fault_dir, log = tmp_path / "faults", tmp_path / "killed.log"
    env = faults.environment(FAULT_DIR=fault_dir, FAULT_PAUSE_AT_STEP=KILL_AFTER_STEP, **env)
    process = faults.start(faults.command(script, config, processes=processes, faults=True), log, env)
    faults.wait_for(faults.markers(fault_dir, "paused", processes), process, log)
    faults.kill_tree(process)
    assert process.returncode == -9


def run_reference_here(script: str, config: Path, output_dir: Path) -> None:
    """The uninterrupted run, in this process, on one thread like the subprocesses (OMP_NUM_THREADS=1): the same
    seed, thread count and code give bit-identical results, and this costs no second start of Python."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        faults.load_script(script).main([str(config), "--output_dir", str(output_dir)])
    finally:
        torch.set_num_threads(threads)


def assert_killed_between_checkpoints(run_dir: Path) -> None:
    checkpoints = sorted(path.name for path in run_dir.glob("checkpoint-*"))
    assert checkpoints == [f"checkpoint-{SAVE_STEPS}"], checkpoints
    assert json.loads((run_dir / f"checkpoint-{SAVE_STEPS}" / "trainer_state.json").read_text())["global_step"] == 2
    assert not (run_dir / "model.safetensors").exists() and not (run_dir / "metrics.json").exists()


def assert_same_result_and_step_count(resumed: Path, reference: Path) -> None:
    """Bit-identical final weights and metrics, and exactly MAX_STEPS optimizer steps, each logged once."""
    expected, weights = load_file(reference / "model.safetensors"), load_file(resumed / "model.safetensors")
    assert expected.keys() == weights.keys()
    for name, tensor in expected.items():
        assert torch.equal(weights[name], tensor), name
    metrics, reference_metrics = (json.loads((folder / "metrics.json").read_text()) for folder in (resumed, reference))
    for split in ("validation", "test"):
        for name in COMPARED_METRICS:
            assert metrics[split][name] == reference_metrics[split][name], (split, name)
    final = resumed / f"checkpoint-{MAX_STEPS}"
    state = json.loads((final / "trainer_state.json").read_text())
    assert state["global_step"] == state["max_steps"] == MAX_STEPS
    assert [entry["step"] for entry in state["log_history"] if "loss" in entry] == list(range(1, MAX_STEPS + 1))
    optimizer = torch.load(final / "optimizer.pt", weights_only=True)
    assert {int(parameter["step"]) for parameter in optimizer["state"].values()} == {MAX_STEPS}  # AdamW's own count
    scheduler = torch.load(final / "scheduler.pt", weights_only=True)
    assert scheduler["last_epoch"] == MAX_STEPS
