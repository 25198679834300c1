"""`scripts/benchmark.py maps`: how fast `python -m explain --save_maps` fills a maps dataset on one process and on
two, and what share of each run goes to building and writing the Arrow shards (the rest is explaining).

Each run is the real command in a subprocess (`accelerate launch` for two), on a generated PathMNIST-style split
and a randomly initialised ViT saved as a checkpoint; the figures are the ones the run records in its
``maps_manifest.json`` (model loading and start-up excluded).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from transformers import ViTImageProcessor

from explain.maps_dataset import MANIFEST
from pipelines.errors import ConfigError
from trainers.benchmark.models import BenchmarkSettings, build_model, check_preset, require_at_least

FLAG = "pathmnist"  # nine classes, RGB: the shape the benchmark's ViT presets are built for


@dataclass
class MapsBenchmark(BenchmarkSettings):
    """``scripts/benchmark.py maps``: maps dataset rows/s on 1 and 2 processes, and the share spent writing."""

    model: str = field(default="deit-tiny", metadata={"help": "A ViT preset (trainers/benchmark/models.py)."})
    image_size: int = field(default=224, metadata={"help": "The model's input size."})
    source_size: int = field(default=28, metadata={"help": "The stored images' size: 28, 64, 128 or 224."})
    images: int = field(default=512, metadata={"help": "Images of the split explained."})
    batch_size: int = field(default=64, metadata={"help": "Images per forward pass."})
    shard_size: int = field(default=1024, metadata={"help": "Images per Arrow shard."})
    methods: str = field(default="gradcam", metadata={"help": "Comma-separated, as python -m explain takes them."})

    def __post_init__(self) -> None:
        check_preset(self.model)
        if self.source_size not in (28, 64, 128, 224):
            raise ConfigError(f"--source_size is {self.source_size}; MedMNIST comes in 28, 64, 128 and 224.")
        require_at_least(self, 1, "image_size", "images", "batch_size", "shard_size")

    @property
    def use_cpu(self) -> bool:
        return self.device.type == "cpu"


@dataclass
class MapsRow:
    """One run: processes, maps (rows) per second, seconds, and the share of them spent writing the dataset."""

    processes: int
    threads: int | None
    maps_per_second: float
    seconds: float
    write_share: float


def write_split(folder: Path, images: int, size: int, seed: int = 0) -> Path:
    """A PathMNIST-format npz whose test split holds `images` random images (train and validation: 9 each)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, count in (("train", 9), ("val", 9), ("test", images)):
        arrays[f"{split}_images"] = rng.integers(0, 256, size=(count, size, size, 3), dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, 9, size=(count, 1))
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / (f"{FLAG}.npz" if size == 28 else f"{FLAG}_{size}.npz"), **arrays)  # MedMNIST's names
    return folder


def save_checkpoint(folder: Path, preset: str, image_size: int) -> Path:
    model = build_model(preset, image_size).eval()
    model.save_pretrained(folder)
    ViTImageProcessor(size={"height": image_size, "width": image_size}).save_pretrained(folder)
    return folder


def cpu_threads(counts: list[int]) -> int:
    """Threads per process on the CPU: the cores shared out among the most processes measured, the same for every
    run, so that the rows compare processes and not thread counts (on a loaded 2-core machine one process with two
    threads ran a tiny model's Grad-CAM 12x slower than with one)."""
    return max(1, (os.cpu_count() or 1) // max(counts))


def maps_command(processes: int, arguments: list[str], threads: int | None) -> list[str]:
    if processes == 1:
        return [sys.executable, "-m", "explain", *arguments]
    accelerate = str(Path(sys.executable).with_name("accelerate"))
    launch = [accelerate, "launch", "--multi_gpu", "--num_processes", str(processes), "--num_machines", "1"]
    launch += ["--mixed_precision", "no", "--dynamo_backend", "no", "--quiet"]
    if threads is not None:  # on the CPU; accelerate would give each process one thread otherwise
        launch += ["--num_cpu_threads_per_process", str(threads)]
    return [*launch, "-m", "explain", *arguments]


def process_counts(use_cpu: bool) -> list[int]:
    """1 and 2 processes on the CPU; on GPUs, 1 and 2 where there are two (one process per device)."""
    if use_cpu:
        return [1, 2]
    return [1, 2] if torch.cuda.device_count() >= 2 else [1]


def benchmark_maps(settings: MapsBenchmark) -> list[MapsRow]:
    """Fill a maps dataset of ``settings.images`` images with each process count of `process_counts`, in one run.

    Returns:
        One row per process count.
    """
    use_cpu, batch_size, source_size = settings.use_cpu, settings.batch_size, settings.source_size
    rows = []
    with tempfile.TemporaryDirectory(prefix="maps-benchmark-") as work:
        work = Path(work)
        data = write_split(work / "data", settings.images, source_size)
        model = save_checkpoint(work / "model", settings.model, settings.image_size)
        environment = {**os.environ, "HF_HUB_OFFLINE": "1"}
        counts = process_counts(use_cpu)
        threads = cpu_threads(counts) if use_cpu else None
        if use_cpu:
            environment |= {"ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": str(threads)}
        for processes in counts:
            out = work / f"maps-{processes}"
            arguments = [
                *(
                    "--model",
                    str(model),
                    "--methods",
                    settings.methods,
                    "--dataset_name",
                    FLAG,
                    "--data_dir",
                    str(data),
                ),
                *("--medmnist_size", str(source_size), "--verify_md5", "false", "--split", "test"),
                *("--batch_size", str(batch_size), "--shard_size", str(settings.shard_size), "--save_maps", str(out)),
                *(["--device", "cpu"] if use_cpu else []),
            ]
            result = subprocess.run(
                maps_command(processes, arguments, threads), env=environment, capture_output=True, text=True
            )
            if result.returncode != 0:
                raise RuntimeError(f"the {processes}-process run failed:\n{result.stderr[-3000:]}")
            run = json.loads((out / MANIFEST).read_text())["last_run"]
            rows.append(
                MapsRow(
                    processes,
                    threads,
                    run["rows"] / run["seconds"],
                    run["seconds"],
                    run["write_seconds"] / run["seconds"],
                )
            )
    return rows
