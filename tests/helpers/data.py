"""Generated MedMNIST-format files, the real ones when this machine has them, and run configs."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from medmnist import INFO

from helpers.models import PROCESSOR_32, TINY_RESNET
from helpers.project import ROOT

SHARED_MEDMNIST = ROOT.parent / "shared" / "data" / "medmnist"


def real_medmnist_root() -> Path | None:
    """The folder holding the real MedMNIST test files, or None when this machine has none."""
    for candidate in (os.environ.get("MEDMNIST_ROOT"), SHARED_MEDMNIST):
        if candidate and (Path(candidate) / "breastmnist.npz").is_file():
            return Path(candidate)
    return None


requires_real_medmnist = pytest.mark.skipif(
    real_medmnist_root() is None,
    reason="real MedMNIST files not found (set MEDMNIST_ROOT or place them in ../shared/data/medmnist)",
)


def make_medmnist_npz(
    path: Path,
    flag: str = "breastmnist",
    size: int = 28,
    counts: tuple[int, int, int] = (40, 12, 16),
    seed: int = 0,
    **overrides: np.ndarray,
) -> Path:
    """Write an npz in MedMNIST's format for `flag` with learnable labels (brightness encodes the class).

    Keys in `overrides` (e.g. ``train_labels=...``) replace the generated arrays, or are dropped when None.
    """
    info = INFO[flag]
    rng = np.random.default_rng(seed)
    num_labels = len(info["label"])
    multi_label = info["task"].startswith("multi-label")
    arrays = {}
    for split, count in zip(("train", "val", "test"), counts):
        if multi_label:
            labels = rng.integers(0, 2, size=(count, num_labels))
            level = labels[:, 0] * 150 + 40
        else:
            labels = rng.integers(0, num_labels, size=(count, 1))
            level = labels[:, 0] * (200 // max(num_labels - 1, 1)) + 20
        shape = (count, size, size) if info["n_channels"] == 1 else (count, size, size, 3)
        noise = rng.integers(0, 40, size=shape)
        images = np.clip(level.reshape((-1,) + (1,) * (len(shape) - 1)) + noise, 0, 255).astype(np.uint8)
        arrays[f"{split}_images"] = images
        arrays[f"{split}_labels"] = labels.astype(np.uint8)
    for key, value in overrides.items():
        if value is None:
            arrays.pop(key, None)
        else:
            arrays[key] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    return path


def write_config(path: Path, **values: object) -> Path:
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return path


# Evaluate and save every 2 steps and reload the "best" checkpoint at the end, best being the highest loss: an earlier
# checkpoint than the last, so that reloading it changes the weights.
BEST_IS_HIGHEST_LOSS = {
    "eval_strategy": "steps",
    "eval_steps": 2,
    "save_strategy": "steps",
    "save_steps": 2,
    "load_best_model_at_end": True,
    "metric_for_best_model": "loss",
    "greater_is_better": True,
}


def tiny_run_config(tmp_path: Path, data_dir: Path, **overrides: object) -> dict:
    """Settings for a seconds-long fine-tuning run on a generated BreastMNIST-format file."""
    values = {
        "dataset_source": "medmnist",
        "dataset_name": "breastmnist",
        "data_dir": str(data_dir),
        "verify_md5": False,
        "model_config": TINY_RESNET,
        "image_processor_config": PROCESSOR_32,
        "output_dir": str(tmp_path / "run"),
        "do_train": True,
        "max_steps": 4,
        "per_device_train_batch_size": 8,
        "per_device_eval_batch_size": 8,
        "learning_rate": 1.0e-3,
        "eval_strategy": "no",
        "save_strategy": "no",
        "logging_steps": 1,
        "report_to": "none",
        "disable_tqdm": True,
        "use_cpu": True,
        "seed": 0,
    }
    values.update(overrides)
    return values
