"""A CIFAR-style ResNet-18 as a transformers model, registered with the Auto classes when `pipelines` is imported.

transformers' ResNet always starts with a 7x7 stride-2 convolution and a max-pool, which leave a 1x1 map in the
last stage at 32 px: Grad-CAM on it is one value per image. The CIFAR variant (He et al. 2016, section 4.2, as the
seed's model and most CIFAR code write it) keeps full resolution in the stem: one 3x3 stride-1 convolution and no
pool, so the four stages see 32, 16, 8 and 4 px, and the last stage's map is 4x4.

Saved folders carry ``"model_type": "cifar_resnet"`` and no ``auto_map``: `from_pretrained`, `AutoModel*` and
`transformers.pipeline` load them without remote code once this module has run (``import pipelines``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForImageClassification,
    PretrainedConfig,
    PreTrainedModel,
)
from transformers.modeling_outputs import (
    BaseModelOutputWithPoolingAndNoAttention,
    ImageClassifierOutputWithNoAttention,
)


class CifarResNetConfig(PretrainedConfig):
    """A CIFAR-style ResNet of basic blocks.

    Args:
        num_channels: Input channels.
        embedding_size: Channels of the 3x3 stride-1 stem.
        hidden_sizes: Channels of each stage; every stage after the first halves the map (stride 2).
        depths: Basic blocks per stage ([2, 2, 2, 2] is ResNet-18).
    """

    model_type = "cifar_resnet"

    def __init__(
        self,
        num_channels: int = 3,
        embedding_size: int = 64,
        hidden_sizes: list[int] | tuple[int, ...] = (64, 128, 256, 512),
        depths: list[int] | tuple[int, ...] = (2, 2, 2, 2),
        **kwargs: Any,
    ) -> None:
        if len(hidden_sizes) != len(depths):
            raise ValueError(f"hidden_sizes {list(hidden_sizes)} and depths {list(depths)} need one entry per stage.")
        self.num_channels = num_channels
        self.embedding_size = embedding_size
        self.hidden_sizes = list(hidden_sizes)
        self.depths = list(depths)
        super().__init__(**kwargs)


def conv_bn(in_channels: int, out_channels: int, kernel_size: int, stride: int) -> nn.Sequential:
    """Convolution (no bias: the batch norm has one) and batch norm."""
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(out_channels))


class CifarResNetBasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection; a 1x1 projection where the shape changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = conv_bn(in_channels, out_channels, 3, stride)
        self.conv2 = conv_bn(out_channels, out_channels, 3, 1)
        changes_shape = stride != 1 or in_channels != out_channels
        self.shortcut = conv_bn(in_channels, out_channels, 1, stride) if changes_shape else nn.Identity()
        self.activation = nn.ReLU()

    def forward(self, hidden_state: torch.Tensor) -> torch.Tensor:
        residual = self.shortcut(hidden_state)
        hidden_state = self.conv2(self.activation(self.conv1(hidden_state)))
        return self.activation(hidden_state + residual)


class CifarResNetPreTrainedModel(PreTrainedModel):
    config_class = CifarResNetConfig
    base_model_prefix = "resnet"
    main_input_name = "pixel_values"

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # As transformers' ResNet and torchvision's: He initialisation for the convolutions, identity batch norms,
        # torch's own default for the linear head.
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
            module.reset_running_stats()
        elif isinstance(module, nn.Linear):
            nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            bound = 1 / math.sqrt(module.in_features)
            nn.init.uniform_(module.bias, -bound, bound)


class CifarResNetModel(CifarResNetPreTrainedModel):
    """The stem and the stages, with global average pooling.

    ``stages`` is the model's one list of same-typed blocks, where `explain.layers` finds the last stage by structure.
    """

    def __init__(self, config: CifarResNetConfig) -> None:
        super().__init__(config)
        self.embedder = nn.Sequential(conv_bn(config.num_channels, config.embedding_size, 3, 1), nn.ReLU())
        stages = []
        in_channels = config.embedding_size
        for index, (channels, depth) in enumerate(zip(config.hidden_sizes, config.depths)):
            stride = 1 if index == 0 else 2
            blocks = [CifarResNetBasicBlock(in_channels, channels, stride)]
            blocks += [CifarResNetBasicBlock(channels, channels, 1) for _ in range(depth - 1)]
            stages.append(nn.Sequential(*blocks))
            in_channels = channels
        self.stages = nn.ModuleList(stages)
        self.pooler = nn.AdaptiveAvgPool2d(1)
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> BaseModelOutputWithPoolingAndNoAttention | tuple[torch.Tensor, ...]:
        """Args:
            pixel_values: (B, num_channels, H, W).

        Returns:
            ``last_hidden_state`` (B, hidden_sizes[-1], H/8, W/8) for four stages, ``pooler_output``
            (B, hidden_sizes[-1], 1, 1), and with `output_hidden_states` the stem's and every stage's output.
        """
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        hidden_state = self.embedder(pixel_values)  # (B, embedding_size, H, W)
        hidden_states = (hidden_state,)
        for stage in self.stages:
            hidden_state = stage(hidden_state)
            hidden_states += (hidden_state,)
        pooled = self.pooler(hidden_state)  # (B, C, 1, 1)
        kept = hidden_states if output_hidden_states else None
        if not return_dict:
            return tuple(value for value in (hidden_state, pooled, kept) if value is not None)
        return BaseModelOutputWithPoolingAndNoAttention(
            last_hidden_state=hidden_state, pooler_output=pooled, hidden_states=kept
        )


class CifarResNetForImageClassification(CifarResNetPreTrainedModel):
    """`CifarResNetModel` with a linear head on the pooled features (11,173,962 parameters for ResNet-18, 10 classes)."""

    def __init__(self, config: CifarResNetConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.resnet = CifarResNetModel(config)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(config.hidden_sizes[-1], config.num_labels))
        self.post_init()

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        **kwargs: Any,
    ) -> ImageClassifierOutputWithNoAttention | tuple[torch.Tensor, ...]:
        """Args:
            pixel_values: (B, num_channels, H, W).
            labels: (B,) class indices, or (B, num_labels) targets for multi-label models; gives ``loss``.

        Returns:
            ``logits`` (B, num_labels), ``loss`` when `labels` are given, ``hidden_states`` when asked for.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        outputs = self.resnet(pixel_values, output_hidden_states=output_hidden_states, return_dict=True)
        logits = self.classifier(outputs.pooler_output)  # (B, num_labels)
        loss = self.loss_function(labels, logits, self.config) if labels is not None else None
        if not return_dict:
            output = tuple(value for value in (logits, outputs.hidden_states) if value is not None)
            return (loss, *output) if loss is not None else output
        return ImageClassifierOutputWithNoAttention(loss=loss, logits=logits, hidden_states=outputs.hidden_states)


def register() -> None:
    """Make ``model_type: cifar_resnet`` known to `AutoConfig`, `AutoModel` and `AutoModelForImageClassification`
    (and so to `transformers.pipeline`). The image processor needs no registration: a saved folder names its class
    (``ViTImageProcessor``) in preprocessor_config.json."""
    AutoConfig.register(CifarResNetConfig.model_type, CifarResNetConfig, exist_ok=True)
    AutoModel.register(CifarResNetConfig, CifarResNetModel, exist_ok=True)
    AutoModelForImageClassification.register(CifarResNetConfig, CifarResNetForImageClassification, exist_ok=True)
