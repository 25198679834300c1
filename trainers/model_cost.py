"""What a model costs: parameters, bytes on disk, latency and throughput, all measured."""

from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers import PreTrainedModel


@dataclass
class ModelCost:
    """Measured cost of one model on one device.

    Latencies are the median over timed repeats after warm-up, divided by the batch size.
    """

    parameters: int
    size_on_disk_bytes: int
    latency_ms_batch_1: float
    latency_ms_batch_64: float
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
def batch_latency(
    model: torch.nn.Module,
    input_shape: tuple[int, int, int],
    batch_size: int,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    warmup: int = 3,
    repeats: int = 20,
) -> float:
    """Median seconds for one forward pass over a batch of `batch_size` (C, H, W) inputs, in eval mode."""
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
    return statistics.median(timings)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU), so that a timer reads finished work."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def measure_cost(
    model: PreTrainedModel,
    folder: str | Path,
    image_size: tuple[int, int],
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    repeats: int = 20,
    large_batch: int = 64,
) -> ModelCost:
    """Parameters, weight bytes, per-image latency at batch 1 and `large_batch`, and throughput at `large_batch`."""
    shape = model_input_shape(model, image_size)
    single = batch_latency(model, shape, 1, device, dtype, repeats=repeats)
    large = batch_latency(model, shape, large_batch, device, dtype, repeats=max(3, repeats // 4))
    return ModelCost(
        parameters=count_parameters(model),
        size_on_disk_bytes=size_on_disk(folder, model),
        latency_ms_batch_1=single * 1000,
        latency_ms_batch_64=large / large_batch * 1000,
        throughput_images_per_s=large_batch / large,
        device=torch.cuda.get_device_name(device) if torch.device(device).type == "cuda" else "cpu",
        dtype=str(dtype).removeprefix("torch."),
    )
