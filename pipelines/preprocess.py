"""Preprocessing that runs on the device, in batch: resize, augment, normalise.

Evaluation runs the model's own torchvision-backed image processor on the device tensors, so what the model sees
here is what `AutoImageProcessor` (and `transformers.pipeline`) gives it. Training adds a random resized crop
and horizontal flip, different for every image, as one `grid_sample` over the whole batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from transformers.image_processing_utils import BaseImageProcessor

from pipelines.arguments import DataArguments
from pipelines.errors import DataError


class DevicePreprocess:
    """Turn uint8 batches on any device into the model's `pixel_values`.

    Args:
        image_processor: The model's image processor; it must be torchvision-backed (transformers' default),
            since it runs on device tensors.
        num_channels: Channels the model expects; grayscale input is repeated to 3 channels.
        augment: Apply random resized crop and flip when called with ``train=True``.
        crop_scale: Range of a crop's area as a fraction of the image.
        crop_ratio: Range of a crop's aspect ratio (width / height).
        horizontal_flip: Flip half of the training images left to right.
    """

    def __init__(
        self,
        image_processor: BaseImageProcessor,
        num_channels: int = 3,
        augment: bool = True,
        crop_scale: tuple[float, float] = (0.7, 1.0),
        crop_ratio: tuple[float, float] = (3 / 4, 4 / 3),
        horizontal_flip: bool = True,
    ) -> None:
        self.image_processor = image_processor
        self.num_channels = num_channels
        self.augment = augment
        self.crop_scale = tuple(crop_scale)
        self.crop_ratio = tuple(crop_ratio)
        self.horizontal_flip = horizontal_flip

    def __call__(self, images: torch.Tensor | list[torch.Tensor], train: bool = False) -> torch.Tensor:
        """Args:
            images: uint8 (B, C, H, W), or a list of uint8 (C, H, W) of different sizes.
            train: Apply the training augmentation.

        Returns:
            float32 (B, num_channels, H', W') on the images' device.
        """
        images = match_channels(images, self.num_channels)
        device = images.device if isinstance(images, torch.Tensor) else images[0].device
        pixel_values = self.image_processor(images=images, return_tensors="pt", device=device)["pixel_values"]
        if train and self.augment:
            pixel_values = random_resized_crop(pixel_values, self.crop_scale, self.crop_ratio, self.horizontal_flip)
        return pixel_values


def match_channels(images: torch.Tensor | list[torch.Tensor], num_channels: int) -> torch.Tensor | list[torch.Tensor]:
    """Repeat grayscale images to `num_channels`; refuse any other mismatch with a clear error."""
    if isinstance(images, (list, tuple)):
        return [match_channels(image[None], num_channels)[0] for image in images]
    if images.ndim != 4:
        raise DataError(f"Expected a batch of images shaped (B, C, H, W), got {tuple(images.shape)}.")
    channels = images.shape[1]
    if channels == num_channels:
        return images
    if channels == 1:
        return images.expand(-1, num_channels, -1, -1)
    raise DataError(
        f"The images have {channels} channels but the model expects {num_channels}; "
        "convert them (image_mode 'RGB' or 'L') or use a model with a matching num_channels."
    )


def random_resized_crop(
    images: torch.Tensor,
    scale: tuple[float, float] = (0.7, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    horizontal_flip: bool = True,
) -> torch.Tensor:
    """A random crop of each image, resized back to the image's size, optionally mirrored.

    Departs from torchvision's `RandomResizedCrop` by clamping an oversized crop to the image instead of
    re-drawing it up to ten times, so that the whole batch is one `affine_grid` + `grid_sample`.

    Args:
        images: float (B, C, H, W).

    Returns:
        float (B, C, H, W).
    """
    batch = images.shape[0]
    area = torch.empty(batch).uniform_(*scale)
    aspect = torch.empty(batch).uniform_(math.log(ratio[0]), math.log(ratio[1])).exp()
    width = (area * aspect).sqrt().clamp(max=1.0)  # fraction of the image width
    height = (area / aspect).sqrt().clamp(max=1.0)
    centre_x = (torch.rand(batch) * 2 - 1) * (1 - width)
    centre_y = (torch.rand(batch) * 2 - 1) * (1 - height)
    mirror = torch.where(torch.rand(batch) < 0.5, -1.0, 1.0) if horizontal_flip else torch.ones(batch)
    zero = torch.zeros(batch)
    theta = torch.stack(
        [torch.stack([width * mirror, zero, centre_x], dim=1), torch.stack([zero, height, centre_y], dim=1)], dim=1
    ).to(images.device, images.dtype)  # (B, 2, 3): output grid -> input coordinates in [-1, 1]
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def training_preprocess(
    image_processor: BaseImageProcessor, num_channels: int, data_args: DataArguments
) -> DevicePreprocess:
    """The device preprocessing a training run uses, with the augmentation `data_args` asks for."""
    return DevicePreprocess(
        image_processor,
        num_channels=num_channels,
        augment=data_args.train_augmentation,
        crop_scale=tuple(data_args.crop_scale),
        horizontal_flip=data_args.horizontal_flip,
    )
