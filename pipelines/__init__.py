"""Data in: datasets as `DatasetDict`, batches of uint8 images, preprocessing on the device, models and processors."""

import pipelines.quiet  # noqa: F401  first: see its docstring (upstream noise, dropped before transformers loads)

# isort: split
from pipelines.arguments import DataArguments
from pipelines.collate import ImageCollator
from pipelines.errors import ConfigError, DataError, OfflineError, UserFacingError, run_cli
from pipelines.loading import ImageData, load_image_dataset
from pipelines.models import build_classifier, load_classifier
from pipelines.preprocess import DevicePreprocess

__all__ = [
    "ConfigError",
    "DataArguments",
    "DataError",
    "DevicePreprocess",
    "ImageCollator",
    "ImageData",
    "OfflineError",
    "UserFacingError",
    "build_classifier",
    "load_classifier",
    "load_image_dataset",
    "run_cli",
]
