"""Image corruptions as batched tensor operations on the device: MedMNIST-C's families and severities (Di Salvo,
Doerrich and Ledig, "MedMNIST-C: Comprehensive benchmark and improved classifier robustness by simulating realistic
image corruptions", 2024), applied to the native uint8 images before any model's own preprocessing, so that every
model compared sees the same corrupted image.

    from pipelines.corruptions import corrupt, corruption_names
    names = corruption_names("DEFAULT", dataset="pneumoniamnist", channels=1)
    corrupted = corrupt(images, "jpeg_compression", severity=3, dataset="pneumoniamnist", rows=rows)

What is carried over from MedMNIST-C (its `medmnistc/corruptions/registry.py`, commit b6dee0e, as facts; none of its
code): each dataset's list of corruptions and their five severities' parameters, and each family's formula, applied as
MedMNIST-C applies it (to the RGB image, a grey one converted back with PIL's luma; results truncated to uint8).
Where torchvision has the operation it is used (JPEG, Gaussian blur, brightness, contrast, gamma); the rest is a few
lines of torch. Motion blur follows imagecorruptions' numpy reimplementation of ImageMagick's kernel (ImageNet-C's
definition), which MedMNIST-C calls through Wand.

Severities and image sizes. MedMNIST-C tuned its severities on MedMNIST+'s 224 px images. Here a corruption runs on
the image's native size, with this rule: parameters of intensity (noise, brightness, contrast, gamma, saturation),
JPEG's quality and the relative ones (pixelate's and zoom blur's factors) are used as they are; lengths in pixels
(Gaussian blur's sigma and kernel radius, defocus blur's disk radius and anti-aliasing sigma, motion blur's radius
and sigma) are scaled by the image's shorter side / 224, so that a blur covers the same share of the anatomy at every
size. At 28 px a kernel radius rounds to 0 and that blur is no blur: the report says so rather than inventing a
strength MedMNIST-C did not define.

Randomness is per image: an image's draws come from its own generator seeded by (seed, its row in the split, the
corruption), the same for every severity (severity 4's noise is severity 3's drawn once, scaled further), so that the
corrupted pixels do not depend on the batch or the process an image is corrupted in.
"""

from __future__ import annotations

import functools
import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from torchvision.io import decode_jpeg, encode_jpeg

from pipelines.errors import ConfigError
from pipelines.seeding import image_generator

REFERENCE_SIDE = 224  # MedMNIST-C corrupts MedMNIST+'s 224 px images
SEVERITIES = (1, 2, 3, 4, 5)
# Zoom blur's zoom factors, as MedMNIST-C writes them: np.arange(start, stop, step) (kept as the arguments, since
# np.arange's float count is part of the definition: np.arange(1, 1.11, 0.01) has 12 factors, not 11).
ZoomRange = tuple[float, float, float]


# ------------------------------------------------------------------------------------------------ MedMNIST-C's facts

# Each dataset's corruptions and the parameters of severities 1-5, from MedMNIST-C's registry (CORRUPTIONS_DS). Where
# it lists six values (pneumoniamnist's and chestmnist's gaussian_blur, retinamnist's defocus_blur) the sixth is never
# used (its severities index 0-4) and is left out here. Parameters: pixelate, the factor of the size it shrinks to;
# jpeg_compression, the quality; gaussian/speckle noise, sigma; impulse noise, the share of values replaced; shot noise,
# the photon count per unit of intensity; gaussian_blur, the kernel size at 224 px; defocus_blur, (disk radius,
# anti-aliasing sigma); motion_blur, (radius, sigma); zoom_blur, the zoom factors; brightness and contrast, PIL's
# enhancement factor; gamma_corr, the gamma; saturate, what is added to the HSV saturation.
MEDMNIST_C: dict[str, dict[str, tuple[Any, ...]]] = {
    "pathmnist": {
        "pixelate": (0.8, 0.6, 0.40, 0.30, 0.25),
        "jpeg_compression": (50, 30, 15, 10, 7),
        "defocus_blur": ((3, 0.1), (4, 0.1), (5, 0.2), (6, 0.2), (7, 0.3)),
        "motion_blur": ((5, 5), (10, 5), (15, 5), (15, 8), (15, 12)),
        "brightness_up": (1.1, 1.15, 1.2, 1.22, 1.25),
        "brightness_down": (0.85, 0.80, 0.75, 0.72, 0.70),
        "contrast_up": (1.1, 1.2, 1.3, 1.4, 1.6),
        "contrast_down": (0.8, 0.7, 0.6, 0.55, 0.5),
        "saturate": (0.05, 0.10, 0.15, 0.20, 0.25),
    },
    "bloodmnist": {
        "pixelate": (0.6, 0.5, 0.40, 0.30, 0.25),
        "jpeg_compression": (50, 30, 15, 10, 7),
        "defocus_blur": ((2, 0.01), (3, 0.1), (4, 0.1), (5, 0.1), (6, 0.1)),
        "motion_blur": ((3, 3), (5, 5), (10, 5), (10, 7), (10, 9)),
        "brightness_up": (1.1, 1.2, 1.3, 1.35, 1.4),
        "brightness_down": (0.9, 0.8, 0.7, 0.6, 0.5),
        "contrast_up": (1.1, 1.15, 1.2, 1.25, 1.3),
        "contrast_down": (0.9, 0.8, 0.7, 0.6, 0.5),
        "saturate": (0.05, 0.10, 0.15, 0.17, 0.20),
    },
    "dermamnist": {
        "pixelate": (0.7, 0.5, 0.40, 0.30, 0.25),
        "jpeg_compression": (30, 20, 15, 10, 7),
        "gaussian_noise": (0.04, 0.08, 0.12, 0.18, 0.26),
        "speckle_noise": (0.05, 0.15, 0.2, 0.35, 0.45),
        "impulse_noise": (0.01, 0.03, 0.06, 0.09, 0.17),
        "shot_noise": (60, 25, 18, 10, 5),
        "defocus_blur": ((4, 0.1), (5, 0.2), (6, 0.3), (7, 0.4), (8, 0.5)),
        "motion_blur": ((10, 5), (15, 5), (15, 8), (15, 12), (20, 15)),
        "zoom_blur": ((1, 1.11, 0.01), (1, 1.16, 0.01), (1, 1.21, 0.02), (1, 1.26, 0.02), (1, 1.31, 0.03)),
        "brightness_up": (1.1, 1.2, 1.3, 1.4, 1.5),
        "brightness_down": (0.9, 0.8, 0.7, 0.6, 0.5),
        "contrast_up": (1.1, 1.2, 1.3, 1.4, 1.6),
        "contrast_down": (0.8, 0.7, 0.6, 0.5, 0.4),
    },
    "retinamnist": {
        "pixelate": (0.8, 0.60, 0.50, 0.40, 0.35),
        "jpeg_compression": (30, 25, 20, 10, 5),
        "gaussian_noise": (0.04, 0.08, 0.12, 0.16, 0.20),
        "speckle_noise": (0.10, 0.15, 0.20, 0.25, 0.30),
        "defocus_blur": ((4, 0.1), (5, 0.2), (6, 0.3), (7, 0.4), (8, 0.5)),
        "motion_blur": ((8, 5), (15, 5), (15, 8), (15, 12), (20, 15)),
        "brightness_down": (0.9, 0.8, 0.7, 0.6, 0.5),
        "contrast_down": (0.9, 0.8, 0.7, 0.6, 0.4),
    },
    "tissuemnist": {
        "pixelate": (0.40, 0.30, 0.20, 0.15, 0.10),
        "jpeg_compression": (25, 20, 15, 10, 7),
        "impulse_noise": (0.01, 0.015, 0.02, 0.025, 0.03),
        "gaussian_blur": (13, 15, 17, 21, 25),
        "brightness_up": (1.3, 1.4, 1.5, 1.6, 1.7),
        "brightness_down": (0.8, 0.7, 0.6, 0.5, 0.4),
        "contrast_up": (1.1, 1.2, 1.3, 1.4, 1.6),
        "contrast_down": (0.9, 0.8, 0.7, 0.6, 0.4),
    },
    "octmnist": {
        "pixelate": (0.30, 0.25, 0.20, 0.15, 0.10),
        "jpeg_compression": (30, 15, 10, 7, 5),
        "speckle_noise": (0.15, 0.30, 0.40, 0.50, 0.60),
        "defocus_blur": ((0.5, 0.6), (1, 0.5), (1.5, 0.1), (2.0, 0.5), (2.5, 0.1)),
        "motion_blur": ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15)),
        "contrast_down": (0.6, 0.4, 0.3, 0.2, 0.15),
    },
    "breastmnist": {
        "pixelate": (0.30, 0.25, 0.20, 0.15, 0.10),
        "jpeg_compression": (50, 30, 15, 10, 7),
        "speckle_noise": (0.10, 0.15, 0.20, 0.25, 0.30),
        "motion_blur": ((5, 5), (9, 7), (9, 10), (13, 10), (17, 12)),
        "brightness_up": (1.4, 1.5, 1.6, 1.8, 2.0),
        "brightness_down": (0.55, 0.5, 0.45, 0.4, 0.3),
        "contrast_down": (0.9, 0.8, 0.7, 0.6, 0.4),
    },
    "chestmnist": {
        "pixelate": (0.30, 0.25, 0.20, 0.15, 0.10),
        "jpeg_compression": (50, 30, 15, 10, 7),
        "gaussian_noise": (0.04, 0.08, 0.12, 0.18, 0.26),
        "speckle_noise": (0.05, 0.15, 0.2, 0.35, 0.45),
        "impulse_noise": (0.01, 0.03, 0.06, 0.09, 0.17),
        "shot_noise": (60, 25, 18, 10, 5),
        "gaussian_blur": (3, 5, 7, 9, 11),
        "brightness_up": (1.1, 1.2, 1.3, 1.4, 1.5),
        "brightness_down": (0.9, 0.8, 0.7, 0.6, 0.5),
        "contrast_up": (1.1, 1.2, 1.3, 1.4, 1.6),
        "contrast_down": (0.9, 0.8, 0.7, 0.6, 0.4),
        "gamma_corr_up": (1.1, 1.2, 1.3, 1.4, 1.6),
        "gamma_corr_down": (0.9, 0.8, 0.7, 0.6, 0.4),
    },
    "pneumoniamnist": {
        "pixelate": (0.8, 0.7, 0.6, 0.5, 0.40),
        "jpeg_compression": (50, 30, 15, 10, 7),
        "gaussian_noise": (0.04, 0.05, 0.06, 0.07, 0.08),
        "speckle_noise": (0.05, 0.07, 0.10, 0.15, 0.20),
        "impulse_noise": (0.005, 0.01, 0.013, 0.017, 0.02),
        "shot_noise": (300, 200, 150, 100, 80),
        "gaussian_blur": (3, 5, 7, 9, 11),
        "brightness_up": (1.1, 1.2, 1.3, 1.4, 1.5),
        "brightness_down": (0.9, 0.8, 0.7, 0.6, 0.5),
        "contrast_up": (1.1, 1.2, 1.3, 1.4, 1.6),
        "contrast_down": (0.9, 0.8, 0.7, 0.6, 0.4),
        "gamma_corr_up": (1.1, 1.2, 1.3, 1.4, 1.6),
        "gamma_corr_down": (0.9, 0.8, 0.7, 0.6, 0.4),
    },
}
# The organ datasets (axial, coronal, sagittal CT) share one list.
MEDMNIST_C["organamnist"] = MEDMNIST_C["organcmnist"] = MEDMNIST_C["organsmnist"] = {
    "pixelate": (0.7, 0.6, 0.5, 0.40, 0.35),
    "jpeg_compression": (50, 30, 15, 10, 7),
    "gaussian_noise": (0.04, 0.08, 0.12, 0.16, 0.20),
    "speckle_noise": (0.05, 0.10, 0.20, 0.30, 0.40),
    "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.08),
    "shot_noise": (200, 100, 50, 25, 15),
    "gaussian_blur": (11, 13, 15, 17, 21),
    "brightness_up": (1.2, 1.3, 1.4, 1.5, 1.6),
    "brightness_down": (0.8, 0.75, 0.7, 0.65, 0.60),
    "contrast_up": (1.3, 1.4, 1.6, 1.7, 1.8),
    "contrast_down": (0.8, 0.7, 0.6, 0.55, 0.5),
    "gamma_corr_up": (1.3, 1.4, 1.6, 1.8, 2.0),
    "gamma_corr_down": (0.9, 0.8, 0.7, 0.6, 0.4),
}
# MedMNIST-C's task-specific corruptions that need its ink images and ImageMagick (Wand): not available here.
UNAVAILABLE = {
    "stain_deposit": "pathmnist, bloodmnist",
    "bubble": "pathmnist, bloodmnist",
    "black_corner": "dermamnist",
    "characters": "dermamnist",
}
# Datasets MedMNIST-C does not cover take the list and parameters of the MedMNIST-C dataset with the most families of
# their kind: PneumoniaMNIST's (chest X-ray) for grey images, DermaMNIST's (dermatoscopy) for colour ones.
FALLBACK_DATASET = {1: "pneumoniamnist", 3: "dermamnist"}


# ------------------------------------------------------------------------------------------------ the operations

Generators = list[torch.Generator]


def _truncate(values: torch.Tensor) -> torch.Tensor:
    """Float intensities on the 0-255 scale -> uint8 by truncation, as MedMNIST-C's ``(x * 255).astype(np.uint8)``.
    The 1e-3 keeps an unchanged 100 that float arithmetic made 99.99999 at 100."""
    return (values + 1e-3).clamp(0, 255).floor().to(torch.uint8)


def _luma(rgb: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> (B, 1, H, W) by PIL's convert("L") (ITU-R 601-2 luma in 16-bit fixed point, rounded):
    how MedMNIST-C turns a grey dataset's corrupted RGB image back into grey."""
    red, green, blue = rgb.to(torch.int32).unbind(dim=1)
    return ((red * 19595 + green * 38470 + blue * 7471 + 0x8000) >> 16).to(torch.uint8)[:, None]


def _normal(images: torch.Tensor, generators: Generators) -> torch.Tensor:
    """One standard normal draw per value of each image, from that image's generator."""
    shape, device = images.shape[1:], images.device
    return torch.stack([torch.randn(shape, generator=generator, device=device) for generator in generators])


def _uniform(images: torch.Tensor, generators: Generators, draws: int = 1) -> torch.Tensor:
    """(draws, B, C, H, W) uniform draws in [0, 1), each image's from its own generator."""
    shape, device = (draws, *images.shape[1:]), images.device
    return torch.stack([torch.rand(shape, generator=generator, device=device) for generator in generators], dim=1)


def gaussian_noise(images: torch.Tensor, sigma: float, scale: float, generators: Generators) -> torch.Tensor:
    """x + N(0, sigma) on the 0-1 scale, clipped (MedMNIST-C's GaussianNoise). torchvision's gaussian_noise draws from
    the global generator, which cannot give each image its own stream."""
    return _truncate(images.float() + 255 * sigma * _normal(images, generators))


def speckle_noise(images: torch.Tensor, sigma: float, scale: float, generators: Generators) -> torch.Tensor:
    """x + x N(0, sigma), clipped (MedMNIST-C's SpeckleNoise): noise that grows with the intensity."""
    values = images.float()
    return _truncate(values + values * sigma * _normal(images, generators))


def impulse_noise(images: torch.Tensor, amount: float, scale: float, generators: Generators) -> torch.Tensor:
    """Salt and pepper (MedMNIST-C's ImpulseNoise, scikit-image's random_noise 's&p'): each value is replaced with
    probability `amount`, by 255 or 0 with equal odds. One uniform draw decides which values are replaced, so the
    replaced values of a severity include those of every lower one."""
    replaced, salt = _uniform(images, generators, draws=2)
    noisy = torch.where(salt < 0.5, torch.full_like(images, 255), torch.zeros_like(images))
    return torch.where(replaced < amount, noisy, images)


def shot_noise(images: torch.Tensor, photons: float, scale: float, generators: Generators) -> torch.Tensor:
    """Poisson(x * photons) / photons on the 0-1 scale, clipped (MedMNIST-C's ShotNoise): fewer photons, more noise.
    (Drawing by inverting the 256 grey levels' CDFs, one search per value, ran 2x slower than torch.poisson on a
    CPU.)"""
    rates = images.float() / 255 * photons
    counts = torch.stack([torch.poisson(rate, generator=generator) for rate, generator in zip(rates, generators)])
    return _truncate(counts / photons * 255)


@functools.lru_cache(maxsize=64)
def pil_box_weights(in_size: int, out_size: int) -> torch.Tensor:
    """(out_size, in_size) weights of PIL's BOX resampling along one axis (Pillow's Resample.c): each output pixel
    averages the input pixels whose centres fall in its footprint (for upsampling, the nearest one). torchvision's
    tensor resize has no box filter, and MedMNIST-C's pixelate is PIL's BOX both ways."""
    scale = in_size / out_size
    support = 0.5 * max(scale, 1.0)
    weights = torch.zeros(out_size, in_size, dtype=torch.float64)
    for out in range(out_size):
        centre = (out + 0.5) * scale
        first, last = max(int(centre - support + 0.5), 0), min(int(centre + support + 0.5), in_size)
        for pixel in range(first, last):
            offset = (pixel - centre + 0.5) / max(scale, 1.0)
            weights[out, pixel] = 1.0 if -0.5 < offset <= 0.5 else 0.0
        weights[out] /= weights[out].sum()
    return weights


def _box_resize(values: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Float (B, C, H, W) on the 0-255 scale resized by PIL's BOX filter: the horizontal pass, then the vertical,
    each rounded to 8 bits as PIL rounds them."""
    rows = pil_box_weights(values.shape[-2], size[0]).to(values.device, values.dtype)
    columns = pil_box_weights(values.shape[-1], size[1]).to(values.device, values.dtype)
    across = (values @ columns.T).add(0.5).floor().clamp(0, 255)
    return (rows @ across).add(0.5).floor().clamp(0, 255)


def pixelate(images: torch.Tensor, factor: float, scale: float, generators: Generators) -> torch.Tensor:
    """Shrink to `factor` of the size and back, both with PIL's BOX filter (MedMNIST-C's Pixelate)."""
    height, width = images.shape[-2:]
    small = (max(int(height * factor), 1), max(int(width * factor), 1))  # int(): PIL's resize((int(w * f), ...))
    values = _box_resize(_box_resize(images.float(), small), (height, width))
    return values.to(torch.uint8)


def jpeg_compression(images: torch.Tensor, quality: int, scale: float, generators: Generators) -> torch.Tensor:
    """Encoded as JPEG at `quality` and decoded (torchvision's libjpeg, nvJPEG on a GPU; MedMNIST-C saves with PIL). A
    grey image is encoded as grey: MedMNIST-C's grey-as-RGB JPEG carries no colour, so its luma is the same image."""
    encoded = encode_jpeg([image.contiguous() for image in images], quality=int(quality))
    return torch.stack(decode_jpeg([data.cpu() for data in encoded], device=images.device))


def blur_radius(length: float, scale: float) -> int:
    """A length in pixels at 224 px brought to this image's size and rounded: a kernel's half-width."""
    return round(length * scale)


def gaussian_blur(images: torch.Tensor, kernel: int, scale: float, generators: Generators) -> torch.Tensor:
    """The Gaussian blur torchvision's gaussian_blur gives a `kernel`-pixel kernel at 224 px (MedMNIST-C passes the
    size alone: sigma = 0.15 kernel + 0.35; the border reflected; rounded), both scaled to this image's size. Two
    banded matrix products instead of torchvision's 2-D convolution: the Gaussian is separable, and on a CPU the
    products ran 5x faster than the convolution (kernel 17 at 224 px)."""
    radius = blur_radius((kernel - 1) / 2, scale)
    if radius == 0:  # under half a pixel at this size: no blur
        return images.clone()
    sigma = (0.15 * kernel + 0.35) * scale
    taps = _gaussian_taps(2 * radius + 1, sigma)
    return _separable(images.float(), taps, "reflect").round().clamp(0, 255).to(torch.uint8)


def _banded(length: int, taps: torch.Tensor) -> torch.Tensor:
    """(length + K - 1, length): column j holds the K taps at rows j ... j + K - 1, so that a padded row times it is
    the row correlated with the taps."""
    size = len(taps)
    rows = torch.arange(size)[:, None] + torch.arange(length)[None]  # (K, length)
    matrix = torch.zeros(length + size - 1, length, dtype=taps.dtype)
    matrix[rows, torch.arange(length).expand(size, -1)] = taps[:, None].expand(-1, length)
    return matrix


def _separable(values: torch.Tensor, taps: torch.Tensor, mode: str) -> torch.Tensor:
    """Float (B, C, H, W) correlated with `taps` along both axes, its border padded by `mode`."""
    half = len(taps) // 2
    padded = F.pad(values, (half, half, half, half), mode=mode)
    across = padded @ _banded(values.shape[-1], taps).to(values)  # (B, C, H + 2 half, W)
    return (across.transpose(-1, -2) @ _banded(values.shape[-2], taps).to(values)).transpose(-1, -2)


def _gaussian_taps(size: int, sigma: float) -> torch.Tensor:
    """OpenCV's getGaussianKernel(size, sigma) for sigma > 0: exp(-x^2 / 2 sigma^2) at the integer offsets, summing
    to 1."""
    offsets = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    taps = torch.exp(-(offsets**2) / (2 * sigma**2))
    return taps / taps.sum()


def _correlate(values: torch.Tensor, kernels: torch.Tensor, mode: str) -> torch.Tensor:
    """Every channel of float (B, C, H, W) correlated with an odd (K, K) kernel, or image b with kernels[b] of
    (B, K, K) (OpenCV's filter2D; 'reflect' is its default border, BORDER_REFLECT_101), by FFT: a disk or a streak
    has no separable form, and the FFT ran 3x faster than a depthwise convolution on a CPU (17 x 17), with smaller
    float32 error."""
    size = kernels.shape[-1]
    half = size // 2
    height, width = values.shape[-2:]
    padded = F.pad(values, (half, half, half, half), mode=mode)
    plane = torch.zeros((*kernels.shape[:-2], *padded.shape[-2:]), dtype=values.dtype, device=values.device)
    plane[..., :size, :size] = kernels.flip(-1, -2).to(values)
    if plane.ndim == 3:  # one kernel per image, for all its channels
        plane = plane[:, None]
    spectrum = torch.fft.rfft2(padded) * torch.fft.rfft2(plane)
    full = torch.fft.irfft2(spectrum, s=padded.shape[-2:])  # circular, but the padding keeps the wrap out of view
    return full[..., size - 1 : size - 1 + height, size - 1 : size - 1 + width]


def defocus_blur(images: torch.Tensor, disk: tuple[float, float], scale: float, generators: Generators) -> torch.Tensor:
    """A disk of `disk[0]` pixels at 224 px, its edge smoothed by a Gaussian of sigma `disk[1]` (3 taps, 5 beyond a
    radius of 8: MedMNIST-C's and ImageNet-C's `disk`), both scaled to this size."""
    radius, alias = disk[0] * scale, disk[1] * scale
    # MedMNIST-C's grid: +-8 px (+-radius beyond 8), smoothed with OpenCV's reflecting border, which adds a little
    # weight when the disk reaches the grid's edge (radius 7 or 8); kept, scaled, as part of the definition.
    half = math.ceil(8 * scale) if disk[0] <= 8 else math.ceil(radius)
    offsets = torch.arange(-half, half + 1, dtype=torch.float64)
    kernel = ((offsets[:, None] ** 2 + offsets[None] ** 2) <= radius**2).double()
    kernel /= kernel.sum()
    taps = _gaussian_taps(3 if disk[0] <= 8 else 5, alias)
    kernel = _separable(kernel[None, None], taps, "reflect")[0, 0]
    return _truncate(_correlate(images.float(), kernel, "reflect"))


def motion_angles(seed: int, rows: Sequence[int], name: str = "motion_blur") -> list[float]:
    """Each image's motion direction in degrees, uniform in [-45, 45) (ImageNet-C's range), drawn on the CPU from the
    image's own generator so that it is the same on any device (MedMNIST-C draws it unseeded)."""
    return [float(torch.rand((), generator=image_generator(seed, row, family_key(name))) * 90 - 45) for row in rows]


def motion_offsets(radius: int, angles: Sequence[float]) -> torch.Tensor:
    """(B, 2 radius + 1, 2) the (down, across) offset of the pixel each copy of the streak reads, per image:
    imagecorruptions' shift of the image by (dx, dy) = (-ceil(i cos - 0.5), -ceil(i sin - 0.5)), i = 0, ..., 2 radius."""
    steps = torch.arange(2 * radius + 1, dtype=torch.float64)
    radians = torch.tensor(angles, dtype=torch.float64)[:, None].deg2rad()
    down = torch.ceil(steps * radians.sin() - 0.5)
    across = torch.ceil(steps * radians.cos() - 0.5)
    return torch.stack([down, across], dim=-1).long()


def motion_kernels(radius: int, sigma: float, angles: Sequence[float]) -> torch.Tensor:
    """(B, K, K) correlation kernels, K = 4 radius + 1: imagecorruptions' reimplementation of ImageMagick's motion blur
    (ImageNet-C's), 2 radius + 1 copies of the image shifted by i = 0, 1, ... pixels against each image's angle,
    weighted by exp(-i^2 / 2 sigma^2)."""
    steps = 2 * radius + 1
    taps = torch.exp(-(torch.arange(steps, dtype=torch.float64) ** 2) / (2 * sigma**2))
    taps /= taps.sum()
    offsets = motion_offsets(radius, angles)  # (B, steps, 2)
    kernels = torch.zeros(len(angles), 2 * steps - 1, 2 * steps - 1, dtype=torch.float64)
    images = torch.arange(len(angles))[:, None].expand(-1, steps)
    kernels.index_put_(
        (images, offsets[..., 0] + steps - 1, offsets[..., 1] + steps - 1),
        taps.expand(len(angles), -1),
        accumulate=True,
    )
    return kernels


def motion_blur(
    images: torch.Tensor, blur: tuple[float, float], scale: float, generators: Generators, angles: Sequence[float]
) -> torch.Tensor:
    """A one-sided Gaussian streak of `blur` = (radius, sigma) pixels at 224 px along each image's own angle
    (`motion_kernels`), edges repeated as imagecorruptions' shift repeats them, scaled to this size."""
    radius = blur_radius(blur[0], scale)
    if radius == 0:
        return images.clone()
    kernels = motion_kernels(radius, blur[1] * scale, angles)
    return _truncate(_correlate(images.float(), kernels.to(images.device), "replicate"))


def zoom_factors(zoom: ZoomRange) -> np.ndarray:
    """Zoom blur's factors as MedMNIST-C computes them: np.arange(start, stop, step)."""
    return np.arange(*zoom)


def zoom_blur(images: torch.Tensor, zoom: ZoomRange, scale: float, generators: Generators) -> torch.Tensor:
    """The mean of the image and its centre zoomed by each factor back to full size (MedMNIST-C's ZoomBlur:
    scipy's order-1 zoom, whose grid matches align_corners=True, of the central 1/factor crop)."""
    values = images.float().contiguous(memory_format=torch.channels_last)  # 3-4x faster bilinear on a CPU
    height, width = values.shape[-2:]
    total = values.clone()
    factors = zoom_factors(zoom)
    for factor in factors:
        crop_height, crop_width = math.ceil(height / factor), math.ceil(width / factor)
        top, left = (height - crop_height) // 2, (width - crop_width) // 2
        crop = values[..., top : top + crop_height, left : left + crop_width]
        size = (round(crop_height * factor), round(crop_width * factor))  # scipy's output shape
        zoomed = F.interpolate(crop, size=size, mode="bilinear", align_corners=True)
        trim_top, trim_left = (zoomed.shape[-2] - height) // 2, (zoomed.shape[-1] - width) // 2
        total += zoomed[..., trim_top : trim_top + height, trim_left : trim_left + width]
    return _truncate(total / (len(factors) + 1))


def brightness(images: torch.Tensor, factor: float, scale: float, generators: Generators) -> torch.Tensor:
    """x * factor, clipped and truncated (torchvision's adjust_brightness is PIL's ImageEnhance.Brightness)."""
    return TF.adjust_brightness(images, factor)


def contrast(images: torch.Tensor, factor: float, scale: float, generators: Generators) -> torch.Tensor:
    """Each image blended with its mean grey level (torchvision's adjust_contrast; PIL's ImageEnhance.Contrast rounds
    the mean to an integer first, a difference of at most one grey level)."""
    return TF.adjust_contrast(images, factor)


def gamma(images: torch.Tensor, exponent: float, scale: float, generators: Generators) -> torch.Tensor:
    """(x / 255) ** gamma (torchvision's adjust_gamma, the same table as PIL's)."""
    return TF.adjust_gamma(images, exponent)


def saturate(images: torch.Tensor, amount: float, scale: float, generators: Generators) -> torch.Tensor:
    """`amount` added to the HSV saturation, clipped to 1, hue and value kept (MedMNIST-C's Saturate, via
    scikit-image's HSV). In HSV each channel is value * (1 - saturation * f(hue)), so value - channel scales with the
    saturation; a grey pixel has hue 0 (scikit-image's), which turns it towards red."""
    values = images.float() / 255
    value, low = values.amax(dim=1, keepdim=True), values.amin(dim=1, keepdim=True)
    saturation = torch.where(value > 0, (value - low) / value.clamp_min(1e-12), torch.zeros_like(value))
    raised = (saturation + amount).clamp(0, 1)
    ratio = torch.where(saturation > 0, raised / saturation.clamp_min(1e-12), torch.zeros_like(saturation))
    coloured = value - (value - values) * ratio
    greyish = value * (1 - raised)
    grey = torch.cat([value, greyish, greyish], dim=1)
    return _truncate(torch.where(saturation > 0, coloured, grey) * 255)


@dataclass(frozen=True)
class Family:
    """One kind of corruption.

    Attributes:
        name: MedMNIST-C's name.
        apply: (uint8 images (B, C, H, W), parameter, scale to 224 px, per-image generators) -> uint8 images.
        noise: Whether it draws noise per value: on a grey image it draws per RGB channel and takes the luma, as
            MedMNIST-C corrupts a grey dataset's images in RGB and converts them back. (Motion blur draws too, one
            angle per image, which `corrupt` passes it.)
        colour: Whether it needs colour images (saturation).
        text: What a parameter means, for the report.
    """

    name: str
    apply: Callable[..., torch.Tensor]
    noise: bool = False
    colour: bool = False
    text: str = ""


FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (
        Family("pixelate", pixelate, text="size factor"),
        Family("jpeg_compression", jpeg_compression, text="JPEG quality"),
        Family("gaussian_noise", gaussian_noise, noise=True, text="sigma"),
        Family("speckle_noise", speckle_noise, noise=True, text="sigma"),
        Family("impulse_noise", impulse_noise, noise=True, text="share replaced"),
        Family("shot_noise", shot_noise, noise=True, text="photons"),
        Family("gaussian_blur", gaussian_blur, text="kernel at 224 px"),
        Family("defocus_blur", defocus_blur, text="(radius, sigma) at 224 px"),
        Family("motion_blur", motion_blur, text="(radius, sigma) at 224 px"),
        Family("zoom_blur", zoom_blur, text="zoom factors (start, stop, step)"),
        Family("brightness_up", brightness, text="factor"),
        Family("brightness_down", brightness, text="factor"),
        Family("contrast_up", contrast, text="factor"),
        Family("contrast_down", contrast, text="factor"),
        Family("gamma_corr_up", gamma, text="gamma"),
        Family("gamma_corr_down", gamma, text="gamma"),
        Family("saturate", saturate, colour=True, text="added saturation"),
    )
}


# ------------------------------------------------------------------------------------------------ names and checks


def family_key(name: str) -> int:
    """A number for a corruption's name that stays the same across releases (its CRC-32), for per-image seeds."""
    return zlib.crc32(name.encode())


def check_severity(severity: int, lowest: int = 0) -> int:
    """The severity, when it is a whole number from `lowest` (0: the clean image) to 5.

    Raises:
        ConfigError: any other value.
    """
    if isinstance(severity, bool) or not float(severity).is_integer() or not lowest <= int(severity) <= 5:
        raise ConfigError(f"Severity {severity} is outside 1-5 (MedMNIST-C's severities; 0 is the clean image).")
    return int(severity)


def check_family(name: str, channels: int | None = None) -> Family:
    """The family called `name`, checked to apply to images of `channels` channels (when given).

    Raises:
        ConfigError: an unknown name, one of MedMNIST-C's families not available here, or a colour family on grey
            images.
    """
    if name in UNAVAILABLE:
        raise ConfigError(
            f"Corruption '{name}' (MedMNIST-C's, for {UNAVAILABLE[name]}) needs MedMNIST-C's ink images and ImageMagick "
            f"and is not available here; choose from {', '.join(FAMILIES)}."
        )
    if name not in FAMILIES:
        raise ConfigError(f"Unknown corruption '{name}'; choose from {', '.join(FAMILIES)} (or DEFAULT, all or none).")
    family = FAMILIES[name]
    if family.colour and channels == 1:
        raise ConfigError(f"Corruption '{name}' changes colour and these images are grey; leave it out.")
    return family


def parameter_dataset(name: str, dataset: str | None, channels: int) -> str:
    """Whose MedMNIST-C parameters a corruption takes: the dataset's own where MedMNIST-C lists it for the dataset,
    else those of the fallback dataset of its kind (`FALLBACK_DATASET`), else of the first dataset that lists it."""
    for candidate in (dataset, FALLBACK_DATASET.get(channels, FALLBACK_DATASET[3])):
        if candidate in MEDMNIST_C and name in MEDMNIST_C[candidate]:
            return candidate
    return next(key for key, table in MEDMNIST_C.items() if name in table)


def severity_parameter(name: str, severity: int, dataset: str | None, channels: int) -> Any:
    """The parameter of corruption `name` at `severity` (1-5) for `dataset` (see `parameter_dataset`)."""
    check_family(name, channels)
    return MEDMNIST_C[parameter_dataset(name, dataset, channels)][name][check_severity(severity) - 1]


def corruption_names(spec: str, dataset: str | None, channels: int) -> list[str]:
    """The corruptions asked for: 'DEFAULT' (MedMNIST-C's list for `dataset`, or for the fallback dataset of its
    kind, less the unavailable ones), 'all' (every family that applies to images of `channels` channels), 'none',
    or comma-separated names, each checked.

    Raises:
        ConfigError: an unknown or unavailable name, or a colour family on grey images.
    """
    key = spec.strip()
    if key.lower() == "none":
        return []
    if key.upper() == "DEFAULT":
        source = dataset if dataset in MEDMNIST_C else FALLBACK_DATASET.get(channels, FALLBACK_DATASET[3])
        return list(MEDMNIST_C[source])
    if key.lower() == "all":
        return [name for name, family in FAMILIES.items() if not (family.colour and channels == 1)]
    names = list(dict.fromkeys(name.strip() for name in key.split(",") if name.strip()))
    if not names:
        raise ConfigError("corruptions is empty; give DEFAULT, all, none or names such as pixelate,gaussian_noise.")
    for name in names:
        check_family(name, channels)
    return names


def corruption_choices(dataset: str | None, channels: int) -> list[str]:
    """Every corruption that applies to images of `channels` channels, the dataset's own (MedMNIST-C's list) first."""
    first = corruption_names("DEFAULT", dataset, channels)
    return first + [name for name in corruption_names("all", dataset, channels) if name not in first]


def corruption_dataset(dataset_source: str, dataset_name: str | None) -> str | None:
    """The MedMNIST-C dataset whose parameters a run's data takes: its MedMNIST flag, or None for other sources."""
    if dataset_source == "medmnist" and dataset_name and dataset_name.lower() in MEDMNIST_C:
        return dataset_name.lower()
    return None


def size_scale(images: torch.Tensor) -> float:
    """How this size relates to the 224 px MedMNIST-C tuned its lengths at: the shorter side / 224."""
    return min(images.shape[-2:]) / REFERENCE_SIDE


# ------------------------------------------------------------------------------------------------ corrupting


def corrupt(
    images: torch.Tensor,
    name: str,
    severity: int,
    dataset: str | None = None,
    seed: int = 0,
    rows: Sequence[int] | None = None,
) -> torch.Tensor:
    """Images corrupted by `name` at `severity`, on their device.

    Args:
        images: uint8 (B, C, H, W) at their native size, C = 1 or 3.
        name: A family (`FAMILIES`).
        severity: 1-5 (MedMNIST-C's), or 0 for the clean images (returned as they are).
        dataset: The MedMNIST flag whose parameters to take (see `parameter_dataset`); None for other data.
        seed: Seeds the per-image draws.
        rows: Each image's row in its split, which its draws are seeded by (default 0 to B - 1).

    Returns:
        uint8 (B, C, H, W), each image corrupted alike whatever batch or process it is in.

    Raises:
        ConfigError: an unknown or unavailable corruption, one that does not apply to these images, a severity
            outside 0-5, or images that are not uint8 (B, 1 or 3, H, W).
    """
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ConfigError(f"Corruptions take uint8 images (B, 1 or 3, H, W); got {images.dtype} {tuple(images.shape)}.")
    channels = images.shape[1]
    family = check_family(name, channels)
    if check_severity(severity) == 0:
        return images.clone()
    parameter = severity_parameter(name, severity, dataset, channels)
    rows = list(range(len(images))) if rows is None else [int(row) for row in rows]
    if len(rows) != len(images):
        raise ConfigError(f"{len(rows)} rows given for {len(images)} images; give one row per image.")
    scale = size_scale(images)
    if name == "motion_blur":  # its draw is an angle per image, made on the CPU
        return motion_blur(images, parameter, scale, [], motion_angles(seed, rows))
    if not family.noise:
        return family.apply(images, parameter, scale, [])
    generators = [image_generator(seed, row, family_key(name), device=images.device) for row in rows]
    if channels == 1:  # MedMNIST-C corrupts a grey image as RGB, each channel its own noise, then takes the luma
        return _luma(family.apply(images.expand(-1, 3, -1, -1), parameter, scale, generators))
    return family.apply(images, parameter, scale, generators)


def corrupt_images(
    images: torch.Tensor | list[torch.Tensor],
    name: str,
    severity: int,
    dataset: str | None = None,
    seed: int = 0,
    rows: Sequence[int] | None = None,
) -> torch.Tensor | list[torch.Tensor]:
    """`corrupt` for a batch as the collator gives it: a (B, C, H, W) tensor, or a list of (C, H, W) images of
    different sizes (each corrupted alone, at its own size)."""
    if isinstance(images, torch.Tensor):
        return corrupt(images, name, severity, dataset, seed, rows)
    rows = list(range(len(images))) if rows is None else list(rows)
    return [corrupt(image[None], name, severity, dataset, seed, [row])[0] for image, row in zip(images, rows)]


def describe(name: str, dataset: str | None, channels: int) -> dict[str, Any]:
    """A corruption's parameters at severities 1-5, what they mean and whose they are, for a report."""
    source = parameter_dataset(name, dataset, channels)
    return {
        "parameters": [_plain(value) for value in MEDMNIST_C[source][name]],
        "meaning": FAMILIES[name].text,
        "source": source,
    }


def _plain(value: Any) -> Any:
    """Tuples as lists, for JSON."""
    return list(value) if isinstance(value, tuple) else value
