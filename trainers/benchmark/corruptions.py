"""``scripts/benchmark.py corruptions``: corrupted images per second of `pipelines.corruptions` (batched tensor
operations on the device) against imagecorruptions (ImageNet-C's functions packaged by Michaelis et al., 2019: numpy,
OpenCV and scikit-image, one image at a time on the CPU), on the same images and the families both have, timed in one
run, the two taking turns family by family and repeat by repeat.

imagecorruptions runs in a subprocess, in a Python environment of its own (`make imagecorruptions-env` makes one; see
trainers/benchmark/imagecorruptions_worker.py for why). Each side corrupts with its own parameters at the same
severity: MedMNIST-C's here, ImageNet-C's there; a family's work per image is the same operation at a similar
strength.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pipelines.corruptions import corrupt, parameter_dataset, severity_parameter
from pipelines.errors import ConfigError
from pipelines.runtime import synchronize
from trainers.benchmark.models import BenchmarkSettings, require_at_least, synthetic_images

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("imagecorruptions_worker.py")
REFERENCE_VENV = ROOT / ".venv-imagecorruptions"
# This project's families and imagecorruptions' names for the same operation (imagecorruptions has one brightness
# and one contrast: the ones that raise brightness and lower contrast are its).
SHARED = {
    "gaussian_noise": "gaussian_noise",
    "shot_noise": "shot_noise",
    "impulse_noise": "impulse_noise",
    "speckle_noise": "speckle_noise",
    "gaussian_blur": "gaussian_blur",
    "defocus_blur": "defocus_blur",
    "motion_blur": "motion_blur",
    "zoom_blur": "zoom_blur",
    "pixelate": "pixelate",
    "jpeg_compression": "jpeg_compression",
    "brightness_up": "brightness",
    "contrast_down": "contrast",
    "saturate": "saturate",
}


@dataclass
class CorruptionBenchmark(BenchmarkSettings):
    """``scripts/benchmark.py corruptions``: corrupted images/s against imagecorruptions on the same images."""

    image_size: int = field(default=224, metadata={"help": "Side of the square RGB images (imagecorruptions: >= 32)."})
    images: int = field(default=64, metadata={"help": "Images corrupted per family and repeat (one batch here)."})
    severity: int = field(default=3, metadata={"help": "The severity both sides corrupt at (1-5)."})
    families: str = field(
        default="all", metadata={"help": "Comma-separated families both have, or 'all' (the 13 they share)."}
    )
    dataset: str = field(
        default="dermamnist",
        metadata={"help": "Whose MedMNIST-C parameters this side uses (a colour dataset: RGB images)."},
    )
    repeats: int = field(default=3, metadata={"help": "Timed repeats; the median is reported."})
    warmup: int = field(default=1, metadata={"help": "Untimed rounds before the timed ones."})
    reference_python: str | None = field(
        default=None,
        metadata={
            "help": "A Python with imagecorruptions installed (default: .venv-imagecorruptions/bin/python, which "
            "`make imagecorruptions-env` makes)."
        },
    )

    def __post_init__(self) -> None:
        require_at_least(self, 32, "image_size")
        require_at_least(self, 1, "images", "repeats")
        require_at_least(self, 0, "warmup")
        if not 1 <= self.severity <= 5:
            raise ConfigError(f"--severity is {self.severity}; it must lie in 1-5.")
        self.family_names()  # refused before anything is started

    def family_names(self) -> list[str]:
        """The families to time, each checked to be one both sides have."""
        if self.families.strip().lower() == "all":
            return list(SHARED)
        names = [name.strip() for name in self.families.split(",") if name.strip()]
        unknown = [name for name in names if name not in SHARED]
        if not names or unknown:
            raise ConfigError(
                f"--families has {', '.join(unknown) or 'nothing'}; choose among {', '.join(SHARED)} (or all)."
            )
        return names

    def python(self) -> str:
        """The interpreter that runs imagecorruptions.

        Raises:
            ConfigError: none given and no .venv-imagecorruptions.
        """
        if self.reference_python:
            return self.reference_python
        default = REFERENCE_VENV / "bin" / "python"
        if not default.exists():
            raise ConfigError(
                "imagecorruptions is timed in a Python environment of its own: run `make imagecorruptions-env`, or "
                "give --reference_python with a Python that has imagecorruptions installed."
            )
        return str(default)


@dataclass
class CorruptionRow:
    """One family's rates: this project's and imagecorruptions' (images/s, from the median of the repeats)."""

    family: str
    reference_family: str
    parameter: object
    ours: float
    reference: float

    @property
    def ratio(self) -> float:
        return self.ours / self.reference


class ReferenceWorker:
    """imagecorruptions in its subprocess (trainers/benchmark/imagecorruptions_worker.py), asked to time one family
    at a time on the images it was started with."""

    def __init__(self, python: str, images: Path, threads: int) -> None:
        self.process = subprocess.Popen(
            [python, str(WORKER), str(images), str(threads)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.read()  # {"ready": true}, or the reason it could not start

    def read(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            reason = (self.process.stderr.read().strip().splitlines() or ["no output"])[-1]
            raise ConfigError(f"imagecorruptions could not be run by {self.process.args[0]}: {reason}")
        return json.loads(line)

    def seconds(self, family: str, severity: int) -> float:
        """Seconds to corrupt every image with `family` at `severity`, one image at a time."""
        self.process.stdin.write(json.dumps({"family": family, "severity": severity}) + "\n")
        self.process.stdin.flush()
        return self.read()["seconds"]

    def close(self) -> None:
        self.process.stdin.write("\n")
        self.process.stdin.close()
        self.process.wait(timeout=60)


def benchmark_corruptions(settings: CorruptionBenchmark) -> list[CorruptionRow]:
    """Time every family on both sides over the same images, interleaved: in each round, each family here and then
    there, so that a slow spell of a shared machine falls on both alike."""
    names = settings.family_names()
    device = settings.device
    pixels, _ = synthetic_images(settings.images, settings.image_size)  # (N, H, W, 3) uint8
    batch = torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous().to(device)
    rows = list(range(settings.images))
    spans: dict[str, dict[str, list[float]]] = {name: {"ours": [], "reference": []} for name in names}
    with tempfile.TemporaryDirectory() as folder:
        stored = Path(folder) / "images.npy"
        np.save(stored, pixels)
        worker = ReferenceWorker(settings.python(), stored, torch.get_num_threads())
        try:
            for round_ in range(settings.warmup + settings.repeats):
                for name in names:
                    synchronize(device)
                    start = time.perf_counter()
                    corrupt(batch, name, settings.severity, settings.dataset, 0, rows)
                    synchronize(device)
                    ours = time.perf_counter() - start
                    reference = worker.seconds(SHARED[name], settings.severity)
                    if round_ >= settings.warmup:
                        spans[name]["ours"].append(ours)
                        spans[name]["reference"].append(reference)
        finally:
            worker.close()
    return [
        CorruptionRow(
            name,
            SHARED[name],
            severity_parameter(name, settings.severity, settings.dataset, 3),
            settings.images / statistics.median(spans[name]["ours"]),
            settings.images / statistics.median(spans[name]["reference"]),
        )
        for name in names
    ]


def overall_rates(rows: list[CorruptionRow]) -> tuple[float, float]:
    """Images/s over every family together (each image through each family once): the harmonic combination of the
    rows, so that a slow family weighs what it costs."""
    ours = len(rows) / sum(1 / row.ours for row in rows)
    reference = len(rows) / sum(1 / row.reference for row in rows)
    return ours, reference


def parameter_source(name: str, dataset: str) -> str:
    """Whose MedMNIST-C parameters a family took (`pipelines.corruptions.parameter_dataset`), for the table."""
    return parameter_dataset(name, dataset, 3)
