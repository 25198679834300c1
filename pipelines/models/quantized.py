"""int8 copies written by `trainers.shrink`: optimum-quanto copies rebuilt from their quantization map, and gradients
through torchao's dynamic int8 linear layers, so Grad-CAM runs on those copies.

quanto: transformers cannot save or load a quanto model (``QuantoConfig`` is not serializable), so a quanto copy holds
the quantized state dict in ``model.safetensors`` beside ``quantization_map.json``, and `load_quantized` builds the
float model from ``config.json`` and ``requantize``s it.

torchao:
A copy from ``scripts/shrink.py --shrink_method int8 --int8_activations dynamic`` holds torchao ``Int8Tensor`` weights:
each forward pass quantizes the layer's input per token at run time and multiplies int8 by int8. torchao gives those
layers no backward (``torch.autograd.grad`` finds the input unused), and Grad-CAM needs the gradient of a class score
at a hooked activation. `enable_int8_gradients` replaces each such ``nn.Linear`` by a `StraightThroughInt8Linear`:
the same weights and the same int8 forward pass, and a backward pass that multiplies the incoming gradient by the
dequantized int8 weight. The activation's rounding is passed straight through, as quanto does for its
quantization-aware training, so the gradients are those of the float graph with the int8 weights at the int8 copy's
activations. Under ``torch.no_grad`` (and ``torch.compile`` for speed) the layer is the int8 one, unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import PretrainedConfig, PreTrainedModel

# Beside model.safetensors, marks an optimum-quanto int8 copy (see `load_quantized`).
QUANTIZATION_MAP = "quantization_map.json"


class _Int8LinearStraightThrough(torch.autograd.Function):
    """``F.linear`` on an int8 weight forward; backward, the gradient times the dequantized weight."""

    @staticmethod
    def forward(inputs: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return F.linear(inputs, weight, bias)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:  # noqa: ANN001 (autograd's signature)
        ctx.weight = inputs[1]

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # noqa: ANN001
        # Only the input's gradient: the weights are frozen int8 and Grad-CAM never asks for the bias's.
        return grad_output @ ctx.weight.dequantize().to(grad_output.dtype), None, None


class StraightThroughInt8Linear(torch.nn.Linear):
    """An ``nn.Linear`` holding a torchao int8 weight, whose backward passes straight through the int8 rounding."""

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return _Int8LinearStraightThrough.apply(inputs, self.weight, self.bias)

    @classmethod
    def holding(cls, linear: torch.nn.Linear) -> StraightThroughInt8Linear:
        """A layer with `linear`'s own weight and bias tensors (not copies)."""
        layer = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, device="meta")
        layer.weight, layer.bias = linear.weight, linear.bias
        return layer


def int8_linear_names(model: torch.nn.Module) -> list[str]:
    """Names of the plain ``nn.Linear`` layers of `model` whose weight is a torchao ``Int8Tensor``."""
    from torchao.quantization import Int8Tensor

    return [
        name
        for name, module in model.named_modules()
        if type(module) is torch.nn.Linear and isinstance(module.weight, Int8Tensor)
    ]


def enable_int8_gradients(model: torch.nn.Module) -> list[str]:
    """Replace (in place) each torchao int8 ``nn.Linear`` of `model` by a `StraightThroughInt8Linear`; returns the
    names of the layers replaced. Parameter names, and so the state dict, stay the same."""
    names = int8_linear_names(model)
    for name in names:
        parent, _, child = name.rpartition(".")
        owner = model.get_submodule(parent)
        setattr(owner, child, StraightThroughInt8Linear.holding(getattr(owner, child)))
    return names


def is_torchao_int8(config: object) -> bool:
    """The config says its weights were saved by torchao (transformers' ``TorchAoConfig``)."""
    quantization = getattr(config, "quantization_config", None)
    if quantization is None:
        return False
    method = quantization.get("quant_method") if isinstance(quantization, dict) else quantization.quant_method
    return str(getattr(method, "value", method)) == "torchao"


def load_quantized(folder: Path, config: PretrainedConfig, model_class: type[PreTrainedModel]) -> PreTrainedModel:
    """An optimum-quanto int8 copy: the float model built from `config`, then ``requantize``d from the quantized
    state dict and its map."""
    from optimum.quanto import requantize
    from safetensors.torch import load_file

    model = model_class(config)
    mapping = json.loads((folder / QUANTIZATION_MAP).read_text())
    requantize(model, load_file(folder / "model.safetensors"), mapping)
    return model.eval()
