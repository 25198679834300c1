"""Data in: datasets as `DatasetDict`, batches of uint8 images, preprocessing on the device, models and processors."""

from pipelines import cifar_resnet
from pipelines.arguments import DataArguments
from pipelines.collate import ImageCollator
from pipelines.errors import ConfigError, DataError, OfflineError, UserFacingError, run_cli
from pipelines.loading import ImageData, load_image_dataset
from pipelines.preprocess import DevicePreprocess

# `model_type: cifar_resnet` loads through the Auto classes (and transformers.pipeline) once the package is imported.
cifar_resnet.register()

__all__ = [
    "ConfigError",
    "DataArguments",
    "DataError",
    "DevicePreprocess",
    "ImageCollator",
    "ImageData",
    "OfflineError",
    "UserFacingError",
    "load_image_dataset",
    "run_cli",
]
