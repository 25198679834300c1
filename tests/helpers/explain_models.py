"""Tiny models shared by the explain tests.

Every builder is seeded, runs on the CPU in milliseconds, and covers one architecture family the explain package
must handle: ViT, DeiT with its distillation token, DINOv2 with register tokens, BEiT, ResNet, ConvNeXt, Swin.
"""

from __future__ import annotations

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


class HandSet(nn.Module):
    """x -> ReLU(1x1 conv with channel weights [1, -1]) -> mean over pixels -> linear head [[1, -1], [-1, 2]]."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, kernel_size=1, bias=False)
        self.act = nn.ReLU()
        self.head = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([1.0, -1.0]).reshape(2, 1, 1, 1))
            self.head.weight.copy_(torch.tensor([[1.0, -1.0], [-1.0, 2.0]]))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.head(self.act(self.conv(pixel_values)).mean(dim=(2, 3)))


HAND_INPUT = torch.tensor([[[[1.0, 2.0], [-1.0, 3.0]]]])  # (1, 1, 2, 2)


class CheckerRegion(nn.Module):
    """Reads only the left half of a 16 x 16 image: the class's evidence is the match of those pixels with a
    checkerboard (a pattern that neither a blur nor linear imputation can restore), scaled by 3."""

    def __init__(self, bias: float = 0.0) -> None:
        super().__init__()
        pattern = torch.zeros(16, 16)
        pattern[:, :8] = (torch.arange(16)[:, None] + torch.arange(8)[None, :]) % 2 * 2 - 1.0
        self.register_buffer("pattern", pattern)
        self.bias = bias

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        evidence = (pixel_values[:, 0] * self.pattern).sum((1, 2)) / 128 * 3 + self.bias
        return torch.stack([evidence, -evidence], dim=1)


def checker_images(count: int = 24, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Images that carry the checkerboard (each its own strength) on noise, and a map of the region that decides."""
    generator = torch.Generator().manual_seed(seed)
    strength = 0.5 + torch.rand(count, 1, 1, generator=generator)
    images = 0.3 * torch.randn(count, 16, 16, generator=generator) + strength * CheckerRegion().pattern
    region = torch.zeros(count, 16, 16)
    region[..., :8] = 1.0
    truthful = region + 0.01 * torch.rand(count, 16, 16, generator=generator)  # the order inside a region: random
    return images[:, None], truthful
