"""Tiny random classifier configs and processors for wiring tests, and saved tiny classifiers."""

from __future__ import annotations

from pathlib import Path

TINY_RESNET = {
    "model_type": "resnet",
    "embedding_size": 8,
    "hidden_sizes": [8, 16],
    "depths": [1, 1],
    "layer_type": "basic",
}
TINY_VIT = {
    "model_type": "vit",
    "image_size": 32,
    "patch_size": 8,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
}
PROCESSOR_32 = {"size": {"height": 32, "width": 32}, "image_mean": [0.5] * 3, "image_std": [0.5] * 3}
PROCESSOR_28 = {**PROCESSOR_32, "size": {"height": 28, "width": 28}}
BREAST_LABELS = ["malignant", "normal, benign"]  # BreastMNIST's


def save_classifier(folder: Path, model_config: dict, labels: list[str] = BREAST_LABELS) -> str:
    """A random classifier of `model_config` for `labels` (32 px processor) saved in `folder`; returns the folder."""
    from pipelines.models import build_classifier

    model, processor = build_classifier(model_config, labels, image_processor_config=PROCESSOR_32)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return str(folder)


def save_tiny_classifiers(root: Path, names: tuple[str, str]) -> dict[str, str]:
    """A tiny random ResNet (28 px) and ViT (32 px) for BreastMNIST's labels, saved as `root / names[i]`; seeded by
    each name's length. Returns name -> folder."""
    import torch

    from pipelines.models import build_classifier

    folders = {}
    for name, config, processor in zip(names, (TINY_RESNET, TINY_VIT), (PROCESSOR_28, PROCESSOR_32)):
        torch.manual_seed(len(name))
        model, image_processor = build_classifier(config, BREAST_LABELS, image_processor_config=processor)
        model.save_pretrained(root / name)
        image_processor.save_pretrained(root / name)
        folders[name] = str(root / name)
    return folders
