"""What a model costs: parameters, bytes on disk, latency and throughput, all measured."""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from transformers import PreTrainedModel

from pipelines.progress import progress_bar
from pipelines.runtime import device_name, synchronize

if TYPE_CHECKING:
    from tqdm import tqdm


@dataclass
class ModelCost:
    """Measured cost of one model on one device.

    Latencies are the median over timed repeats after warm-up, divided by the batch size; each comes with the
    quartiles of those repeats (the middle half of them lies between the two), so that a reader can tell a real
    difference between two models from timing noise.
    """

    parameters: int
    size_on_disk_bytes: int
    latency_ms_batch_1: float
    latency_ms_batch_64: float
    latency_ms_batch_1_quartiles: list[float]  # [lower, upper], as JSON holds it
    latency_ms_batch_64_quartiles: list[float]
    throughput_images_per_s: float
    device: str
    dtype: str

    def as_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


def count_parameters(model: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def size_on_disk(folder: str | Path, model: PreTrainedModel | None = None) -> int:
    """Bytes of the weight files in a saved model folder.

    When `folder` is not a local folder (a Hub id), `model` is saved as safetensors to a temporary one and measured.
    """
    if not Path(folder).is_dir():
        if model is None:
            raise FileNotFoundError(f"{folder} is not a local model folder.")
        with tempfile.TemporaryDirectory() as temporary:
            model.save_pretrained(temporary)
            return size_on_disk(temporary)
    return sum(path.stat().st_size for path in Path(folder).iterdir() if is_weight_file(path))


def is_weight_file(path: Path) -> bool:
    """model.safetensors, its shards, or pytorch_model*.bin (not training_args.bin or other files)."""
    return (path.name.startswith("model") and path.suffix == ".safetensors") or (
        path.name.startswith("pytorch_model") and path.suffix == ".bin"
    )


def model_input_shape(model: PreTrainedModel, image_size: tuple[int, int]) -> tuple[int, int, int]:
    return (model.config.num_channels, *image_size)


@torch.no_grad()
def batch_timings(
    model: torch.nn.Module,
    input_shape: tuple[int, int, int],
    batch_size: int,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    warmup: int = 3,
    repeats: int = 20,
    bar: tqdm | None = None,
) -> list[float]:
    """Seconds of each of `repeats` forward passes over a batch of `batch_size` (C, H, W) inputs, in eval mode,
    after `warmup` untimed ones; each pass's images counted on `bar` (a `pipelines.progress.progress_bar`), if
    given."""
    model = model.eval().to(device=device, dtype=dtype)
    pixel_values = torch.randn(batch_size, *input_shape, device=device, dtype=dtype)
    timings = []
    for step in range(warmup + repeats):
        synchronize(device)
        start = time.perf_counter()
        model(pixel_values=pixel_values)
        synchronize(device)
        if step >= warmup:
            timings.append(time.perf_counter() - start)
        if bar is not None:  # after the clock stopped: drawing the bar is not timed
            bar.update(batch_size)
    return timings


def per_image_ms(timings: list[float], batch_size: int) -> tuple[float, list[float]]:
    """The median of batch `timings` (seconds) as milliseconds per image, and the lower and upper quartiles."""
    if len(timings) == 1:  # statistics.quantiles needs two values; one timing is its own spread
        lower = upper = timings[0]
    else:
        lower, _, upper = statistics.quantiles(timings, n=4, method="inclusive")
    scale = 1000 / batch_size
    return statistics.median(timings) * scale, [lower * scale, upper * scale]


def latency_text(median: float, quartiles: list[float], digits: int) -> str:
    """A latency with its spread for a table: ``0.52 (0.50–0.55)``, the median with the repeats' quartiles (an en
    dash, so that the upper quartile cannot be read as a negative number)."""
    lower, upper = quartiles
    return f"{median:.{digits}f} ({lower:.{digits}f}–{upper:.{digits}f})"


def measure_cost(
    model: PreTrainedModel,
    folder: str | Path,
    image_size: tuple[int, int],
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    repeats: int = 20,
    large_batch: int = 64,
    progress: str | None = None,
) -> ModelCost:
    """Parameters, weight bytes, per-image latency at batch 1 and `large_batch`, and throughput at `large_batch`.

    `large_batch` is timed over a quarter of `repeats` (at least 3), each batch size after up to 3 warm-up passes;
    never more passes than `repeats` asks for, so ``repeats=1`` (a quick look) is one warm-up and one timed pass
    per batch size, which for a ViT-B on a CPU is seconds instead of a minute. `progress` names a progress bar over
    the passes' images (none when None).
    """
    shape = model_input_shape(model, image_size)
    warmup = min(3, repeats)
    large_repeats = min(repeats, max(3, repeats // 4))
    images = warmup + repeats + (warmup + large_repeats) * large_batch
    with progress_bar(images, progress or "", main_process=progress is not None) as bar:
        timings = batch_timings(model, shape, 1, device, dtype, warmup=warmup, repeats=repeats, bar=bar)
        large_timings = batch_timings(
            model, shape, large_batch, device, dtype, warmup=warmup, repeats=large_repeats, bar=bar
        )
    single, single_quartiles = per_image_ms(timings, 1)
    large, large_quartiles = per_image_ms(large_timings, large_batch)
    return ModelCost(
        parameters=count_parameters(model),
        size_on_disk_bytes=size_on_disk(folder, model),
        latency_ms_batch_1=single,
        latency_ms_batch_64=large,
        latency_ms_batch_1_quartiles=single_quartiles,
        latency_ms_batch_64_quartiles=large_quartiles,
        throughput_images_per_s=1000 / large,
        device=device_name(device),
        dtype=str(dtype).removeprefix("torch."),
    )
