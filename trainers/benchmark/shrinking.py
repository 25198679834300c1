"""Size and latency of a model's shrunk copies beside the original, on the CPU: int8 (weights; weights and
activations; dynamic, eager and under `torch.compile`) and pruned, the copies taking turns pass by pass."""

from __future__ import annotations

import copy
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForImageClassification, PreTrainedModel, ViTImageProcessor

from pipelines.errors import ConfigError
from pipelines.models.quantized import is_torchao_int8
from trainers.benchmark.models import VIT_BASE_STANDIN, build_model, check_preset, require_at_least
from trainers.benchmark.timing import interleaved_timings
from trainers.report.cost import count_parameters, per_image_ms, size_on_disk
from trainers.shrink.copies import save_quantized
from trainers.shrink.prune import prune_structured
from trainers.shrink.quantize import MIN_LINEAR_SHARE, linear_weight_share, quantize_int8, quantize_int8_dynamic

# The input size each model is used at: ViT-B/16 as published, the quickstart teacher as configs/quickstart.yaml.
SHRINK_IMAGE_SIZES = {"vit-base": 224, "quickstart-teacher": 64}


@dataclass
class ShrinkBenchmark:
    """``scripts/benchmark.py shrink``: size and CPU latency of fp32, int8 and pruned copies of each model."""

    models: list[str] = field(
        default_factory=lambda: ["vit-base", "quickstart-teacher"],
        metadata={"help": "Model presets (trainers/benchmark/models.py)."},
    )
    ratio: float = field(default=0.5, metadata={"help": "The pruning ratio."})
    repeats_batch_1: int = field(default=10, metadata={"help": "Timed passes at batch 1."})
    repeats_batch_64: int = field(default=3, metadata={"help": "Timed passes at batch 64."})
    warmup: int = field(default=1, metadata={"help": "Passes before timing, per batch size."})

    def __post_init__(self) -> None:
        for model in self.models:
            check_preset(model, "models")
        if not 0 < self.ratio < 1:
            raise ConfigError(f"--ratio is {self.ratio}; it must lie strictly between 0 and 1.")
        require_at_least(self, 1, "repeats_batch_1", "repeats_batch_64")
        require_at_least(self, 0, "warmup")


@dataclass
class ShrinkRow:
    """One copy's size and per-image latencies (ms; median and quartiles over the timed passes)."""

    copy: str
    parameters: int
    size_bytes: int
    latency_batch_1: float
    quartiles_batch_1: list[float]
    latency_batch_64: float
    quartiles_batch_64: list[float]


def shrink_benchmark_model(preset: str, image_size: int) -> PreTrainedModel:
    """The preset with random weights; ``vit-base`` from the published ViT-B/16 config when it is at hand."""
    if preset == "vit-base" and VIT_BASE_STANDIN.is_dir():
        torch.manual_seed(0)
        config = AutoConfig.from_pretrained(VIT_BASE_STANDIN, image_size=image_size)
        return AutoModelForImageClassification.from_config(config).eval()
    return build_model(preset, image_size).eval()


def shrunk_copies(model: PreTrainedModel, image_size: int, ratio: float) -> dict[str, ShrunkCopy]:
    """fp32, int8 weights, int8 weights and activations (calibrated on 16 random images), pruned at `ratio`; for a
    model whose weights are mostly ``nn.Linear`` (ViT), also dynamic int8 (torchao) run eagerly, and fp32 and dynamic
    int8 under ``torch.compile``, which is how the dynamic int8 copy is fast."""
    shape = (model.config.num_channels, image_size, image_size)
    calibration = torch.randn(16, *shape, generator=torch.Generator().manual_seed(0))
    copies = {
        "fp32": model,
        "int8 weights (quanto)": quantize_int8(copy.deepcopy(model))[0],
        "int8 weights + activations (quanto)": quantize_int8(copy.deepcopy(model), calibration)[0],
        f"pruned {ratio:.0%} (torch-pruning)": prune_structured(copy.deepcopy(model), ratio, shape)[0],
    }
    timed = {name: ShrunkCopy(shrunk, shrunk) for name, shrunk in copies.items()}
    if linear_weight_share(model) >= MIN_LINEAR_SHARE:
        dynamic = dynamic_int8_copy(model, image_size)
        timed["int8 dynamic (torchao)"] = ShrunkCopy(dynamic, dynamic)
        timed["fp32, torch.compile"] = ShrunkCopy(model, torch.compile(model))
        timed["int8 dynamic (torchao), torch.compile"] = ShrunkCopy(dynamic, torch.compile(dynamic))
    return timed


@dataclass
class ShrunkCopy:
    """A copy (counted and saved) and what is timed: the copy itself, or ``torch.compile`` of it."""

    model: PreTrainedModel
    timed: torch.nn.Module


def dynamic_int8_copy(model: PreTrainedModel, image_size: int) -> PreTrainedModel:
    """`model` saved and loaded again as ``shrink.py --int8_activations dynamic`` loads it (`quantize_int8_dynamic`)."""
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        ViTImageProcessor(size={"height": image_size, "width": image_size}).save_pretrained(folder)
        return quantize_int8_dynamic(folder)[0]


def saved_size(name: str, model: PreTrainedModel) -> int:
    """Bytes of the weight file as scripts/shrink.py writes it."""
    with tempfile.TemporaryDirectory() as folder:
        if name.startswith("int8") and not is_torchao_int8(model.config):
            from optimum.quanto import quantization_map

            save_quantized(model, Path(folder), quantization_map(model))
        else:
            model.save_pretrained(folder)
        return size_on_disk(folder)


def benchmark_shrinking(settings: ShrinkBenchmark, preset: str) -> list[ShrinkRow]:
    """Size and per-image latency at batch 1 and 64 of each copy of `preset` (at its `SHRINK_IMAGE_SIZES`) from
    `shrunk_copies`, on the CPU, interleaved."""
    image_size = SHRINK_IMAGE_SIZES.get(preset, 224)
    model = shrink_benchmark_model(preset, image_size)
    shape = (model.config.num_channels, image_size, image_size)
    copies = shrunk_copies(model, image_size, settings.ratio)
    timed = {name: shrunk.timed for name, shrunk in copies.items()}
    single = interleaved_timings(timed, shape, 1, settings.repeats_batch_1, settings.warmup)
    large = interleaved_timings(timed, shape, 64, settings.repeats_batch_64, settings.warmup)
    return [
        ShrinkRow(
            name,
            count_parameters(shrunk.model),
            saved_size(name, shrunk.model),
            *per_image_ms(single[name], 1),
            *per_image_ms(large[name], 64),
        )
        for name, shrunk in copies.items()
    ]


def compiled_comparison(rows: list[ShrinkRow]) -> str:
    """Dynamic int8 against fp32 when both run under torch.compile, or why the dynamic copy is not in the table."""
    by_name = {row.copy: row for row in rows}
    dynamic, compiled = by_name.get("int8 dynamic (torchao), torch.compile"), by_name.get("fp32, torch.compile")
    if dynamic is None:
        return "int8 dynamic (torchao) left out: it quantizes nn.Linear only, and this model's weights are not mostly nn.Linear."
    return (
        f"int8 dynamic (torchao), torch.compile against fp32, torch.compile at batch 64: "
        f"{compiled.latency_batch_64 / dynamic.latency_batch_64:.2f}x"
    )
