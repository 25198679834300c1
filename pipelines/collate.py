"""Batches of uint8 images at native size and label tensors; no resizing on the CPU."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image as PILImage
from PIL import ImageOps

from pipelines.errors import DataError


class ImageCollator:
    """Collate examples into ``{"pixel_values": uint8 (B, C, H, W), "labels": ...}``.

    Images of different sizes (photo folders) come out as a list of (C, H, W) tensors; the device-side
    preprocessing resizes them. Single-label `labels` are int64 (B,); multi-label ones float (B, L) multi-hot.

    Args:
        num_labels: Number of classes.
        multi_label: Whether each example's label is a list of present classes.
        image_mode: PIL mode that encoded images (folders, Hub) are decoded to: ``"RGB"`` or ``"L"``.
    """

    def __init__(self, num_labels: int, multi_label: bool = False, image_mode: str = "RGB") -> None:
        self.num_labels = num_labels
        self.multi_label = multi_label
        self.image_mode = image_mode

    def __call__(self, examples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        images = [to_chw_uint8(example["image"], self.image_mode) for example in examples]
        return {"pixel_values": stack_images(images), "labels": self.labels(examples)}

    def labels(self, examples: Sequence[dict[str, Any]]) -> torch.Tensor:
        if not self.multi_label:
            return torch.tensor([int(example["label"]) for example in examples], dtype=torch.long)
        multi_hot = torch.zeros(len(examples), self.num_labels)
        for row, example in enumerate(examples):
            multi_hot[row, torch.as_tensor(np.asarray(example["label"], dtype=np.int64))] = 1.0
        return multi_hot


def to_chw_uint8(image: Any, mode: str = "RGB") -> torch.Tensor:
    """One image (uint8 array, PIL image, or datasets' encoded ``{"path", "bytes"}``) as a uint8 (C, H, W) tensor."""
    if isinstance(image, dict):
        image = decode(image, mode)
    elif isinstance(image, PILImage.Image):
        image = ImageOps.exif_transpose(image)  # as for encoded images (see `decode`); a no-op once applied
        image = np.asarray(image.convert(mode) if image.mode != mode else image)
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise DataError(f"An image has dtype {array.dtype}; images must be uint8.")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3:
        raise DataError(f"An image has shape {array.shape}; expected (H, W) or (H, W, C).")
    if not array.flags.writeable:  # PIL hands out read-only buffers, which torch.from_numpy warns about
        array = array.copy()
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)


def decode(encoded: dict[str, Any], mode: str, where: str | None = None) -> np.ndarray:
    """Decode datasets' ``{"path", "bytes"}`` image to a uint8 (H, W[, C]) array in PIL `mode`, upright.

    The EXIF Orientation tag is applied, as `transformers.pipeline` and `datasets` apply it: a phone photo stored
    sideways (Orientation 6) would otherwise be trained on sideways and served upright.

    Args:
        where: How a message names the image; default: its path.

    Raises:
        DataError: naming the image, when it cannot be decoded fully or has pixels wider than 8 bits.
    """
    source = encoded.get("bytes")
    where = where or encoded.get("path") or "an image in the dataset"
    try:
        with PILImage.open(io.BytesIO(source) if source else encoded["path"]) as image:
            stored_mode = image.mode
            array = np.asarray(ImageOps.exif_transpose(image).convert(mode)) if is_8_bit(stored_mode) else None
    # PIL's format plugins raise many types on malformed bytes (struct.error, IndexError, DecompressionBombError...).
    except Exception as error:
        raise DataError(f"{where} could not be decoded ({pil_reason(error)}); remove or replace the file.") from None
    if array is None:
        raise DataError(deep_pixels_message(where, stored_mode))
    return array


def is_8_bit(mode: str) -> bool:
    """False for PIL's 16-bit, 32-bit integer and float modes, which `convert` would clip to 0..255 silently."""
    return mode not in ("I", "F") and not mode.startswith("I;")


def deep_pixels_message(where: Any, mode: str) -> str:
    return (
        f"{where} has 16-bit or wider pixels (PIL mode {mode}), which would be clipped to 0..255; "
        "convert it to 8 bits per channel (rescaling its range) first."
    )


def pil_reason(error: Exception) -> str:
    """`error` as one short line for a message."""
    text = (str(error).splitlines() or [""])[0]
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def stack_images(images: list[torch.Tensor]) -> torch.Tensor | list[torch.Tensor]:
    """Stack (C, H, W) uint8 images; grayscale ones are widened to 3 channels when the batch mixes both."""
    if len({image.shape[0] for image in images}) > 1:
        images = [image.expand(3, -1, -1) if image.shape[0] == 1 else image[:3] for image in images]
    if len({image.shape for image in images}) == 1:
        return torch.stack(images)
    return images
