"""The benchmarks' models and data: random-weight presets (ViT-B/16, DeiT-Tiny, the quickstart's ResNets, ...) and
synthetic uint8 images of a MedMNIST subset's shape."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Array3D, ClassLabel, Dataset, Features
from transformers import AutoModelForImageClassification, PreTrainedModel, ResNetConfig, ViTConfig

from pipelines.errors import ConfigError
from pipelines.loading import with_uint8_format
from pipelines.runtime import default_device, supports_bf16

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


# The ViT presets the Grad-CAM and faithfulness benchmarks run (their layer is a ViT block's first layernorm).
VIT_PRESETS = ("vit-base", "deit-tiny")


def check_vit_preset(name: str) -> str:
    if name not in VIT_PRESETS:
        raise ConfigError(f"--model is {name!r}; use one of {', '.join(VIT_PRESETS)}.")
    return name


def require_at_least(settings: Any, minimum: int, *names: str) -> None:
    """Refuse, in one sentence, the first of the settings' `names` below `minimum`."""
    for name in names:
        value = getattr(settings, name)
        if value is not None and value < minimum:
            bound = f"at least {minimum}" if minimum else "0 or more"
            raise ConfigError(f"--{name} is {value}; it must be {bound}.")


@dataclass
class BenchmarkSettings:
    """What every benchmark's settings share: the device it measures on."""

    cpu: bool = field(default=False, metadata={"help": "Measure on the CPU even when a GPU is present."})

    @property
    def device(self) -> torch.device:
        return default_device(self.cpu)


@dataclass
class StepBenchmark(BenchmarkSettings):
    """Settings of the benchmarks that time training steps on synthetic uint8 images."""

    image_size: int = field(default=224, metadata={"help": "The model's input size."})
    source_size: int = field(default=28, metadata={"help": "The size of the stored uint8 images."})
    batch_size: int = field(default=128, metadata={"help": "Images per training step."})
    steps: int = field(default=30, metadata={"help": "Training steps, the warm-up included."})
    warmup: int = field(default=5, metadata={"help": "Steps run before timing starts."})

    def __post_init__(self) -> None:
        require_at_least(self, 1, "image_size", "source_size", "batch_size", "steps")
        require_at_least(self, 0, "warmup")
        if self.warmup >= self.steps:
            raise ConfigError(
                f"--warmup ({self.warmup}) must be smaller than --steps ({self.steps}), or nothing is timed."
            )

    @property
    def timed_steps(self) -> int:
        return self.steps - self.warmup

    @property
    def bf16(self) -> bool:
        """bf16 autocast, as precision 'auto' trains: on a GPU that supports it."""
        return supports_bf16(self.device)


@dataclass
class ViTBenchmark(BenchmarkSettings):
    """Settings of the benchmarks that explain with a randomly initialised ViT preset, in fp32 and bf16."""

    model: str = field(default="vit-base", metadata={"help": "vit-base (ViT-B/16) or deit-tiny."})
    image_size: int = field(default=224, metadata={"help": "The model's input size."})
    bf16: bool | None = field(
        default=None, metadata={"help": "Measure in bf16 too (the curves: instead); default: on a GPU with bf16."}
    )

    def __post_init__(self) -> None:
        check_vit_preset(self.model)
        require_at_least(self, 1, "image_size")

    @property
    def with_bf16(self) -> bool:
        return supports_bf16(self.device) if self.bf16 is None else self.bf16


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
