"""Device-side preprocessing: matches transformers' image processors, augments per image, handles channels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image as PILImage
from transformers import AutoImageProcessor, DeiTImageProcessor, ViTImageProcessor, ViTImageProcessorPil

from pipelines import DataError, DevicePreprocess
from pipelines.preprocess import random_resized_crop

# One uint8 step after rescaling and normalising with std 0.5 is 1/255/0.5 = 0.0078. PIL and torchvision
# bilinear resizes round differently, so the PIL reference may differ by a few steps at edges.
ONE_STEP = 1 / 255 / 0.5


def _images(count: int = 4, size: int = 28, channels: int = 3, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, channels, size, size), dtype=torch.uint8, generator=generator)


def test_evaluation_path_equals_auto_image_processor_on_pil_images(tmp_path) -> None:
    ViTImageProcessor(size={"height": 56, "width": 56}, image_mean=[0.5] * 3, image_std=[0.5] * 3).save_pretrained(
        tmp_path
    )
    processor = AutoImageProcessor.from_pretrained(tmp_path)
    images = _images()
    ours = DevicePreprocess(processor)(images)
    pil_images = [PILImage.fromarray(image.permute(1, 2, 0).numpy()) for image in images]
    reference = processor(images=pil_images, return_tensors="pt")["pixel_values"]
    assert ours.shape == reference.shape == (4, 3, 56, 56)
    torch.testing.assert_close(ours, reference, atol=1e-6, rtol=0)


def test_evaluation_path_is_close_to_the_pil_backend(tmp_path) -> None:
    fields = {"size": {"height": 56, "width": 56}, "image_mean": [0.5] * 3, "image_std": [0.5] * 3}
    images = _images()
    ours = DevicePreprocess(ViTImageProcessor(**fields))(images)
    pil_images = [PILImage.fromarray(image.permute(1, 2, 0).numpy()) for image in images]
    reference = ViTImageProcessorPil(**fields)(images=pil_images, return_tensors="pt")["pixel_values"]
    difference = (ours - reference).abs()
    assert difference.mean() < ONE_STEP and difference.max() <= 8 * ONE_STEP


def test_resize_and_centre_crop_processors_also_match() -> None:
    processor = DeiTImageProcessor(size={"height": 40, "width": 40}, crop_size={"height": 32, "width": 32})
    images = _images(size=48)
    pil_images = [PILImage.fromarray(image.permute(1, 2, 0).numpy()) for image in images]
    torch.testing.assert_close(
        DevicePreprocess(processor)(images), processor(images=pil_images, return_tensors="pt")["pixel_values"]
    )


def test_grayscale_becomes_three_channels_on_the_device() -> None:
    processor = ViTImageProcessor(size={"height": 28, "width": 28}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    gray = _images(channels=1)
    out = DevicePreprocess(processor, num_channels=3)(gray)
    assert out.shape == (4, 3, 28, 28)
    torch.testing.assert_close(out[:, 0], out[:, 2])
    torch.testing.assert_close(out[:, 0], gray[:, 0].float() / 255 / 0.5 - 1, atol=1e-6, rtol=0)


def test_channel_mismatch_is_a_clear_error() -> None:
    processor = ViTImageProcessor(size={"height": 28, "width": 28})
    with pytest.raises(DataError, match="3 channels but the model expects 1"):
        DevicePreprocess(processor, num_channels=1)(_images())


def test_images_of_different_sizes_are_resized_together() -> None:
    processor = ViTImageProcessor(size={"height": 24, "width": 24})
    images = [_images(1, 30)[0], _images(1, 20)[0]]
    assert DevicePreprocess(processor)(images).shape == (2, 3, 24, 24)


def test_training_augmentation_only_when_training() -> None:
    processor = ViTImageProcessor(size={"height": 28, "width": 28})
    preprocess = DevicePreprocess(processor, augment=True, crop_scale=(0.3, 0.5))
    images = _images()
    torch.testing.assert_close(preprocess(images, train=False), preprocess(images, train=False))
    torch.manual_seed(0)
    assert not torch.allclose(preprocess(images, train=True), preprocess(images, train=False))


def test_full_crop_without_flip_is_the_identity() -> None:
    images = torch.rand(3, 3, 16, 16)
    out = random_resized_crop(images, scale=(1.0, 1.0), ratio=(1.0, 1.0), horizontal_flip=False)
    torch.testing.assert_close(out, images, atol=1e-5, rtol=0)


def test_flip_mirrors_exactly_and_differs_per_image() -> None:
    torch.manual_seed(3)
    images = torch.rand(64, 1, 8, 8)
    out = random_resized_crop(images, scale=(1.0, 1.0), ratio=(1.0, 1.0), horizontal_flip=True)
    mirrored = torch.isclose(out, images.flip(-1), atol=1e-5).flatten(1).all(1)
    unchanged = torch.isclose(out, images, atol=1e-5).flatten(1).all(1)
    assert bool((mirrored | unchanged).all())
    assert 16 < int(mirrored.sum()) < 48  # about half, chosen per image


def test_crops_differ_per_image_and_stay_inside() -> None:
    torch.manual_seed(0)
    ramp = torch.linspace(0, 1, 32).expand(32, 32)  # value = x position
    images = ramp.expand(16, 1, 32, 32).clone()
    out = random_resized_crop(images, scale=(0.25, 0.25), ratio=(1.0, 1.0), horizontal_flip=False)
    left_edges = out[:, 0, 0, 0]
    assert left_edges.unique().numel() > 8
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    # a crop of half the width spans half the ramp
    span = out[:, 0, 0, -1] - out[:, 0, 0, 0]
    np.testing.assert_allclose(span.numpy(), 0.5 * 31 / 32, atol=0.05)
