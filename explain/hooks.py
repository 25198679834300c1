"""Hooks and temporary model states, each a context manager that undoes itself even when the forward pass raises."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from explain.layers import activation_modules, encoder_blocks, to_grid


class Captured:
    """What a forward hook saw: the target layer's output (the tensor that the rest of the model used)."""

    def __init__(self) -> None:
        self.value: torch.Tensor | None = None


def _first_tensor(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, (tuple, list)) else output


def _replace_first(output: Any, tensor: torch.Tensor) -> Any:
    if isinstance(output, tuple):
        return (tensor, *output[1:])
    if isinstance(output, list):
        return [tensor, *output[1:]]
    return tensor


@contextmanager
def capture_output(module: nn.Module, differentiable: bool = True) -> Iterator[Captured]:
    """Record `module`'s output during the forward passes run inside the block.

    With `differentiable`, the output is replaced by a detached copy that requires grad: autograd then records
    only what runs after this layer, and `torch.autograd.grad(score, captured.value)` walks back no further. With
    frozen parameters and input that needs no gradient, nothing before the layer keeps activations for backward.

    Args:
        module: The target layer.
        differentiable: Make the output a leaf that requires grad.

    Yields:
        A `Captured` whose ``value`` is the output: (B, C, h, w) or (B, N, C).
    """
    captured = Captured()

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> Any:
        tensor = _first_tensor(output)
        if differentiable:
            tensor = tensor.detach().requires_grad_(True)
        captured.value = tensor
        return _replace_first(output, tensor) if differentiable else None

    handle = module.register_forward_hook(hook)
    try:
        yield captured
    finally:
        handle.remove()


@contextmanager
def grid_tap(model: nn.Module, module: nn.Module, tap: nn.Module, input_size: tuple[int, int]) -> Iterator[None]:
    """Route `module`'s token output through `tap` as a (B, C, h, w) patch grid, then back into tokens.

    This is the token-reshaping layer that lets a feature-map method (Captum's `LayerGradCam`) read a vision
    transformer: `tap` (an `nn.Identity`) sees the patch tokens as an image-shaped map, and its output, put back
    after the prefix tokens, is what the rest of the model computes with, so gradients reach it.

    Args:
        model: The model (for the prefix tokens and patch size).
        module: The target layer, outputting tokens (B, N, C).
        tap: The module that receives the (B, C, h, w) grid.
        input_size: (height, width) of the input in pixels.
    """

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> Any:
        tokens = _first_tensor(output)  # (B, N, C)
        if tokens.ndim == 4:  # already a feature map
            return _replace_first(output, tap(tokens))
        grid = to_grid(model, tokens, *input_size)  # (B, C, h, w)
        prefix = tokens.shape[1] - grid.shape[2] * grid.shape[3]
        tapped = tap(grid)
        patches = tapped.flatten(2).transpose(1, 2)  # (B, h*w, C)
        return _replace_first(output, torch.cat([tokens[:, :prefix], patches], dim=1))

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def every_layer_through_the_head(model: nn.Module) -> Iterator[int]:
    """Score every encoder block's output with the model's own head, in the same forward pass (LeGrad's per-layer
    class scores).

    The last block's output is replaced by all blocks' outputs stacked along the batch, first block first: what
    follows the encoder (final norm, pooling, classifier) works image by image, so the logits come out (L * B,
    classes), layer l's in rows l * B to (l + 1) * B, the model's own logits last. Each layer's rows stay attached to
    that layer's computation, so their gradients reach its attention weights.

    Yields:
        L, the number of blocks.
    """
    _, blocks = encoder_blocks(model)
    outputs: list[torch.Tensor] = []

    def record(_module: nn.Module, _inputs: Any, output: Any) -> None:
        outputs.append(_first_tensor(output))

    def stack_all(_module: nn.Module, _inputs: Any, output: Any) -> Any:
        outputs.append(_first_tensor(output))
        return _replace_first(output, torch.cat(outputs))

    handles = [block.register_forward_hook(record) for block in blocks[:-1]]
    handles.append(blocks[-1].register_forward_hook(stack_all))
    try:
        yield len(blocks)
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def frozen_parameters(model: nn.Module) -> Iterator[None]:
    """Parameters stop requiring grad for the block, so backward computes no weight gradients; restored after."""
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    for parameter in trainable:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter in trainable:
            parameter.requires_grad_(True)


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Dropout off and batch-norm statistics fixed for the block; afterwards exactly the modules that were training
    train again (a submodule the user keeps in eval mode, such as a frozen batch norm, stays so).

    A model already in eval mode is left alone: `model.eval()` walks and re-sets every module, which cost more than
    a third of a small batch's Grad-CAM on the CPU side.
    """
    training = [module for module in model.modules() if module.training]
    if training:
        model.eval()
    try:
        yield
    finally:
        for module in training:
            module.training = True  # what nn.Module.train sets, module by module rather than recursively


def _guided_rule(_module: nn.Module, grad_input: tuple[Any, ...], _grad_output: tuple[Any, ...]) -> tuple[Any, ...]:
    # Guided backpropagation (Springenberg et al. 2015, "Striving for Simplicity", sec. 3.4): a gradient passes an
    # activation only where it is positive. Clamping the activation's own input gradient, f'(x) * g, gives
    # exactly Captum's rule for ReLU, and for GELU also stops the negative part of f' (x < -0.75).
    return tuple(None if grad is None else F.relu(grad) for grad in grad_input)


@contextmanager
def guided_activations(model: nn.Module) -> Iterator[int]:
    """Apply the guided-backpropagation rule at every activation module (ReLU, GELU, SiLU, ...) in the block.

    Captum's `GuidedBackprop` hooks only `nn.ReLU`; transformers' ViT, DeiT and ConvNeXt use `GELUActivation`,
    where Captum's result silently equals the plain gradient.

    Yields:
        The number of activation modules hooked.
    """
    modules = activation_modules(model)
    handles = []
    try:
        for module in modules:
            handles.append(module.register_full_backward_hook(_guided_rule))
        yield len(modules)
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def eager_attention(model: nn.Module) -> Iterator[None]:
    """Run the model with eager attention for the block, which returns attention weights; SDPA and flash kernels
    return none. The previous implementation is restored after.

    transformers has a public setter (`set_attn_implementation`) but no public getter: the implementation in use is
    read from ``config._attn_implementation`` (checked on 5.25; tests/test_compat.py pins it)."""
    config = getattr(model, "config", None)
    previous = getattr(config, "_attn_implementation", None)
    if previous in (None, "eager"):
        yield
        return
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(previous)


def autocast(device: torch.device, dtype: torch.dtype | None, parameter_dtype: torch.dtype) -> Any:
    """Autocast to `dtype` when it differs from the parameters' dtype; otherwise a no-op context."""
    if dtype is None or dtype == parameter_dtype:
        return nullcontext()
    return torch.autocast(device.type, dtype=dtype)
