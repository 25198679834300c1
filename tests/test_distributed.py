"""Two processes (DDP on CPU via accelerate) evaluate every test image exactly once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipelines.locks import LOCK_NAME

from helpers import faults
from helpers.data import make_medmnist_npz, tiny_run_config, write_config
from helpers.project import load_script

main = load_script("finetune").main

COUNTS = (48, 13, 17)  # odd: with two processes, padding would count one image twice


@pytest.mark.slow
def test_two_process_run_matches_single_process_evaluation(tmp_path: Path) -> None:
    make_medmnist_npz(tmp_path / "data" / "breastmnist.npz", counts=COUNTS)
    values = tiny_run_config(tmp_path, tmp_path / "data", max_steps=3, per_device_eval_batch_size=4)
    config = write_config(tmp_path / "ddp.yaml", **values)
    result = faults.run(faults.command("finetune", config, processes=2), tmp_path / "ddp.log")
    assert result.returncode == 0, result.stdout[-3000:]
    # 48 images in batches of 8 per process: one epoch is 3 steps with two processes (6 with one).
    assert "'train_runtime'" in result.stdout and "'epoch': '1'" in result.stdout, result.stdout[-2000:]
    assert result.stdout.count("| test |") == 1  # only the main process reports
    distributed = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert distributed["validation"]["samples"] == COUNTS[1]
    assert distributed["test"]["samples"] == COUNTS[2]
    assert distributed["command"].startswith("accelerate launch scripts/finetune.py ")  # as it was launched
    assert not (tmp_path / "run" / LOCK_NAME).exists()  # taken once, by the main process, and released

    single = main(
        [
            str(config),
            "--do_train",
            "false",
            "--model_config",
            "null",
            "--model_name_or_path",
            str(tmp_path / "run"),
            "--output_dir",
            str(tmp_path / "single"),
        ]
    )
    for split in ("validation", "test"):
        for metric in ("samples", "accuracy", "auc", "f1"):
            assert single[split][metric] == pytest.approx(distributed[split][metric], abs=1e-6), (split, metric)
