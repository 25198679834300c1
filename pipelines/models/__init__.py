"""Image classifiers: loaded from the Hub or a folder (int8 copies included), or built from a config."""

from pipelines.models import cifar_resnet
from pipelines.models.loading import (
    build_classifier,
    default_model_class,
    label_config,
    load_classifier,
    load_config,
    require_tensor_processor,
)
from pipelines.models.quantized import QUANTIZATION_MAP

# `model_type: cifar_resnet` loads through the Auto classes (and transformers.pipeline) once the package is imported.
cifar_resnet.register()

__all__ = [
    "QUANTIZATION_MAP",
    "build_classifier",
    "default_model_class",
    "label_config",
    "load_classifier",
    "load_config",
    "require_tensor_processor",
]
