"""A distillation run on generated BreastMNIST-format data: a tiny random teacher and a DeiT student."""

from __future__ import annotations

from pathlib import Path

import torch

from pipelines.models import build_classifier

from helpers.data import make_medmnist_npz, tiny_run_config, write_config
from helpers.models import PROCESSOR_32, TINY_RESNET, TINY_VIT

LABELS = ["malignant", "normal, benign"]
COUNTS = (40, 13, 17)


def save_teacher(folder: Path, labels: list[str] = LABELS) -> Path:
    torch.manual_seed(0)  # the same random teacher in every run
    model, processor = build_classifier(TINY_RESNET, labels, image_processor_config=PROCESSOR_32)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def distill_config(tmp_path: Path, **overrides: object) -> Path:
    make_medmnist_npz(tmp_path / "data" / "breastmnist.npz", counts=COUNTS)
    values = tiny_run_config(
        tmp_path,
        tmp_path / "data",
        output_dir=str(tmp_path / "student"),
        model_config={**TINY_VIT, "model_type": "deit"},
        deit_distillation_token=True,
        teacher_model_name_or_path=str(save_teacher(tmp_path / "teacher")),
        max_steps=3,
        latency_repeats=2,
        baseline_output_dir=str(tmp_path / "baseline"),
    )
    values.update(overrides)
    return write_config(tmp_path / "distill.yaml", **values)
