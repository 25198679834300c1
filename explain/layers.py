"""Where to look inside a model: the target layer, prefix tokens and the patch grid, found by structure.

Module paths move between transformers releases (5.17 has ``vit.encoder.layer``, 5.23 has ``vit.layers``), so
nothing here names a path. The encoder's blocks are the shallowest `nn.ModuleList` of same-typed modules; a
transformer's target is the input of its last block (the output of the block's first layernorm), a CNN's target
is the output of its last stage. This is the one place that knows about model structure.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass

import torch
from torch import nn

from pipelines.errors import ConfigError, DataError

# Names of a pre-norm block's first layernorm across transformers' vision models (ViT/DeiT/BEiT, DINOv2, CLIP).
FIRST_NORM_NAMES = ("layernorm_before", "norm1", "layer_norm1", "ln_1")
# Parameters of an embeddings module that put tokens in front of the patch tokens: class token, DeiT's
# distillation token (Touvron et al. 2021), register tokens (Darcet et al. 2024).
PREFIX_TOKEN_PARAMETERS = ("cls_token", "distillation_token", "register_tokens")
# Element-wise activations the guided rule can be applied to (Springenberg et al. 2015 define it for ReLU).
ACTIVATION_TYPES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Mish, nn.ELU, nn.Hardswish)


@dataclass(frozen=True)
class TargetLayer:
    """A module whose output the CAM methods read.

    Its output is either a feature map (B, C, h, w) or tokens (B, N, C); `to_grid` turns both into (B, C, h, w).
    """

    name: str
    module: nn.Module


def named_module(model: nn.Module, name: str) -> nn.Module:
    """The submodule called `name`, or a `ConfigError` listing the likely candidates."""
    modules = dict(model.named_modules())
    if name in modules:
        return modules[name]
    raise ConfigError(
        f"Layer '{name}' is not in this {model_type(model)} model; candidates are {', '.join(candidate_layers(model))} "
        "(any name from model.named_modules() works)."
    )


def model_type(model: nn.Module) -> str:
    config = getattr(model, "config", None)
    return getattr(config, "model_type", None) or type(model).__name__


def encoder_blocks(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The encoder's list of blocks (transformer layers or CNN stages): the shallowest list of same-typed modules.

    Raises:
        ConfigError: the model has no such list, so the target layer must be named.
    """
    lists = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, nn.ModuleList) and len(module) > 0 and len({type(child) for child in module}) == 1
    ]
    if not lists:
        raise ConfigError(
            f"Could not find the encoder blocks of this {model_type(model)} model; name its target layer, e.g. its "
            "last block (target_layer in python -m explain; teacher_target_layer, student_target_layer in distill.py)."
        )
    # Shallowest first; among lists at the same depth, the one holding the most parameters is the encoder.
    return min(lists, key=lambda item: (item[0].count("."), -sum(p.numel() for p in item[1].parameters())))


def first_norm(block: nn.Module) -> tuple[str, nn.Module] | None:
    """The first layernorm among a block's direct children, which a pre-norm transformer block applies to its input."""
    children = dict(block.named_children())
    for name in FIRST_NORM_NAMES:
        if isinstance(children.get(name), nn.LayerNorm):
            return name, children[name]
    for name, child in children.items():
        if isinstance(child, nn.LayerNorm):
            return name, child
    return None


def is_transformer(model: nn.Module) -> bool:
    """True for token models (ViT, DeiT, BEiT, DINOv2): their blocks start with a layernorm and they have a class token."""
    try:
        _, blocks = encoder_blocks(model)
    except ConfigError:
        return False
    return first_norm(blocks[-1]) is not None and prefix_token_count(model) > 0


def resolve_target_layer(model: nn.Module, name: str | nn.Module | None = None) -> TargetLayer:
    """The layer Grad-CAM reads, by name, as a module, or by structure when `name` is None.

    By structure: for transformers, the output of the last block's first layernorm, i.e. the block's normalised
    input. The last block's *output* reaches the classifier only through the class token, so its patch tokens get
    no gradient and give an all-zero map. For CNNs: the output of the last stage.

    Args:
        model: An image classifier (any `nn.Module`; a transformers model for the structural default).
        name: A dotted module name from ``model.named_modules()``, a submodule, or None.

    Returns:
        The `TargetLayer`.
    """
    if isinstance(name, nn.Module):
        names = {module: key for key, module in model.named_modules()}
        if name not in names:
            raise ConfigError("The target layer given as a module is not part of the model.")
        return TargetLayer(names[name], name)
    if name is not None:
        return TargetLayer(name, named_module(model, name))
    blocks_name, blocks = encoder_blocks(model)
    last = f"{blocks_name}.{len(blocks) - 1}"
    norm = first_norm(blocks[-1])
    if norm is not None:
        return TargetLayer(f"{last}.{norm[0]}", norm[1])
    return TargetLayer(last, blocks[-1])


def candidate_layers(model: nn.Module, limit: int = 6) -> list[str]:
    """Names worth trying as a target layer: the last blocks of the encoder and their first layernorms."""
    try:
        blocks_name, blocks = encoder_blocks(model)
    except ConfigError:
        return [name for name, _ in list(model.named_children())[:limit]]
    names = []
    for index in range(len(blocks) - 1, -1, -1):
        norm = first_norm(blocks[index])
        if norm is not None:
            names.append(f"{blocks_name}.{index}.{norm[0]}")
        names.append(f"{blocks_name}.{index}")
    return names[:limit]


def prefix_token_count(model: nn.Module) -> int:
    """Tokens in front of the patch tokens: class, distillation and register tokens.

    Read from the embeddings' token parameters, which follow the config (``num_register_tokens`` for
    DINOv2 with registers; DeiT always carries a distillation token); 0 for models without a class token (Swin).
    """
    count = 0
    for module in model.modules():
        for name in PREFIX_TOKEN_PARAMETERS:
            token = module._parameters.get(name)
            if token is not None and token.ndim == 3:  # (1, tokens, hidden)
                count += token.shape[1]
        if count:
            return count
    return count


def patch_size(model: nn.Module) -> int | None:
    size = getattr(getattr(model, "config", None), "patch_size", None)
    if isinstance(size, (tuple, list)):
        size = size[0]
    return size


def token_grid(model: nn.Module, num_tokens: int, height: int, width: int) -> tuple[int, int, int]:
    """(prefix tokens, grid height, grid width) of a token sequence of `num_tokens` for an input of height x width.

    The grid is the input size divided by the patch size; hierarchical models (Swin) merge patches, so when that
    does not fit, the stride is solved from the number of tokens.

    Raises:
        DataError: the token count fits no grid for this input size.
    """
    prefix = prefix_token_count(model)
    patches = num_tokens - prefix
    size = patch_size(model)
    if size:
        grid_h, grid_w = height // size, width // size
        if grid_h * grid_w == patches:
            return prefix, grid_h, grid_w
        if grid_h * grid_w == num_tokens:  # a layer before the prefix tokens join (the patch embeddings)
            return 0, grid_h, grid_w
    if patches > 0:
        stride = math.sqrt(height * width / patches)
        grid_h, grid_w = round(height / stride), round(width / stride)
        if grid_h * grid_w == patches:
            return prefix, grid_h, grid_w
    raise DataError(
        f"The target layer gives {num_tokens} tokens, which fit no patch grid for a {height}x{width} input with "
        f"{prefix} prefix tokens; pick a layer that outputs patch tokens or a feature map."
    )


def to_grid(model: nn.Module, activation: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """A target layer's output as a feature map: patch tokens reshaped to their grid, prefix tokens dropped.

    Args:
        model: The model the activation comes from (for the prefix tokens and patch size).
        activation: (B, C, h, w) feature map, or (B, N, C) tokens.
        height: Input height in pixels.
        width: Input width in pixels.

    Returns:
        (B, C, h, w).
    """
    if activation.ndim == 4:
        return activation
    if activation.ndim == 3:
        prefix, grid_h, grid_w = token_grid(model, activation.shape[1], height, width)
        patches = activation[:, prefix:]  # (B, h*w, C)
        return patches.transpose(1, 2).reshape(activation.shape[0], activation.shape[2], grid_h, grid_w)
    raise DataError(
        f"The target layer outputs shape {tuple(activation.shape)}; pick a layer that outputs a feature map "
        "(B, C, H, W) or tokens (B, N, C)."
    )


def activation_modules(model: nn.Module) -> list[nn.Module]:
    """The model's element-wise activation modules: torch's and transformers' (``transformers.activations``)."""
    found = []
    for module in model.modules():
        from_transformers = type(module).__module__ == "transformers.activations"
        if isinstance(module, ACTIVATION_TYPES) or (from_transformers and not list(module.children())):
            found.append(module)
    return found


def relu_only(model: nn.Module) -> bool:
    """True when every activation module is an `nn.ReLU`, the only kind Captum's guided backprop hooks."""
    activations = activation_modules(model)
    return bool(activations) and all(type(module) is nn.ReLU for module in activations)


def input_size(model: nn.Module) -> tuple[int, int] | None:
    """The (height, width) a model was configured for, or None when it takes any size (CNNs)."""
    size = getattr(getattr(model, "config", None), "image_size", None)
    # Only learned absolute position embeddings tie a model to its size; CNNs (ConvNeXt has a patch_size too) and
    # Swin (which pads) take any size.
    has_positions = any("position_embeddings" in module._parameters for module in model.modules())
    if size is None or patch_size(model) is None or not has_positions:
        return None
    if isinstance(size, (tuple, list)):
        return int(size[0]), int(size[1])
    return int(size), int(size)


def accepts_interpolation(model: nn.Module) -> bool:
    """Whether the forward pass takes ``interpolate_pos_encoding`` (ViT, DeiT), so other input sizes work."""
    return "interpolate_pos_encoding" in inspect.signature(model.forward).parameters


def check_pixel_values(model: nn.Module, pixel_values: torch.Tensor) -> None:
    """Refuse input the model cannot take, with a sentence saying what it takes.

    Raises:
        DataError: wrong rank, channel count or (for transformers) size.
    """
    if not isinstance(pixel_values, torch.Tensor) or pixel_values.ndim != 4:
        shape = tuple(pixel_values.shape) if isinstance(pixel_values, torch.Tensor) else type(pixel_values).__name__
        raise DataError(f"Expected pixel_values shaped (B, C, H, W), got {shape}.")
    channels = getattr(getattr(model, "config", None), "num_channels", None)
    if channels is not None and pixel_values.shape[1] != channels:
        raise DataError(
            f"The images have {pixel_values.shape[1]} channels but the model expects {channels}; "
            "run them through the model's image processor (DevicePreprocess) first."
        )
    expected = input_size(model)
    height, width = pixel_values.shape[-2:]
    if expected is None or (height, width) == expected:
        return
    size = patch_size(model)
    # DINOv2's embeddings interpolate the position embeddings on every call, without a flag.
    flexible = accepts_interpolation(model) or any(
        hasattr(module, "interpolate_pos_encoding") for module in model.modules() if module is not model
    )
    if not flexible:
        raise DataError(
            f"This {model_type(model)} model takes {expected[0]}x{expected[1]} images, got {height}x{width}; "
            "resize them with the model's image processor."
        )
    if height % size or width % size:
        raise DataError(
            f"The image size {height}x{width} is not a multiple of the model's {size}-pixel patches; resize it."
        )


def forward_kwargs(model: nn.Module, pixel_values: torch.Tensor) -> dict[str, bool]:
    """Extra forward arguments: position-embedding interpolation for an input size the model was not built for."""
    expected = input_size(model)
    if expected is not None and tuple(pixel_values.shape[-2:]) != expected and accepts_interpolation(model):
        return {"interpolate_pos_encoding": True}
    return {}
