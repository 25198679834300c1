"""int8 copies, by ``--int8_activations``:

- ``none`` (default): optimum-quanto's weight-only int8 (``quantize(model, weights=qint8)``) on every ``nn.Linear``
  and ``nn.Conv2d``: weights stored as int8 with one float scale per output channel, dequantized inside the forward
  pass. The activations stay float and carry gradients, so Grad-CAM (one forward pass plus ``torch.autograd.grad`` to
  a hooked activation) runs on the copy unchanged.
- ``static``: quanto's int8 activations as well, with scales calibrated on training images; quanto passes gradients
  straight through the activations' rounding.
- ``dynamic``: torchao's ``Int8DynamicActivationInt8WeightConfig`` through transformers' ``TorchAoConfig``: int8
  weights and per-token int8 activations computed in each forward pass, so the matrix products are int8 by int8. It
  is the one int8 form that is faster than float32 on a CPU (under ``torch.compile``, which fuses the run-time
  quantization; quanto's unfused quantize ops cost more than its int8 matmuls save). It quantizes ``nn.Linear``
  only, so it is refused for models whose weights are mostly convolutions (a ResNet). torchao's int8 layers have no
  backward; ``load_classifier`` gives them one (``pipelines.models.quantized``).

Why quanto for the first two and not torchao: torchao's int8 configs quantize ``nn.Linear`` only (on the quickstart
ResNet that is its classifier, 0.04% of the weights), and transformers' torchao loader fails on a ResNet (5.25 ends
in a RuntimeError about the weights' conversion, checked).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import PreTrainedModel

from pipelines.collate import ImageCollator
from pipelines.errors import ConfigError
from pipelines.loading import ImageData
from pipelines.models import load_classifier
from pipelines.models.quantized import StraightThroughInt8Linear
from pipelines.preprocess import DevicePreprocess
from trainers.report.cost import count_parameters

# Dynamic int8 (torchao) quantizes nn.Linear only; below this share of the parameters in nn.Linear weights (a
# ResNet's is its classifier, under 1%) the copy would be the float model with an int8 head.
MIN_LINEAR_SHARE = 0.5


def quantize_int8(
    model: PreTrainedModel, calibration: torch.Tensor | None = None, batch_size: int = 64
) -> tuple[PreTrainedModel, dict[str, Any]]:
    """Quantize every ``nn.Linear`` and ``nn.Conv2d`` weight of `model` (in place) to int8 with optimum-quanto, and
    with `calibration` inputs also their input and output activations.

    Args:
        model: Any image classifier; it is cast to fp32 on the CPU.
        calibration: float (N, C, H, W) preprocessed images whose activation ranges set the static int8 activation
            scales; None for weight-only int8.
        batch_size: Images per calibration forward pass.

    Returns:
        The frozen quantized model and what was quantized (module names, the share of parameters they hold).
    """
    from optimum.quanto import Calibration, freeze, qint8, quantization_map, quantize

    total = count_parameters(model)
    model = model.float().cpu().eval()
    quantize(model, weights=qint8, activations=None if calibration is None else qint8)
    if calibration is not None:
        with torch.no_grad(), Calibration():
            for start in range(0, len(calibration), batch_size):
                model(pixel_values=calibration[start : start + batch_size])
    freeze(model)  # the weights become int8 tensors now, not at the first forward pass
    mapping = quantization_map(model)
    quantized = sum(model.get_submodule(name).weight.numel() for name in mapping)
    if calibration is None:
        scheme = "qint8 weights (one scale per output channel), float32 activations"
        gradients = "the weights are dequantized in the forward pass, so activations carry exact gradients"
    else:
        scheme = f"qint8 weights and activations (static scales from {len(calibration)} training images)"
        gradients = (
            "quanto's activation quantization passes gradients straight through (its quantization-aware-training "
            "rule), so Grad-CAM's gradients are those of the float graph at the quantized activations"
        )
    details = {
        "library": "optimum-quanto",
        "scheme": scheme,
        "layers": "nn.Linear and nn.Conv2d",
        "quantized_modules": sorted(mapping),
        "quantized_weight_share": quantized / total,
        "gradients": gradients,
        "quantization_map": mapping,
    }
    return model, details


def linear_weight_share(model: PreTrainedModel) -> float:
    """The fraction of `model`'s parameters that are ``nn.Linear`` weights."""
    return sum(m.weight.numel() for m in model.modules() if is_linear(m)) / count_parameters(model)


def require_linear_weights(model: PreTrainedModel, source: str) -> None:
    """Refuse dynamic int8 for a model whose weights are mostly not in ``nn.Linear`` layers (a ResNet's convolutions),
    which torchao's dynamic int8 leaves in float32."""
    share = linear_weight_share(model)
    if share < MIN_LINEAR_SHARE:
        raise ConfigError(
            f"{source} holds {share:.2%} of its parameters in nn.Linear layers, the only ones dynamic int8 (torchao) "
            "quantizes; use --int8_activations static (optimum-quanto, convolutions too) for this model."
        )


def dynamic_int8_config() -> Any:
    """transformers' ``TorchAoConfig`` for torchao's dynamic int8: every ``nn.Linear`` gets int8 weights (one scale
    per output channel) and quantizes its input per token in each forward pass, so its matrix product is int8."""
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig
    from transformers import TorchAoConfig

    return TorchAoConfig(Int8DynamicActivationInt8WeightConfig())


def quantize_int8_dynamic(
    source: str, loading: dict[str, bool] | None = None
) -> tuple[PreTrainedModel, dict[str, Any]]:
    """`source` loaded with `dynamic_int8_config`, through `pipelines.load_classifier`, which gives the int8 layers
    a straight-through backward (see `pipelines.models.quantized`) so that Grad-CAM runs on the copy.

    Returns:
        The quantized model, which ``save_pretrained`` writes and ``from_pretrained`` reads again, and what was done.
    """
    import torchao

    model, _ = load_classifier(source, quantization_config=dynamic_int8_config(), **(loading or {}))
    model = model.eval()
    names = [name for name, module in model.named_modules() if isinstance(module, StraightThroughInt8Linear)]
    quantized = sum(model.get_submodule(name).weight.numel() for name in names)
    details = {
        "library": f"torchao {torchao.__version__} through transformers' TorchAoConfig",
        "scheme": "Int8DynamicActivationInt8WeightConfig: int8 weights (one scale per output channel) and int8 "
        "activations (one scale per token, computed in every forward pass), int8 matrix products",
        "layers": "nn.Linear",
        "quantized_modules": sorted(names),
        "quantized_weight_share": quantized / count_parameters(model),
        "gradients": "torchao's int8 layers have no backward; pipelines.load_classifier gives each one that multiplies "
        "the gradient by the dequantized int8 weight (straight through the activations' rounding), so Grad-CAM's "
        "gradients are those of the float graph with the int8 weights",
        "speed": "fast under torch.compile, which fuses the run-time quantization with the int8 matrix product; run "
        "eagerly the copy is slower than float32",
    }
    return model, details


def calibration_images(data: ImageData, processor: Any, num_channels: int, count: int, seed: int) -> torch.Tensor:
    """A seeded sample of `count` training images, preprocessed as the model sees them at evaluation: (N, C, H, W)."""
    train = data.dataset["train"]
    chosen = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[: min(count, len(train))]
    images = ImageCollator(data.num_labels, data.multi_label)([train[int(index)] for index in chosen])
    return DevicePreprocess(processor, num_channels=num_channels, augment=False)(images["pixel_values"]).float()


def is_linear(module: torch.nn.Module) -> bool:
    return isinstance(module, torch.nn.Linear)
