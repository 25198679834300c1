"""Seed 004 offline: configs/resnet18_cifar10_onecycle.yaml, unchanged but for its data (a generated CIFAR-shaped
Hub dataset saved to disk), a narrower CIFAR ResNet and tiny step counts, runs the seed's whole path:
lr_find -> fine-tune with one-cycle at the suggested peak -> explain with --misclassified -> evaluation report.

To look at the pictures: ``pytest tests/test_seed_004.py --basetemp /tmp/seed004``, then open
/tmp/seed004/test_*/run/lr_find.png, explain/misclassified.png and report/index.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Features, Image
from PIL import Image as PILImage

import explain.cli as explain_cli
from pipelines.models import load_classifier

from helpers.project import ROOT, load_script

RECIPE = ROOT / "configs" / "resnet18_cifar10_onecycle.yaml"
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
# The recipe's architecture (3x3 stem, four stages of basic blocks, 4x4 at 32 px) at an eighth of its width, so that
# the whole path takes seconds on a CPU; the full width is tested in test_cifar_resnet.py.
NARROW = "{model_type: cifar_resnet, embedding_size: 8, hidden_sizes: [8, 16, 32, 64], depths: [2, 2, 2, 2]}"


def cifar_like(path: Path, train: int = 80, test: int = 30, seed: int = 0) -> Path:
    """A DatasetDict shaped like the Hub's cifar10 (splits train/test, columns img/label, 32x32 RGB PNGs), with
    classes told apart by colour, written with save_to_disk."""
    rng = np.random.default_rng(seed)
    palette = rng.integers(30, 226, size=(10, 3))
    features = Features({"img": Image(), "label": ClassLabel(names=CIFAR_CLASSES)})

    def split(count: int) -> Dataset:
        labels = rng.integers(0, 10, size=count)
        noise = rng.integers(-30, 31, size=(count, 32, 32, 3))
        pixels = np.clip(palette[labels][:, None, None, :] + noise, 0, 255).astype(np.uint8)
        images = [PILImage.fromarray(image) for image in pixels]
        return Dataset.from_dict({"img": images, "label": labels.tolist()}, features=features)

    DatasetDict({"train": split(train), "test": split(test)}).save_to_disk(str(path))
    return path


def data_options(data: Path) -> list[str]:
    return ["--dataset_source", "hub", "--dataset_name", str(data), "--image_column", "img", "--label_column", "label"]


@pytest.mark.slow
def test_lr_find_then_one_cycle_fine_tune_then_misclassified_grad_cam_then_report(tmp_path: Path) -> None:
    data = cifar_like(tmp_path / "cifar10")
    run = tmp_path / "run"
    offline = [
        "--dataset_name", str(data), "--model_config", NARROW, "--output_dir", str(run),
        "--per_device_train_batch_size", "16", "--per_device_eval_batch_size", "32", "--use_cpu", "true",
        "--dataloader_num_workers", "0", "--dataloader_persistent_workers", "false",
        "--dataloader_prefetch_factor", "null", "--logging_steps", "1", "--disable_tqdm", "true",
    ]  # fmt: skip

    # 1. The range test writes the plot and a copy of the recipe with the suggested peak.
    suggested = tmp_path / "resnet18_cifar10_onecycle.yaml"
    lr_find = ["--start", "1e-5", "--end", "10", "--steps", "12", "--write_config", str(suggested)]
    sweep = load_script("lr_find").main([str(RECIPE), *offline, *lr_find])
    assert 1e-5 <= sweep.suggestion <= 10
    assert (run / "lr_find.png").is_file()
    peak = float(f"{sweep.suggestion:.2e}")
    assert f"one_cycle_max_lr: {sweep.suggestion:.2e}" in suggested.read_text()

    # 2. Fine-tuning from that copy follows OneCycleLR from the suggested peak (div_factor 100 in the recipe).
    report = load_script("finetune").main([str(suggested), *offline, "--max_steps", "10"])
    checkpoint = max(run.glob("checkpoint-*"), key=lambda path: int(path.name.split("-")[1]))
    history = json.loads((checkpoint / "trainer_state.json").read_text())["log_history"]
    rates = [entry["learning_rate"] for entry in history if "loss" in entry]
    assert len(rates) == 10 and rates[0] == pytest.approx(peak / 100)
    assert max(rates) == pytest.approx(peak, rel=0.05)  # the peak is reached a quarter of the way in
    model, _ = load_classifier(str(run))
    assert model.config.model_type == "cifar_resnet" and model.config.id2label[3] == "cat"
    assert json.loads((run / "metrics.json").read_text())["test"]["samples"] == 30

    # 3. The misclassified test images, with their Grad-CAM on the last stage.
    explain_out = tmp_path / "explain"
    explain = ["--model", str(run), *data_options(data), "--methods", "gradcam", "--misclassified", "--n", "4"]
    index = explain_cli.main([*explain, "--device", "cpu", "--out", str(explain_out)])
    files = {entry["file"]: entry for entry in index["files"]}
    assert "misclassified.png" in files and (explain_out / "misclassified.png").is_file()

    # 4. The evaluation report, whose accuracy is the fine-tuning run's own test accuracy.
    out = tmp_path / "report"
    evaluate = ["--models", str(run), *data_options(data), "--out", str(out), "--explain_images", "6"]
    evaluation = load_script("report").main(
        [*evaluate, "--steps", "3", "--latency_repeats", "1", "--sample_images", "2", "--device", "cpu"]
    )
    assert (out / "index.md").is_file()
    accuracy = json.loads((out / "metrics.json").read_text())["models"]["run"]["classification"]["accuracy"]
    assert accuracy == pytest.approx(report["test"]["accuracy"])
    assert evaluation["models"]["run"]["classification"]["accuracy"] == accuracy
