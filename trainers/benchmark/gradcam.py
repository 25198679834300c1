"""Grad-CAM throughput of this project against Captum and pytorch-grad-cam, on the same model and layer, in one run.

The model is a randomly initialised ViT (ViT-B/16 by default) and the layer the last block's first layernorm,
the target DESIGN.md fixes. Each path explains the predicted class of every image in a batch and returns maps at
the input resolution:

- this project: `explain.GradCAM`, one forward pass plus `torch.autograd.grad` to the hooked activation, fp32 and
  (on a GPU) bf16 weights; on a GPU repeated batches replay as a CUDA graph (`explain.graphs`), and the same
  method without graphs (``project-bf16-eager``) is timed beside it;
- Captum: `LayerGradCam` on a token-reshaping tap at the same place, used as its documentation shows (parameters
  left trainable), then `LayerAttribution.interpolate`; the targets come from a forward pass that is not timed;
- pytorch-grad-cam: `GradCAM` with a `reshape_transform` from tokens to the patch grid, as its ViT tutorial shows;
- the forward pass alone, under `torch.inference_mode`, the ceiling for any method that needs one.

Timing: warm-up batches first, `torch.cuda.synchronize()` around every timed span, the median over repeats; as
`timeit` does, Python's garbage collector runs before each span and is off during it (pytorch-grad-cam's ROAD builds
its sparse systems from Python lists: collector passes inside its spans had spread them over 0.82-1.25 s).
"""

from __future__ import annotations

import copy
import statistics
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import PreTrainedModel

from explain.base import LogitsModule, forward_logits
from explain.cam import GradCAM
from explain.explanation import scale_to_unit
from explain.hooks import grid_tap
from explain.layers import resolve_target_layer, to_grid
from trainers.benchmark.models import ViTBenchmark, build_model, require_at_least
from trainers.benchmark.timing import interleaved_spans, peak_memory_mib


@dataclass
class GradCAMBenchmark(ViTBenchmark):
    """``scripts/benchmark.py explain``: Grad-CAM maps/s of this project, Captum and pytorch-grad-cam."""

    batch_size: int = field(default=64, metadata={"help": "Images per batch."})
    batches: int = field(default=10, metadata={"help": "Batches per timed repeat."})
    repeats: int = field(default=3, metadata={"help": "Timed repeats; the median is reported."})
    warmup: int = field(default=2, metadata={"help": "Batches run before timing each path."})

    def __post_init__(self) -> None:
        super().__post_init__()
        require_at_least(self, 1, "batch_size", "batches", "repeats")
        require_at_least(self, 0, "warmup")


@dataclass
class GradCAMRow:
    """One path's measurement.

    Attributes:
        path: What was timed.
        key: Short name used for ratios (``project-bf16``, ``captum``, ``pytorch-grad-cam``, ``forward-bf16``...).
        maps_per_second: Images explained (or, for the forward pass, classified) per second, from the median.
        seconds_per_batch: The median over repeats.
        best_maps_per_second: The rate of the fastest repeat: on a shared CPU, where other work only ever adds
            time, the steadier figure.
        peak_memory_mib: Peak GPU memory allocated during one batch; None on the CPU.
    """

    path: str
    key: str
    maps_per_second: float
    seconds_per_batch: float
    peak_memory_mib: float | None
    best_maps_per_second: float = 0.0


def project_path(
    model: PreTrainedModel, pixel_values: torch.Tensor, dtype: torch.dtype, cuda_graphs: bool = True
) -> Callable[[], torch.Tensor]:
    method = GradCAM(model, batch_size=None, dtype=dtype, cuda_graphs=cuda_graphs)
    return lambda: method(pixel_values).maps


def captum_path(model: PreTrainedModel, pixel_values: torch.Tensor) -> Callable[[], torch.Tensor]:
    """Captum's `LayerGradCam` on the token-reshaping tap; the predicted classes are found once, untimed (Captum
    needs them given, and the batch does not change)."""
    from captum.attr import LayerAttribution, LayerGradCam

    layer = resolve_target_layer(model).module
    tap = torch.nn.Identity()
    gradcam = LayerGradCam(lambda inputs: model(pixel_values=inputs).logits, tap)
    size = tuple(pixel_values.shape[-2:])
    with torch.no_grad():
        targets = model(pixel_values=pixel_values).logits.argmax(1)

    def run() -> torch.Tensor:
        with grid_tap(model, layer, tap, size):
            layer_maps = gradcam.attribute(pixel_values, target=targets, relu_attributions=True)
        maps = LayerAttribution.interpolate(layer_maps, size, interpolate_mode="bilinear")
        return scale_to_unit(maps[:, 0].detach())

    return run


def pytorch_grad_cam_path(model: PreTrainedModel, pixel_values: torch.Tensor) -> tuple[Callable[[], Any], Any]:
    """pytorch-grad-cam's `GradCAM` with a tokens-to-grid `reshape_transform`, and the object holding its hooks."""
    from pytorch_grad_cam import GradCAM as LibraryGradCAM

    size = tuple(pixel_values.shape[-2:])
    cam = LibraryGradCAM(
        model=LogitsModule(model),
        target_layers=[resolve_target_layer(model).module],
        reshape_transform=lambda tokens: to_grid(model, tokens, *size),
    )
    return lambda: cam(input_tensor=pixel_values, targets=None), cam  # None: the predicted class, in the same pass


def forward_path(model: PreTrainedModel, pixel_values: torch.Tensor, dtype: torch.dtype) -> Callable[[], torch.Tensor]:
    lower = dtype != next(model.parameters()).dtype

    def run() -> torch.Tensor:
        autocast = torch.autocast(pixel_values.device.type, dtype=dtype) if lower else nullcontext()
        with torch.inference_mode(), autocast:
            return forward_logits(model, pixel_values)

    return run


def benchmark_gradcam(settings: GradCAMBenchmark) -> tuple[list[GradCAMRow], dict[str, float]]:
    """Time every path on the same model and batch.

    Returns:
        The rows, and how closely the project's fp32 maps match Captum's and pytorch-grad-cam's.
    """
    device, bf16, image_size = settings.device, settings.with_bf16, settings.image_size
    batch_size, batches, repeats, warmup = settings.batch_size, settings.batches, settings.repeats, settings.warmup
    model = build_model(settings.model, image_size).to(device).eval()
    generator = torch.Generator().manual_seed(0)
    pixel_values = torch.randn(batch_size, 3, image_size, image_size, generator=generator).to(device)
    names = {torch.float32: "fp32", torch.bfloat16: "bf16"}
    dtypes = [torch.bfloat16, torch.float32] if bf16 else [torch.float32]
    # bf16 runs on a bf16 copy of the model, the compute dtype the project explains in (explain.explainer.Explainer
    # casts the model); Captum and pytorch-grad-cam run fp32 models, as their documentation does.
    inputs = {torch.float32: (model, pixel_values)}
    if bf16:
        inputs[torch.bfloat16] = (copy.deepcopy(model).to(torch.bfloat16), pixel_values.to(torch.bfloat16))
    paths: dict[str, tuple[str, Callable[[], Any]]] = {}
    for dtype in dtypes:
        paths[f"project-{names[dtype]}"] = (
            f"this project: forward + autograd.grad to the layer only, {names[dtype]} weights",
            project_path(*inputs[dtype], dtype),
        )
    if device.type == "cuda":
        lowest = dtypes[0]
        paths[f"project-{names[lowest]}-eager"] = (
            f"this project without CUDA graphs, {names[lowest]} weights",
            project_path(*inputs[lowest], lowest, cuda_graphs=False),
        )
    paths["captum"] = ("Captum LayerGradCam on a token-reshaping tap, fp32", captum_path(model, pixel_values))
    library, cam = pytorch_grad_cam_path(model, pixel_values)
    paths["pytorch-grad-cam"] = ("pytorch-grad-cam 1.5 GradCAM with reshape_transform, fp32", library)
    for dtype in dtypes:
        paths[f"forward-{names[dtype]}"] = (
            f"forward pass only (inference_mode), {names[dtype]} weights",
            forward_path(*inputs[dtype], dtype),
        )
    try:
        spans = interleaved_spans({key: run for key, (_, run) in paths.items()}, device, batches, repeats, warmup)
        rows = []
        for key, (path, run) in paths.items():
            median = statistics.median(spans[key])
            memory = peak_memory_mib(run, device)
            rows.append(GradCAMRow(path, key, batch_size / median, median, memory, batch_size / min(spans[key])))
            if device.type == "cuda":
                torch.cuda.empty_cache()
        maps = {
            key: torch.as_tensor(paths[key][1]()).float().cpu()
            for key in ("project-fp32", "project-bf16", "captum", "pytorch-grad-cam")
            if key in paths
        }
    finally:
        cam.activations_and_grads.release()
    return rows, agreement(maps)


def agreement(maps: dict[str, torch.Tensor]) -> dict[str, float]:
    """How closely the project's fp32 maps match the other paths' maps of the same batch."""

    def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
        return float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1])

    ours = maps["project-fp32"]
    figures = {
        "max |project fp32 - Captum|": float((ours - maps["captum"]).abs().max()),
        "correlation(project fp32, pytorch-grad-cam)": correlation(ours, maps["pytorch-grad-cam"]),
    }
    if "project-bf16" in maps:
        figures["correlation(project bf16, project fp32)"] = correlation(maps["project-bf16"], ours)
    return figures


def ratio_lines(rows: list[GradCAMRow], best: bool = False) -> list[str]:
    """The ratios the speed goals are stated in, for the fastest project path available.

    Args:
        rows: The measurements.
        best: From the fastest repeats rather than the medians.
    """
    rate = {row.key: row.best_maps_per_second if best else row.maps_per_second for row in rows}
    ours = "project-bf16" if "project-bf16" in rate else "project-fp32"
    forward = "forward-bf16" if ours == "project-bf16" else "forward-fp32"
    lines = [
        f"{ours} / Captum fp32: {rate[ours] / rate['captum']:.2f}x (GPU goal >= 8x)",
        f"{ours} / pytorch-grad-cam fp32: {rate[ours] / rate['pytorch-grad-cam']:.2f}x (GPU goal >= 20x)",
        f"{ours} / {forward}: {100 * rate[ours] / rate[forward]:.0f}% of the forward-only rate (GPU goal >= 85% in bf16)",
    ]
    if f"{ours}-eager" in rate:
        lines.append(f"{ours}-eager / {forward}: {100 * rate[f'{ours}-eager'] / rate[forward]:.0f}% (no CUDA graphs)")
    if ours != "project-fp32":
        lines.append(f"project-fp32 / Captum fp32: {rate['project-fp32'] / rate['captum']:.2f}x")
        lines.append(f"project-fp32 / forward-fp32: {100 * rate['project-fp32'] / rate['forward-fp32']:.0f}%")
    return lines
