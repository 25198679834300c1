"""Maps/s of the attention-gradient methods (gradient rollout, LeGrad) beside Grad-CAM, attention rollout and the
forward pass alone, on the same randomly initialised ViT and batch, in one run.

Every path explains the predicted class of every image and returns maps at the input resolution, through the
project's own method classes (`explain.registry.make_method`), in fp32 and (on a GPU with bf16) bf16 weights. The
attention methods run eager attention, which returns the weights; Grad-CAM and the forward pass keep the model's SDPA.
"""

from __future__ import annotations

import copy
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from explain.registry import make_method
from trainers.benchmark.gradcam import GradCAMRow, forward_path
from trainers.benchmark.models import ViTBenchmark, build_model, require_at_least
from trainers.benchmark.timing import interleaved_spans, peak_memory_mib

METHODS = ("gradient_rollout", "legrad", "gradcam", "attention_rollout")


@dataclass
class AttentionBenchmark(ViTBenchmark):
    """``scripts/benchmark.py attention``: maps/s of gradient rollout and LeGrad against Grad-CAM and the forward pass."""

    batch_size: int = field(default=64, metadata={"help": "Images per batch."})
    batches: int = field(default=4, metadata={"help": "Batches per timed repeat."})
    repeats: int = field(default=3, metadata={"help": "Timed repeats; the median is reported."})
    warmup: int = field(default=1, metadata={"help": "Batches run before timing each path."})

    def __post_init__(self) -> None:
        super().__post_init__()
        require_at_least(self, 1, "batch_size", "batches", "repeats")
        require_at_least(self, 0, "warmup")


def method_path(name: str, model: torch.nn.Module, pixel_values: torch.Tensor, dtype: torch.dtype) -> Callable:
    method = make_method(name, model, batch_size=None, dtype=dtype)
    return lambda: method(pixel_values).maps


def benchmark_attention(settings: AttentionBenchmark) -> list[GradCAMRow]:
    """Time every method and the forward pass on the same model and batch, interleaved."""
    device, image_size, batch_size = settings.device, settings.image_size, settings.batch_size
    model = build_model(settings.model, image_size).to(device).eval()
    pixel_values = torch.randn(batch_size, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    inputs = {"fp32": (model, pixel_values.to(device), torch.float32)}
    if settings.with_bf16:
        half = copy.deepcopy(model).to(torch.bfloat16)
        inputs["bf16"] = (half, pixel_values.to(device, torch.bfloat16), torch.bfloat16)
    paths: dict[str, tuple[str, Callable]] = {}
    for precision, (weights, images, dtype) in inputs.items():
        for name in METHODS:
            paths[f"{name}-{precision}"] = (f"{name}, {precision} weights", method_path(name, weights, images, dtype))
        paths[f"forward-{precision}"] = (
            f"forward pass only (inference_mode, SDPA), {precision} weights",
            forward_path(weights, images, dtype),
        )
    spans = interleaved_spans(
        {key: run for key, (_, run) in paths.items()}, device, settings.batches, settings.repeats, settings.warmup
    )
    rows = []
    for key, (path, run) in paths.items():
        median = statistics.median(spans[key])
        rows.append(
            GradCAMRow(
                path, key, batch_size / median, median, peak_memory_mib(run, device), batch_size / min(spans[key])
            )
        )
    return rows


def attention_ratio_lines(rows: list[GradCAMRow]) -> list[str]:
    """Each attention method's rate against Grad-CAM's and the forward pass's, per precision, from the medians."""
    rate = {row.key: row.maps_per_second for row in rows}
    lines = []
    for precision in ("fp32", "bf16"):
        if f"gradcam-{precision}" not in rate:
            continue
        for name in ("gradient_rollout", "legrad"):
            ours = rate[f"{name}-{precision}"]
            lines.append(
                f"{name} {precision}: {ours / rate[f'gradcam-{precision}']:.2f}x Grad-CAM's rate, "
                f"{100 * ours / rate[f'forward-{precision}']:.0f}% of the forward pass's"
            )
    return lines
