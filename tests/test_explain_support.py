"""Tiny models shared by the explain tests (this file holds no tests).

Every builder is seeded, runs on the CPU in milliseconds, and covers one architecture family the explain package
must handle: ViT, DeiT with its distillation token, DINOv2 with register tokens, BEiT, ResNet, ConvNeXt, Swin.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import AutoConfig, AutoModelForImageClassification, PreTrainedModel

TOKENS = {"image_size": 32, "patch_size": 8, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2}
CONFIGS = {
    "vit": {**TOKENS, "intermediate_size": 64},
    "deit": {**TOKENS, "intermediate_size": 64, "architectures": ["DeiTForImageClassificationWithTeacher"]},
    "dinov2_with_registers": {**TOKENS, "mlp_ratio": 2, "num_register_tokens": 4},
    "beit": {**TOKENS, "intermediate_size": 64},
    "resnet": {"embedding_size": 8, "hidden_sizes": [8, 16], "depths": [1, 1], "layer_type": "basic"},
    # layer scale 1 rather than 1e-6: a random ConvNeXt is otherwise almost the identity plus its stem.
    "convnext": {"hidden_sizes": [8, 16], "depths": [1, 1], "num_stages": 2, "layer_scale_init_value": 1.0},
    "swin": {
        "image_size": 32,
        "patch_size": 4,
        "embed_dim": 8,
        "depths": [1, 1],
        "num_heads": [1, 1],
        "window_size": 2,
    },
}
TOKEN_MODELS = ("vit", "deit", "dinov2_with_registers", "beit")
ALL_MODELS = tuple(CONFIGS)


def tiny(model_type: str, seed: int = 0, num_labels: int = 3, **overrides: object) -> PreTrainedModel:
    """A randomly initialised tiny classifier of `model_type`, in eval mode."""
    torch.manual_seed(seed)
    config = AutoConfig.for_model(model_type, num_labels=num_labels, **{**CONFIGS[model_type], **overrides})
    return AutoModelForImageClassification.from_config(config).eval()


def images(batch: int = 3, height: int = 32, width: int = 32, channels: int = 3, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, channels, height, width, generator=generator)


class FullResolutionCNN(nn.Module):
    """Two 3x3 convolutions at the input resolution, global pooling and a linear head: a target layer whose maps
    need no upsampling, so a comparison with another library tests the weighting alone."""

    def __init__(self, seed: int = 0, num_labels: int = 3) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(8, num_labels)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.features(pixel_values)).flatten(1))


@pytest.fixture(autouse=True)
def one_thread():
    """The explain tests' models are tiny; on this 2-core CPU, two threads make each op ~100x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _ours(hook: object) -> bool:
    # transformers 5 installs its own permanent hooks the first time a model is asked for output_attentions
    # (`install_output_capuring_hook`, sic); they belong to the model, not to a call of ours.
    return "output_capturing_hook" not in getattr(hook, "__qualname__", "")


def no_hooks_left(model: nn.Module) -> bool:
    """No forward, pre-forward or backward hook of ours is left on any module."""
    return all(
        not any(_ours(hook) for hook in module._forward_hooks.values())
        and not any(_ours(hook) for hook in module._forward_pre_hooks.values())
        and not module._backward_hooks
        and not module._backward_pre_hooks
        for module in model.modules()
    )
