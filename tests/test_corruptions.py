"""pipelines.corruptions: MedMNIST-C's corruptions as batched tensor operations. Every family at every severity is
compared with MedMNIST-C's definition, computed here by hand from its formula (with PIL, scipy and scikit-image where
MedMNIST-C's formula is their call), on a few 224 px images (the size MedMNIST-C tuned them at) within the stated
tolerance; severity 0 is the identity; lengths scale with the image's side; an image's draws are its own, alone or in
a batch, on one process or two; bad input ends in one sentence."""

from __future__ import annotations

import io
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import skimage
import torch
from PIL import Image
from scipy.ndimage import zoom as scipy_zoom

from pipelines import run_cli
from pipelines.corruptions import (
    FAMILIES,
    MEDMNIST_C,
    SEVERITIES,
    UNAVAILABLE,
    corrupt,
    corrupt_images,
    corruption_dataset,
    corruption_names,
    family_key,
    motion_angles,
    parameter_dataset,
    severity_parameter,
)
from pipelines.errors import ConfigError
from pipelines.seeding import image_generator

from helpers import corrupted_chunks, faults

pytestmark = pytest.mark.usefixtures("one_thread")

SEED, ROWS = 5, (40, 41)
# Where the difference may exceed 0, and why: MedMNIST-C truncates float results to uint8, so a float rounding
# difference of 1e-6 at an exact integer moves a value by one grey level; contrast: PIL rounds the mean grey level to
# an integer, torchvision does not.
EXACT = {"pixelate", "jpeg_compression", "brightness_up", "brightness_down", "gamma_corr_up", "gamma_corr_down"}
TOLERANCE = 1  # grey levels, for every other family


def smooth_images(count: int, channels: int, side: int = 224, seed: int = 0) -> torch.Tensor:
    """uint8 (count, channels, side, side): upsampled noise, a scan's smooth structure with edges to blur."""
    coarse = np.random.default_rng(seed).integers(0, 256, (count, channels, side // 8, side // 8)).astype(np.float32)
    return torch.nn.functional.interpolate(torch.from_numpy(coarse), size=(side, side), mode="bilinear").round().byte()


GREY, RGB = smooth_images(2, 1), smooth_images(2, 3, seed=1)


# ------------------------------------------------------------------------ MedMNIST-C's definitions, by hand


def as_rgb(image: torch.Tensor) -> np.ndarray:
    """(C, H, W) -> (H, W, 3) uint8: MedMNIST-C corrupts Image.fromarray(img).convert('RGB')."""
    array = image.permute(1, 2, 0).numpy()
    return np.repeat(array, 3, axis=2) if array.shape[2] == 1 else array


def as_uint8(unit: np.ndarray) -> np.ndarray:
    """MedMNIST-C's (np.clip(x, 0, 1) * 255).astype(np.uint8): truncation."""
    return (np.clip(unit, 0, 1) * 255).astype(np.uint8)


def pixelate(rgb: np.ndarray, factor: float, draws: dict) -> np.ndarray:
    image = Image.fromarray(rgb)
    width, height = image.size
    small = image.resize((int(width * factor), int(height * factor)), Image.BOX)
    return np.asarray(small.resize((width, height), Image.BOX))


def jpeg(rgb: np.ndarray, quality: int, draws: dict) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "JPEG", quality=quality)
    return np.asarray(Image.open(buffer))


def brightness(rgb: np.ndarray, factor: float, draws: dict) -> np.ndarray:
    """PIL's ImageEnhance.Brightness: a blend with black, truncated."""
    return np.clip(rgb.astype(np.float32) * np.float32(factor), 0, 255).astype(np.uint8)


def contrast(rgb: np.ndarray, factor: float, draws: dict) -> np.ndarray:
    """PIL's ImageEnhance.Contrast: a blend with the mean grey level (rounded to an integer), truncated."""
    mean = int(np.asarray(Image.fromarray(rgb).convert("L")).mean() + 0.5)
    return np.clip(mean + np.float32(factor) * (rgb.astype(np.float32) - mean), 0, 255).astype(np.uint8)


def gamma(rgb: np.ndarray, exponent: float, draws: dict) -> np.ndarray:
    """torchvision's adjust_gamma on a PIL image: the table int(255.999 * (x / 255) ** gamma)."""
    table = np.array([int((255 + 1 - 1e-3) * (value / 255.0) ** exponent) for value in range(256)], dtype=np.uint8)
    return table[rgb]


def gaussian_taps(size: int, sigma: float) -> np.ndarray:
    offsets = np.arange(size) - (size - 1) / 2
    taps = np.exp(-(offsets**2) / (2 * sigma**2))
    return taps / taps.sum()


def separable(values: np.ndarray, taps: np.ndarray, mode: str) -> np.ndarray:
    """Correlate an (H, W, C) array with taps along both axes, its border padded by numpy's `mode`."""
    half = len(taps) // 2
    padded = np.pad(values, ((half, half), (half, half), (0, 0)), mode=mode)
    height, width = values.shape[:2]
    across = sum(tap * padded[:, i : i + width] for i, tap in enumerate(taps))
    return sum(tap * across[i : i + height] for i, tap in enumerate(taps))


def gaussian_blur(rgb: np.ndarray, kernel: int, draws: dict) -> np.ndarray:
    """torchvision's gaussian_blur(img, kernel_size) as MedMNIST-C calls it: sigma = 0.3 ((k - 1) 0.5 - 1) + 0.8,
    reflected border, rounded."""
    sigma = 0.3 * ((kernel - 1) * 0.5 - 1) + 0.8
    return np.round(separable(rgb.astype(np.float64), gaussian_taps(kernel, sigma), "reflect")).astype(np.uint8)


def defocus_blur(rgb: np.ndarray, disk: tuple[float, float], draws: dict) -> np.ndarray:
    """ImageNet-C's disk (MedMNIST-C's): a disk on a +-8 grid smoothed by OpenCV's 3-tap Gaussian (border reflect 101,
    numpy's 'reflect'), then each channel filtered with it (filter2D, the same border), truncated."""
    radius, alias = disk
    grid = np.arange(-8, 9)
    x, y = np.meshgrid(grid, grid)
    kernel = ((x**2 + y**2) <= radius**2).astype(np.float64)
    kernel /= kernel.sum()
    kernel = separable(kernel[:, :, None], gaussian_taps(3, alias), "reflect")[:, :, 0]
    half = kernel.shape[0] // 2
    padded = np.pad(rgb / 255.0, ((half, half), (half, half), (0, 0)), mode="reflect")
    height, width = rgb.shape[:2]
    out = sum(
        kernel[i, j] * padded[i : i + height, j : j + width]
        for i in range(kernel.shape[0])
        for j in range(kernel.shape[1])
    )
    return as_uint8(out)


def shifted(image: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """imagecorruptions' shift: the image moved by (dx, dy), its edge rows and columns repeated."""
    height, width = image.shape[:2]
    rows = np.clip(np.arange(height) - dy, 0, height - 1)
    columns = np.clip(np.arange(width) - dx, 0, width - 1)
    return image[rows][:, columns]


def motion_blur(rgb: np.ndarray, blur: tuple[int, int], draws: dict) -> np.ndarray:
    """imagecorruptions' _motion_blur (ImageNet-C's ImageMagick kernel, which MedMNIST-C calls through Wand): 2 r + 1
    shifted copies along the angle, weighted by a one-sided Gaussian, truncated."""
    radius, sigma = blur
    width = 2 * radius + 1
    taps = np.exp(-(np.arange(width) ** 2) / (2 * sigma**2))
    taps /= taps.sum()
    angle = np.deg2rad(draws["angle"])
    out = np.zeros(rgb.shape, dtype=np.float64)
    for i, tap in enumerate(taps):
        dy, dx = -math.ceil(i * np.sin(angle) - 0.5), -math.ceil(i * np.cos(angle) - 0.5)
        out += tap * shifted(rgb.astype(np.float64), dx, dy)
    return np.clip(out, 0, 255).astype(np.uint8)


def zoom_blur(rgb: np.ndarray, zoom: tuple[float, float, float], draws: dict) -> np.ndarray:
    """MedMNIST-C's ZoomBlur: the mean of the image and each central 1/z crop zoomed back (scipy, order 1)."""
    image = (rgb / 255.0).astype(np.float32)
    side = image.shape[0]
    total = np.zeros_like(image)
    factors = np.arange(*zoom)
    for factor in factors:
        crop = int(np.ceil(side / factor))
        top = (side - crop) // 2
        zoomed = scipy_zoom(image[top : top + crop, top : top + crop], (factor, factor, 1), order=1)
        trim = (zoomed.shape[0] - side) // 2
        total += zoomed[trim : trim + side, trim : trim + side]
    return as_uint8((image + total) / (len(factors) + 1))


def saturate(rgb: np.ndarray, amount: float, draws: dict) -> np.ndarray:
    hsv = skimage.color.rgb2hsv(rgb / 255.0)
    hsv[:, :, 1] = np.clip(hsv[:, :, 1] + amount, 0, 1)
    return as_uint8(skimage.color.hsv2rgb(hsv))


def gaussian_noise(rgb: np.ndarray, sigma: float, draws: dict) -> np.ndarray:
    return as_uint8(rgb / 255.0 + sigma * draws["normal"])


def speckle_noise(rgb: np.ndarray, sigma: float, draws: dict) -> np.ndarray:
    unit = rgb / 255.0
    return as_uint8(unit + unit * sigma * draws["normal"])


def impulse_noise(rgb: np.ndarray, amount: float, draws: dict) -> np.ndarray:
    """scikit-image's 's&p': each value replaced with probability `amount`, by 1 or 0 with equal odds."""
    replaced, salt = draws["uniform"]
    return as_uint8(np.where(replaced < amount, (salt < 0.5).astype(np.float64), rgb / 255.0))


def shot_noise(rgb: np.ndarray, photons: float, draws: dict) -> np.ndarray:
    return as_uint8(draws["poisson"](rgb, photons) / photons)


REFERENCES = {
    "pixelate": pixelate,
    "jpeg_compression": jpeg,
    "brightness_up": brightness,
    "brightness_down": brightness,
    "contrast_up": contrast,
    "contrast_down": contrast,
    "gamma_corr_up": gamma,
    "gamma_corr_down": gamma,
    "gaussian_blur": gaussian_blur,
    "defocus_blur": defocus_blur,
    "motion_blur": motion_blur,
    "zoom_blur": zoom_blur,
    "saturate": saturate,
    "gaussian_noise": gaussian_noise,
    "speckle_noise": speckle_noise,
    "impulse_noise": impulse_noise,
    "shot_noise": shot_noise,
}


def draws_of(name: str, row: int, shape: tuple[int, ...]) -> dict:
    """The draws the project makes for an image (its own generator, seeded by seed, row and corruption), made here
    again so that the formula can be checked value by value. (H, W, 3) like the image MedMNIST-C corrupts."""
    generator = image_generator(SEED, row, family_key(name))
    channels_first = (3, *shape[:2])
    to_hwc = lambda values: values.permute(*range(values.ndim - 3), -2, -1, -3).double().numpy()  # noqa: E731
    return {
        "normal": to_hwc(torch.randn(channels_first, generator=generator)),
        "uniform": to_hwc(torch.rand((2, *channels_first), generator=image_generator(SEED, row, family_key(name)))),
        # The same float32 rates as the project's: a Poisson draw at a rate 1e-7 away may differ.
        "poisson": lambda rgb, photons: to_hwc(
            torch.poisson(
                torch.from_numpy(rgb).permute(2, 0, 1).float() / 255 * photons,
                generator=image_generator(SEED, row, family_key(name)),
            )
        ),
        "angle": motion_angles(SEED, [row])[0],
    }


def reference(images: torch.Tensor, name: str, severity: int, dataset: str) -> torch.Tensor:
    """MedMNIST-C's corruption of each image: as RGB, then (a grey dataset) back to grey with PIL's convert('L')."""
    parameter = MEDMNIST_C[dataset][name][severity - 1]
    out = []
    for row, image in zip(ROWS, images):
        rgb = as_rgb(image)
        corrupted = REFERENCES[name](rgb, parameter, draws_of(name, row, rgb.shape))
        if image.shape[0] == 1:
            corrupted = np.asarray(Image.fromarray(corrupted).convert("L"))[:, :, None]
        out.append(torch.from_numpy(np.ascontiguousarray(corrupted)).permute(2, 0, 1))
    return torch.stack(out)


# Each family on the images it is defined for, with the parameters of a dataset MedMNIST-C lists it for.
CASES = [
    (name, dataset, images)
    for name, dataset, images in [
        *((name, "pneumoniamnist", "grey") for name in MEDMNIST_C["pneumoniamnist"]),
        ("defocus_blur", "dermamnist", "rgb"),
        ("defocus_blur", "octmnist", "grey"),  # its radius-0.5 disk: the smoothing alone blurs
        ("motion_blur", "breastmnist", "grey"),
        ("motion_blur", "dermamnist", "rgb"),
        ("zoom_blur", "dermamnist", "rgb"),
        ("saturate", "pathmnist", "rgb"),
        ("gaussian_noise", "dermamnist", "rgb"),
        ("impulse_noise", "dermamnist", "rgb"),
        ("shot_noise", "dermamnist", "rgb"),
    ]
]


def test_every_family_is_compared_with_its_definition() -> None:
    assert set(REFERENCES) == set(FAMILIES)
    assert {name for name, _, _ in CASES} == set(FAMILIES)


@pytest.mark.parametrize(("name", "dataset", "kind"), CASES, ids=[f"{n}-{d}" for n, d, _ in CASES])
def test_each_family_at_each_severity_is_medmnist_cs_within_the_tolerance(name: str, dataset: str, kind: str) -> None:
    images = GREY if kind == "grey" else RGB
    tolerance = 0 if name in EXACT else TOLERANCE
    for severity in SEVERITIES:
        ours = corrupt(images, name, severity, dataset, seed=SEED, rows=ROWS)
        expected = reference(images, name, severity, dataset)
        difference = (ours.int() - expected.int()).abs()
        assert ours.shape == images.shape and ours.dtype == torch.uint8
        assert int(difference.max()) <= tolerance, (name, severity, int(difference.max()))
        if not name.startswith("contrast"):  # there every value moves by up to |1 - factor| / 2 before truncation
            # Float rounding at exact integers (a mean of 9 pixels is one 1 time in 9): a level here and there.
            assert float((difference > 0).float().mean()) < 0.1
        assert not torch.equal(ours, images)  # at 224 px every severity changes the images


def test_severity_0_is_the_identity() -> None:
    for images in (GREY, RGB, smooth_images(2, 1, side=28)):
        for name in corruption_names("all", None, channels=images.shape[1]):
            assert torch.equal(corrupt(images, name, 0, "dermamnist", seed=SEED, rows=ROWS), images), name


def test_the_noise_is_as_strong_as_medmnist_c_says() -> None:
    # On a flat colour image each value's noise is its own draw: its spread is the parameter, whatever the draws.
    flat = torch.full((1, 3, 224, 224), 128, dtype=torch.uint8)
    sigma = MEDMNIST_C["dermamnist"]["gaussian_noise"][2]  # 0.12: 31 grey levels, no clipping at 4 sd from 128
    noise = corrupt(flat, "gaussian_noise", 3, "dermamnist").double() - 128
    assert noise.std().item() == pytest.approx(255 * sigma, rel=0.02)
    amount = MEDMNIST_C["dermamnist"]["impulse_noise"][4]  # 0.17 of the values
    replaced = corrupt(flat, "impulse_noise", 5, "dermamnist") != 128
    assert replaced.double().mean().item() == pytest.approx(amount, abs=4 * math.sqrt(amount / replaced.numel()))
    photons = MEDMNIST_C["dermamnist"]["shot_noise"][0]  # 60: variance x / photons on the 0-1 scale, unclipped
    shot = corrupt(flat, "shot_noise", 1, "dermamnist").double() / 255
    assert shot.var().item() == pytest.approx((128 / 255) / photons, rel=0.05)


def test_a_grey_image_gets_medmnist_cs_rgb_noise_through_the_luma() -> None:
    # MedMNIST-C corrupts a grey image as RGB (each channel its own noise) and converts back with PIL's luma, which
    # averages the channels' noise: its spread is sqrt(0.299^2 + 0.587^2 + 0.114^2) = 0.67 of the parameter.
    flat = torch.full((1, 1, 224, 224), 128, dtype=torch.uint8)
    sigma = MEDMNIST_C["pneumoniamnist"]["gaussian_noise"][4]
    noise = corrupt(flat, "gaussian_noise", 5, "pneumoniamnist").double() - 128
    assert noise.std().item() == pytest.approx(255 * sigma * math.hypot(0.299, 0.587, 0.114), rel=0.03)


def test_lengths_scale_with_the_side_and_a_blur_under_half_a_pixel_is_none() -> None:
    half = smooth_images(2, 1, side=112)
    assert MEDMNIST_C["pneumoniamnist"]["gaussian_blur"][2] == 7  # at 224 px: radius 3, sigma 0.15 * 7 + 0.35 = 1.4
    expected = np.round(separable(half[0].permute(1, 2, 0).double().numpy(), gaussian_taps(5, 0.7), "reflect"))
    ours = corrupt(half, "gaussian_blur", 3, "pneumoniamnist")[0].permute(1, 2, 0).double().numpy()
    assert np.abs(ours - expected).max() <= TOLERANCE  # radius round(3 / 2) = 2, sigma 1.4 / 2
    radius, sigma = MEDMNIST_C["breastmnist"]["motion_blur"][4]  # (17, 12) at 224 px: (8, 6) at 112
    rgb = as_rgb(half[0])
    streak = motion_blur(rgb, (round(radius / 2), sigma / 2), {"angle": motion_angles(SEED, [ROWS[0]])[0]})
    ours = corrupt(half[:1], "motion_blur", 5, "breastmnist", seed=SEED, rows=ROWS[:1])[0, 0].numpy()
    assert np.abs(ours.astype(int) - np.asarray(Image.fromarray(streak).convert("L")).astype(int)).max() <= TOLERANCE
    small = smooth_images(3, 1, side=28)  # PneumoniaMNIST's own size: the Gaussian blur's radius rounds to 0
    for severity in SEVERITIES:
        assert torch.equal(corrupt(small, "gaussian_blur", severity, "pneumoniamnist"), small)
        assert not torch.equal(corrupt(small, "pixelate", severity, "pneumoniamnist"), small)  # a factor: no scaling


def test_an_images_draws_are_its_own_in_any_batch_and_shared_by_its_severities() -> None:
    images = smooth_images(4, 1, side=32)
    rows = [10, 11, 12, 13]
    for name in ("gaussian_noise", "impulse_noise", "shot_noise", "speckle_noise", "motion_blur"):
        batch = corrupt(images, name, 4, "breastmnist" if name == "motion_blur" else None, SEED, rows)
        alone = corrupt(images[2:3], name, 4, "breastmnist" if name == "motion_blur" else None, SEED, rows[2:3])
        assert torch.equal(batch[2:3], alone), name
    noisy = corrupt(images, "gaussian_noise", 3, None, SEED, rows)
    assert not torch.equal(noisy[1], corrupt(images[1:2], "gaussian_noise", 3, None, SEED, [99])[0])  # by row
    assert not torch.equal(noisy, corrupt(images, "gaussian_noise", 3, None, SEED + 1, rows))  # by seed
    flat = torch.full((2, 3, 64, 64), 128, dtype=torch.uint8)
    replaced = [corrupt(flat, "impulse_noise", s, "dermamnist", SEED, [1, 2]) != 128 for s in SEVERITIES]
    for lower, higher in zip(replaced, replaced[1:]):
        assert bool((lower <= higher).all())  # one draw: a higher severity replaces what a lower one did, and more
    listed = corrupt_images(list(images), "gaussian_noise", 3, None, SEED, rows)
    assert all(torch.equal(image, row) for image, row in zip(listed, noisy))  # images of different sizes, one by one


@pytest.mark.slow
def test_two_processes_corrupt_the_same_pixels_as_one(tmp_path: Path) -> None:
    program = str(Path(corrupted_chunks.__file__))
    one, two = tmp_path / "one.npz", tmp_path / "two.npz"
    env = faults.environment(OMP_NUM_THREADS=1)
    # One process corrupts the 7 images at once, two take chunks of 3 (3 + 1 and 3): another batch and process each.
    single = subprocess.run([sys.executable, program, str(one), "7"], env=env, capture_output=True, text=True)
    assert single.returncode == 0, single.stderr[-2000:]
    launch = [str(Path(sys.executable).with_name("accelerate")), "launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    launch += ["--main_process_port", str(faults.free_port()), program, str(two), "3"]
    result = faults.run(launch, tmp_path / "two.log", env)
    assert result.returncode == 0, result.stdout[-3000:]
    with np.load(one) as first, np.load(two) as second:
        assert sorted(first) == sorted(second) and len(first) == 5 * len(corruption_names("all", None, 1))
        for key in first:
            assert first[key].shape == (corrupted_chunks.IMAGES, 1, corrupted_chunks.SIDE, corrupted_chunks.SIDE)
            assert np.array_equal(first[key], second[key]), key


def test_default_lists_are_medmnist_cs_and_other_data_take_their_kinds() -> None:
    assert corruption_names("DEFAULT", "pneumoniamnist", 1) == list(MEDMNIST_C["pneumoniamnist"])
    assert len(corruption_names("DEFAULT", "pneumoniamnist", 1)) == 13
    assert corruption_names("DEFAULT", None, 1) == list(MEDMNIST_C["pneumoniamnist"])  # grey data: chest X-ray's
    assert corruption_names("DEFAULT", None, 3) == list(MEDMNIST_C["dermamnist"])  # colour: dermatoscopy's
    assert corruption_names("none", "pneumoniamnist", 1) == []
    assert "saturate" not in corruption_names("all", None, 1) and "saturate" in corruption_names("all", None, 3)
    assert corruption_names("pixelate, shot_noise", None, 1) == ["pixelate", "shot_noise"]
    assert parameter_dataset("motion_blur", "pneumoniamnist", 1) == "pathmnist"  # the first that lists it
    assert severity_parameter("jpeg_compression", 5, "pneumoniamnist", 1) == 7
    assert corruption_dataset("medmnist", "PneumoniaMNIST") == "pneumoniamnist"
    assert corruption_dataset("hub", "cifar10") is None


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: corrupt(GREY, "fog", 3), "Unknown corruption 'fog'; choose from pixelate, jpeg_compression"),
        (lambda: corrupt(GREY, "pixelate", 6), "Severity 6 is outside 1-5 (MedMNIST-C's severities; 0 is the clean"),
        (lambda: corrupt(GREY, "pixelate", -1), "Severity -1 is outside 1-5"),
        (lambda: corrupt(GREY, "pixelate", 2.5), "Severity 2.5 is outside 1-5"),
        (lambda: corrupt(GREY, "saturate", 3), "Corruption 'saturate' changes colour and these images are grey"),
        (lambda: corruption_names("bubble", "pathmnist", 3), "Corruption 'bubble' (MedMNIST-C's, for pathmnist, blood"),
        (lambda: corruption_names("saturate", "chestmnist", 1), "Corruption 'saturate' changes colour"),
        (lambda: corruption_names(" , ", None, 1), "corruptions is empty"),
        (lambda: corrupt(GREY.float(), "pixelate", 3), "Corruptions take uint8 images (B, 1 or 3, H, W)"),
        (lambda: corrupt(GREY, "gaussian_noise", 3, rows=[1]), "1 rows given for 2 images"),
    ],
)
def test_bad_input_ends_in_one_sentence(call, message: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        run_cli(call)
    error = capsys.readouterr().err
    assert error.startswith(f"error: {message}") and error.count("\n") == 1
    with pytest.raises(ConfigError):
        call()


def test_every_unavailable_family_is_one_medmnist_c_lists_nowhere_here() -> None:
    assert not set(UNAVAILABLE) & set(FAMILIES)
    assert all(set(table) <= set(FAMILIES) for table in MEDMNIST_C.values())
