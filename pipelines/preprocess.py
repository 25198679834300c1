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

    def __call__(
        self, images: torch.Tensor | list[torch.Tensor], train: bool = False, crops: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Args:
            images: uint8 (B, C, H, W), or a list of uint8 (C, H, W) of different sizes.
            train: Apply the training augmentation.
            crops: (B, 2, 3) crops from `sample_crops` to apply instead of fresh ones, so that a second model
                (a teacher) can see exactly the crops the first one saw.

        Returns:
            float32 (B, num_channels, H', W') on the images' device.
        """
        images = match_channels(images, self.num_channels)
        device = images.device if isinstance(images, torch.Tensor) else images[0].device
        pixel_values = self.image_processor(images=images, return_tensors="pt", device=device)["pixel_values"]
        if train and self.augment:
            if crops is None:
                crops = self.sample_crops(pixel_values.shape[0])
            pixel_values = apply_crops(pixel_values, crops)
        return pixel_values

    def sample_crops(self, batch_size: int) -> torch.Tensor:
        """Random resized crops (and flips) for a batch, as (B, 2, 3) affine maps (see `sample_crops`)."""
        return sample_crops(batch_size, self.crop_scale, self.crop_ratio, self.horizontal_flip)


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


def sample_crops(
    batch_size: int,
    scale: tuple[float, float] = (0.7, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    horizontal_flip: bool = True,
) -> torch.Tensor:
    """One random resized crop (optionally mirrored) per image, as an affine map for `F.affine_grid`.

    Departs from torchvision's `RandomResizedCrop` by clamping an oversized crop to the image instead of
    re-drawing it up to ten times, so that the whole batch is one `affine_grid` + `grid_sample`. The map works
    in normalised coordinates, so the same crops fit images of any resolution.

    Returns:
        (B, 2, 3): output grid -> input coordinates in [-1, 1].
    """
    area = torch.empty(batch_size).uniform_(*scale)
    aspect = torch.empty(batch_size).uniform_(math.log(ratio[0]), math.log(ratio[1])).exp()
    width = (area * aspect).sqrt().clamp(max=1.0)  # fraction of the image width
    height = (area / aspect).sqrt().clamp(max=1.0)
    centre_x = (torch.rand(batch_size) * 2 - 1) * (1 - width)
    centre_y = (torch.rand(batch_size) * 2 - 1) * (1 - height)
    mirror = torch.where(torch.rand(batch_size) < 0.5, -1.0, 1.0) if horizontal_flip else torch.ones(batch_size)
    zero = torch.zeros(batch_size)
    return torch.stack(
        [torch.stack([width * mirror, zero, centre_x], dim=1), torch.stack([zero, height, centre_y], dim=1)], dim=1
    )


def apply_crops(images: torch.Tensor, crops: torch.Tensor) -> torch.Tensor:
    """Resample each image (B, C, H, W) through its crop (B, 2, 3), bilinearly, back to (H, W)."""
    grid = F.affine_grid(
        to_device_async(crops, images.device).to(images.dtype), list(images.shape), align_corners=False
    )
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def to_device_async(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Copy a small CPU tensor to a CUDA device without making the host wait.

    A copy from pageable memory waits for every kernel already queued on the GPU, so the host cannot queue the
    next training step while this one runs; on an H100 that wait, once per step for the crops, cost ViT-B/16
    about a sixth of its training throughput (`scripts/benchmark.py train`). From pinned memory the copy is queued
    like a kernel (PyTorch keeps the pinned block alive until the copy has run).
    """
    if device.type != "cuda" or tensor.device.type != "cpu":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def random_resized_crop(
    images: torch.Tensor,
    scale: tuple[float, float] = (0.7, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    horizontal_flip: bool = True,
) -> torch.Tensor:
    """A random resized crop of each image (B, C, H, W), resized back to (H, W), optionally mirrored."""
    return apply_crops(images, sample_crops(images.shape[0], scale, ratio, horizontal_flip))


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


def processed_size(image_processor: BaseImageProcessor, native_size: tuple[int, int] = (28, 28)) -> tuple[int, int]:
    """(H, W) of the `pixel_values` the processor makes from a square image of `native_size`."""
    probe = torch.zeros(1, 3, *native_size, dtype=torch.uint8)
    return tuple(image_processor(images=probe, return_tensors="pt")["pixel_values"].shape[-2:])
