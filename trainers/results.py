"""The teacher / distilled student / no-teacher student table: cost and test metrics, all measured."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from pipelines.io import atomic_write_json, atomic_write_text
from pipelines.preprocess import processed_size
from trainers.model_cost import ModelCost, latency_text, measure_cost
from trainers.reporting import strip_prefix

METRIC_COLUMNS = ("accuracy", "auc", "f1")


@dataclass
class ResultRow:
    """One model's line in the results table."""

    role: str  # "teacher", "student (distilled)", "student (no teacher)"
    model: str  # folder or Hub id
    architecture: str
    cost: ModelCost
    test_metrics: dict[str, float]

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "cost": self.cost.as_dict()}


def results_markdown(rows: list[ResultRow]) -> str:
    """A markdown table, one row per model, with the device and dtype the latencies were measured in."""
    header = (
        "| model | architecture | parameters | size on disk | latency/image, batch 1 | latency/image, batch 64 "
        "| throughput | test ACC | test AUC | test macro F1 |"
    )
    lines = [header, "|" + "---|" * 10]
    for row in rows:
        cost, metrics = row.cost, row.test_metrics
        lines.append(
            f"| {row.role} | {row.architecture} | {cost.parameters / 1e6:.2f}M | {cost.size_on_disk_bytes / 2**20:.1f} MiB "
            f"| {latency_text(cost.latency_ms_batch_1, cost.latency_ms_batch_1_quartiles, 2)} ms "
            f"| {latency_text(cost.latency_ms_batch_64, cost.latency_ms_batch_64_quartiles, 3)} ms "
            f"| {cost.throughput_images_per_s:,.0f} img/s | "
            + " | ".join(f"{metrics.get(name, float('nan')):.4f}" for name in METRIC_COLUMNS)
            + " |"
        )
    devices = sorted({f"{row.cost.device} ({row.cost.dtype})" for row in rows})
    lines.append("")
    lines.append(
        "Latency: median of timed forward passes after warm-up, with the quartiles of those passes in brackets, "
        f"on {', '.join(devices)}."
    )
    return "\n".join(lines)


def write_results(folder: str | Path, rows: list[ResultRow], command: str) -> str:
    """Write results.md and results.json into `folder`; returns the markdown."""
    markdown = results_markdown(rows)
    folder = Path(folder)
    atomic_write_text(folder / "results.md", f"# Distillation results\n\n{markdown}\n\nMade by: `{command}`\n")
    atomic_write_json(folder / "results.json", {"command": command, "rows": [row.as_dict() for row in rows]})
    return markdown


def measure_row(
    role: str,
    trainer: Any,
    folder: str | Path,
    data: Any,
    repeats: int = 20,
    test_metrics: dict[str, float] | None = None,
) -> ResultRow | None:
    """Test metrics (evaluated here unless given) and the measured cost of `trainer.model` on its device.

    Every process takes part in the evaluation; only the main process times the model and gets a row.
    """
    if test_metrics is None:
        test_metrics = strip_prefix(trainer.predict(data.dataset["test"], metric_key_prefix="test").metrics, "test")
    if not trainer.is_world_process_zero():
        return None
    model = trainer.accelerator.unwrap_model(trainer.model)
    sample = trainer.data_collator([data.dataset["test"][0]])["pixel_values"]
    native = tuple((sample[0] if isinstance(sample, list) else sample[0]).shape[-2:])
    image_size = processed_size(trainer.processing_class, native)
    dtype = torch.bfloat16 if trainer.args.bf16 else torch.float16 if trainer.args.fp16 else torch.float32
    cost = measure_cost(model, folder, image_size, trainer.args.device, dtype, repeats)
    return ResultRow(
        role=role,
        model=str(folder),
        architecture=architecture_name(model),
        cost=cost,
        test_metrics={name: float(test_metrics[name]) for name in METRIC_COLUMNS if name in test_metrics},
    )


def architecture_name(model: torch.nn.Module) -> str:
    """'DeiT (distillation token)', 'ResNet', 'ViT': the class name without its task suffix."""
    name = type(model).__name__
    if name.endswith("ForImageClassificationWithTeacher"):
        return name.removesuffix("ForImageClassificationWithTeacher") + " (distillation token)"
    return name.removesuffix("ForImageClassification")
