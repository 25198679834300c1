"""Deletion and insertion curves against the plain forward passes they are made of, and ROAD's batched imputation
against pytorch-grad-cam's sparse direct solve on the same masks."""

from __future__ import annotations

import statistics
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch

from explain.base import forward_logits
from explain.metrics.faithfulness import CurveSettings, deletion_insertion
from explain.metrics.masking import pixel_ranks
from explain.metrics.road_solver import linear_imputation
from pipelines.runtime import default_device
from trainers.benchmark.models import NUM_LABELS, ViTBenchmark, build_model, require_at_least
from trainers.benchmark.timing import interleaved_spans


@dataclass
class FaithfulnessBenchmark(ViTBenchmark):
    """``scripts/benchmark.py faithfulness``: deletion + insertion curves against 2K forward passes, and ROAD's
    imputation against pytorch-grad-cam's; in bf16 autocast on a GPU that has it (or with ``bf16``)."""

    images: int = field(default=512, metadata={"help": "Images the curves are drawn for."})
    steps: int = field(default=20, metadata={"help": "K, the curves' steps."})
    batch_size: int = field(default=64, metadata={"help": "Images per forward pass."})
    repeats: int = field(default=3, metadata={"help": "Timed repeats; the median is reported."})
    warmup: int = field(default=1, metadata={"help": "Untimed runs before timing."})
    road_images: int = field(default=4, metadata={"help": "Images for the ROAD timing."})
    road_image_size: int = field(
        default=64, metadata={"help": "Their size (pytorch-grad-cam takes seconds per mask at 224 px)."}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        require_at_least(self, 1, "images", "steps", "batch_size", "repeats", "road_images")
        require_at_least(self, 16, "road_image_size")
        require_at_least(self, 0, "warmup")

    @property
    def dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.with_bf16 else torch.float32


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


def benchmark_faithfulness(settings: FaithfulnessBenchmark) -> FaithfulnessTiming:
    """Time `deletion_insertion` (K = ``steps``, all images) against 2 * K plain forward passes over the same images,
    both in batches of ``batch_size`` and in the same dtype; the difference is the cost of ranking pixels, building
    the masked inputs on the device, and the curves' K + 1st step."""
    device, dtype, image_size = settings.device, settings.dtype, settings.image_size
    images, steps, batch_size = settings.images, settings.steps, settings.batch_size
    model = build_model(settings.model, image_size).to(device).eval()
    generator = torch.Generator().manual_seed(0)
    pixel_values = torch.randn(images, 3, image_size, image_size, generator=generator).to(device)
    maps = torch.rand(images, image_size, image_size, generator=generator).to(device)
    targets = torch.randint(0, NUM_LABELS, (images,), generator=generator).to(device)

    def curves() -> None:
        deletion_insertion(model, pixel_values, maps, targets, CurveSettings(steps, batch_size, dtype=dtype))

    def forwards() -> None:
        autocast = torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else nullcontext()
        with torch.inference_mode(), autocast:
            for _ in range(2 * steps):
                for start in range(0, images, batch_size):
                    forward_logits(model, pixel_values[start : start + batch_size])

    spans = interleaved_spans({"curves": curves, "forwards": forwards}, device, 1, settings.repeats, settings.warmup)
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

    device = default_device(use_cpu)
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
