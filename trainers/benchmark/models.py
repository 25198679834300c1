"""The benchmarks' models and data: random-weight presets (ViT-B/16, DeiT-Tiny, the quickstart's ResNets, ...) and
synthetic uint8 images of a MedMNIST subset's shape."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Array3D, ClassLabel, Dataset, Features
from transformers import AutoModelForImageClassification, PreTrainedModel, ResNetConfig, ViTConfig

from pipelines.errors import ConfigError
from pipelines.loading import with_uint8_format

MODEL_PRESETS: dict[str, dict[str, Any]] = {
    "vit-base": {},  # ViTConfig's defaults are ViT-B/16 at 224 px
    "deit-tiny": {"hidden_size": 192, "num_attention_heads": 3, "intermediate_size": 768},
    "vit-micro": {"hidden_size": 96, "num_hidden_layers": 4, "num_attention_heads": 3, "intermediate_size": 384},
    # A ViT student of the quickstart's size (at 64 px an 8x8 patch grid), 0.32M parameters.
    "vit-micro-p8": {
        "patch_size": 8,
        "hidden_size": 96,
        "num_hidden_layers": 4,
        "num_attention_heads": 3,
        "intermediate_size": 192,
    },
    # A small CNN teacher built from a config, 1.2M parameters.
    "resnet-small": {
        "model_type": "resnet",
        "embedding_size": 32,
        "hidden_sizes": [32, 64, 128, 256],
        "depths": [1, 1, 1, 1],
        "layer_type": "basic",
    },
    # The quickstart's models (configs/quickstart.yaml at 64 px, configs/quickstart_distill.yaml at 28 px).
    "quickstart-teacher": {
        "model_type": "resnet",
        "embedding_size": 32,
        "hidden_sizes": [64, 128, 256],
        "depths": [1, 1, 1],
        "layer_type": "basic",
    },
    "quickstart-student": {
        "model_type": "resnet",
        "embedding_size": 16,
        "hidden_sizes": [32, 64],
        "depths": [1, 1],
        "layer_type": "basic",
    },
}


NUM_LABELS = 9  # PathMNIST's classes


def synthetic_images(count: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 RGB images (count, size, size, 3) and labels, like a MedMNIST subset."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8), rng.integers(0, NUM_LABELS, count)


def check_preset(name: str, option: str = "model") -> str:
    """`name` when it is one of `MODEL_PRESETS`; otherwise a one-sentence `ConfigError` naming them."""
    if name not in MODEL_PRESETS:
        raise ConfigError(f"--{option} is {name!r}; use one of {', '.join(sorted(MODEL_PRESETS))}.")
    return name


def build_model(preset: str, image_size: int, seed: int = 0) -> PreTrainedModel:
    """A randomly initialised classifier of the preset, seeded, for `image_size` px inputs (ViTs; a ResNet takes
    any size)."""
    torch.manual_seed(seed)
    settings = dict(MODEL_PRESETS[preset])
    if settings.pop("model_type", "vit") == "resnet":
        config = ResNetConfig(num_labels=NUM_LABELS, **settings)
    else:
        config = ViTConfig(image_size=image_size, num_labels=NUM_LABELS, **settings)
    return AutoModelForImageClassification.from_config(config)


def uint8_dataset(images: np.ndarray, labels: np.ndarray) -> Dataset:
    """The project's dataset form: uint8 arrays at native size, read out as uint8."""
    size = images.shape[1]
    features = Features({"image": Array3D((size, size, 3), "uint8"), "label": ClassLabel(num_classes=NUM_LABELS)})
    return with_uint8_format(Dataset.from_dict({"image": images, "label": labels}, features=features))


HUB_STANDINS = Path(__file__).resolve().parents[3] / "shared" / "hub-standins"
# ViT-B/16 as published (its config from the stand-in folder when this checkout sits beside it).
VIT_BASE_STANDIN = HUB_STANDINS / "google--vit-base-patch16-224"
