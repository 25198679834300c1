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
import gc
import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from transformers import AutoModelForImageClassification, PreTrainedModel, ViTConfig

from explain.base import LogitsModule, forward_logits
from explain.cam import GradCAM
from explain.explanation import scale_to_unit
from explain.hooks import grid_tap
from explain.layers import resolve_target_layer, to_grid

GRADCAM_PRESETS: dict[str, dict[str, Any]] = {
    "vit-base": {},  # ViTConfig's defaults are ViT-B/16 at 224 px
    "deit-tiny": {"hidden_size": 192, "num_attention_heads": 3, "intermediate_size": 768},
}
NUM_LABELS = 9  # PathMNIST's classes


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


def build_model(preset: str, image_size: int, device: torch.device, seed: int = 0) -> PreTrainedModel:
    """A randomly initialised ViT classifier in eval mode (eager attention off: SDPA, the transformers default)."""
    torch.manual_seed(seed)
    config = ViTConfig(image_size=image_size, num_labels=NUM_LABELS, **GRADCAM_PRESETS[preset])
    return AutoModelForImageClassification.from_config(config).to(device).eval()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_spans(
    runs: dict[str, Callable[[], Any]], device: torch.device, batches: int, repeats: int, warmup: int
) -> dict[str, list[float]]:
    """Seconds per batch of each run, once per repeat. Every run is warmed up first; then each repeat times every
    run in turn, so a slow spell on a shared machine (or a GPU's clock changes) falls on all paths alike."""
    for run in runs.values():
        for _ in range(warmup):
            run()
    synchronize(device)
    spans: dict[str, list[float]] = {key: [] for key in runs}
    for _ in range(repeats):
        for key, run in runs.items():
            synchronize(device)
            gc.collect()
            gc.disable()
            try:
                start = time.perf_counter()
                for _ in range(batches):
                    run()
                synchronize(device)
                spans[key].append((time.perf_counter() - start) / batches)
            finally:
                gc.enable()
    return spans


def peak_memory_mib(run: Callable[[], Any], device: torch.device) -> float | None:
    """Peak GPU memory allocated during one call (weights and input included), in MiB; None on the CPU, where
    PyTorch keeps no such count and the process's resident set barely moves (freed blocks are reused)."""
    if device.type != "cuda":
        return None
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    run()
    synchronize(device)
    return torch.cuda.max_memory_allocated(device) / 2**20


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


def benchmark_gradcam(
    preset: str = "vit-base",
    image_size: int = 224,
    batch_size: int = 64,
    batches: int = 10,
    repeats: int = 3,
    warmup: int = 2,
    use_cpu: bool = False,
    bf16: bool | None = None,
) -> tuple[list[GradCAMRow], dict[str, float]]:
    """Time every path on the same model and batch.

    Args:
        preset: ``"vit-base"`` (ViT-B/16) or ``"deit-tiny"``.
        image_size: Input size in pixels.
        batch_size: Images per batch.
        batches: Batches per timed repeat.
        repeats: Timed repeats; the median is reported.
        warmup: Untimed batches before timing each path.
        use_cpu: Measure on the CPU even when a GPU is present.
        bf16: Add the bf16 paths; None: on a GPU that supports bf16.

    Returns:
        The rows, and how closely the project's fp32 maps match Captum's and pytorch-grad-cam's.
    """
    device = torch.device("cuda" if torch.cuda.is_available() and not use_cpu else "cpu")
    if bf16 is None:
        bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    model = build_model(preset, image_size, device)
    generator = torch.Generator().manual_seed(0)
    pixel_values = torch.randn(batch_size, 3, image_size, image_size, generator=generator).to(device)
    names = {torch.float32: "fp32", torch.bfloat16: "bf16"}
    dtypes = [torch.bfloat16, torch.float32] if bf16 else [torch.float32]
    # bf16 runs on a bf16 copy of the model, the compute dtype the project explains in (explain.workflow.Explainer
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
    """The ratios the issue's goals are stated in, for the fastest project path available.

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


@dataclass
class FaithfulnessTiming:
    """Deletion + insertion curves against the forward passes they cannot avoid, on the same images."""

    curves_seconds: float  # median
    forwards_seconds: float  # median time of 2 * K forward passes over the images
    images: int
    steps: int

    @property
    def ratio(self) -> float:
        return self.curves_seconds / self.forwards_seconds


def benchmark_faithfulness(
    preset: str = "vit-base",
    image_size: int = 224,
    images: int = 512,
    steps: int = 20,
    batch_size: int = 64,
    repeats: int = 3,
    warmup: int = 1,
    use_cpu: bool = False,
    bf16: bool | None = None,
) -> FaithfulnessTiming:
    """Time `deletion_insertion` (K = `steps`, all images) against 2 * K plain forward passes over the same images,
    both in batches of `batch_size` and in the same dtype; the difference is the cost of ranking pixels, building
    the masked inputs on the device, and the curves' K + 1st step."""
    from explain.metrics.faithfulness import deletion_insertion

    device = torch.device("cuda" if torch.cuda.is_available() and not use_cpu else "cpu")
    if bf16 is None:
        bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    dtype = torch.bfloat16 if bf16 else torch.float32
    model = build_model(preset, image_size, device)
    generator = torch.Generator().manual_seed(0)
    pixel_values = torch.randn(images, 3, image_size, image_size, generator=generator).to(device)
    maps = torch.rand(images, image_size, image_size, generator=generator).to(device)
    targets = torch.randint(0, NUM_LABELS, (images,), generator=generator).to(device)

    def curves() -> None:
        deletion_insertion(model, pixel_values, maps, targets, steps, batch_size, dtype=dtype)

    def forwards() -> None:
        autocast = torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else nullcontext()
        with torch.inference_mode(), autocast:
            for _ in range(2 * steps):
                for start in range(0, images, batch_size):
                    forward_logits(model, pixel_values[start : start + batch_size])

    spans = interleaved_spans({"curves": curves, "forwards": forwards}, device, 1, repeats, warmup)
    return FaithfulnessTiming(statistics.median(spans["curves"]), statistics.median(spans["forwards"]), images, steps)


@dataclass
class RoadTiming:
    """ROAD's imputation here (every mask of a run batched on the device) against pytorch-grad-cam's
    `NoisyLinearImputer` (one sparse direct solve per image and mask, on the CPU), on the same masks."""

    ours_seconds: float  # median over repeats, all masks
    reference_seconds: float
    max_difference: float  # largest |ours - reference| over the imputed pixels, both without noise
    masks: int

    @property
    def ratio(self) -> float:
        return self.reference_seconds / self.ours_seconds


def road_masks(maps: torch.Tensor, fractions: tuple[float, ...]) -> torch.Tensor:
    """(N, H, W) maps -> (F * 2 * N, H, W) bool: for each fraction, the most relevant then the least relevant
    share of each image's pixels, True where removed."""
    from explain.metrics.masking import pixel_ranks

    count, height, width = maps.shape
    ranks = pixel_ranks(maps).view(count, height, width)
    masks = []
    for fraction in fractions:
        removed = round(fraction * height * width)
        masks += [ranks < removed, height * width - 1 - ranks < removed]
    return torch.cat(masks)


def benchmark_road(
    image_size: int = 64,
    images: int = 8,
    fractions: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
    batch_size: int | None = None,
    repeats: int = 3,
    use_cpu: bool = False,
    warmup: int = 1,
) -> RoadTiming:
    """Impute every (image, fraction, MoRF/LeRF) mask with both implementations, noise off in both (the noise
    is one `randn` either way, and leaving it out lets the imputed pixels be compared). The maps are smooth, as
    upsampled CAMs are (random 4 x 4 maps, bilinear): large removed regions, the slow case for an iterative
    solver. pytorch-grad-cam's fractions (`ROADCombined`: 10%, ..., 90%) by default. `batch_size`: masks per
    `linear_imputation` call, None for all of them in one (the setup and each operation's overhead are paid once,
    not again for a small last batch). Both run `warmup` times untimed first, as in the report, where ROAD imputes
    batch after batch (a first call also pays for fresh memory: about 30 ms of page faults here)."""
    from pytorch_grad_cam.metrics.road import NoisyLinearImputer

    from explain.metrics.road_solver import linear_imputation

    device = torch.device("cuda" if torch.cuda.is_available() and not use_cpu else "cpu")
    generator = torch.Generator().manual_seed(0)
    pixel_values = torch.randn(images, 3, image_size, image_size, generator=generator)
    coarse = torch.rand(images, 1, 4, 4, generator=generator)
    maps = torch.nn.functional.interpolate(coarse, size=(image_size, image_size), mode="bilinear")[:, 0]
    removed = road_masks(maps, fractions)  # (M, H, W)
    sources = pixel_values.repeat(len(removed) // images, 1, 1, 1)  # mask m belongs to image m % N
    on_device, removed_on_device = sources.to(device), removed.to(device)
    batch_size = batch_size or len(removed)
    reference_imputer = NoisyLinearImputer(noise=0.0)
    results: dict[str, torch.Tensor] = {}

    def ours() -> None:
        results["ours"] = torch.cat(
            [
                linear_imputation(on_device[first : first + batch_size], removed_on_device[first : first + batch_size])
                for first in range(0, len(removed), batch_size)
            ]
        ).cpu()

    def reference() -> None:
        # Its convention: mask 1 where a pixel is kept, 0 where it is imputed.
        results["reference"] = torch.stack(
            [reference_imputer(image, (~mask).float()) for image, mask in zip(sources, removed)]
        )

    spans = interleaved_spans({"ours": ours, "reference": reference}, device, 1, repeats, warmup)
    imputed = removed[:, None].expand_as(sources)
    difference = (results["ours"] - results["reference"]).abs()[imputed].max().item()
    return RoadTiming(statistics.median(spans["ours"]), statistics.median(spans["reference"]), difference, len(removed))
