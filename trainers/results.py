"""The teacher / distilled student / no-teacher student table: cost and test metrics, all measured."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from explain.base import forward_logits
from explain.evaluation import Agreement, agreement, explain_maps
from pipelines.io import atomic_write_json, atomic_write_text, finite_or_null
from pipelines.preprocess import processed_size
from trainers.model_cost import ModelCost, latency_text, measure_cost
from trainers.reporting import predicted_classes, strip_prefix

METRIC_COLUMNS = ("accuracy", "auc", "f1")
AGREEMENT_METHOD = "gradcam"
TOP_FRACTION = 0.1


@dataclass
class ResultRow:
    """One model's line in the results table."""

    role: str  # "teacher", "student (distilled)", "student (no teacher)"
    model: str  # folder or Hub id
    architecture: str
    cost: ModelCost
    test_metrics: dict[str, float]
    # A student's Grad-CAM agreement with the teacher on the test split (`teacher_agreement`); None for the teacher.
    agreement: dict[str, float | int] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "cost": self.cost.as_dict()}


def results_markdown(rows: list[ResultRow]) -> str:
    """A markdown table, one row per model, with the device and dtype the latencies were measured in."""
    header = (
        "| model | architecture | parameters | size on disk | latency/image, batch 1 | latency/image, batch 64 "
        "| throughput | Grad-CAM rank correlation with the teacher | top-10% IoU with the teacher | compared pairs "
        "| test ACC | test AUC | test macro F1 |"
    )
    lines = [header, "|" + "---|" * 13]
    for row in rows:
        cost, metrics = row.cost, row.test_metrics
        lines.append(
            f"| {row.role} | {row.architecture} | {cost.parameters / 1e6:.2f}M | {cost.size_on_disk_bytes / 2**20:.1f} MiB "
            f"| {latency_text(cost.latency_ms_batch_1, cost.latency_ms_batch_1_quartiles, 2)} ms "
            f"| {latency_text(cost.latency_ms_batch_64, cost.latency_ms_batch_64_quartiles, 3)} ms "
            f"| {cost.throughput_images_per_s:,.0f} img/s | {agreement_cells(row.agreement)} | "
            + " | ".join(f"{metrics.get(name, float('nan')):.4f}" for name in METRIC_COLUMNS)
            + " |"
        )
    devices = sorted({f"{row.cost.device} ({row.cost.dtype})" for row in rows})
    lines.append("")
    lines.append(
        "Latency: median of timed forward passes after warm-up, with the quartiles of those passes in brackets, "
        f"on {', '.join(devices)}. Agreement: each student's Grad-CAM against the teacher's, both at the class the "
        "teacher predicts, on every test image; means over the pairs where neither map is blank (compared pairs of "
        "all images)."
    )
    return "\n".join(lines)


def agreement_cells(numbers: dict[str, float | int] | None) -> str:
    """'0.4120 | 0.1830 | 150/156', 'n/a' where no pair was compared, and '–' for the teacher's own row."""
    if numbers is None:
        return "– | – | –"
    iou = numbers[f"top{round(TOP_FRACTION * 100)}_iou_mean"]
    means = [
        "n/a" if value is None or np.isnan(value) else f"{value:.4f}"
        for value in (numbers["rank_correlation_mean"], iou)
    ]
    return f"{means[0]} | {means[1]} | {numbers['pairs']}/{numbers['images']}"


def teacher_agreement(teacher_trainer: Any, student_trainer: Any, dataset: Any, batch_size: int = 64) -> dict:
    """How closely the student's Grad-CAM follows the teacher's on `dataset`: `explain.evaluation.agreement`,
    batch by batch, both maps at the teacher's predicted class, each model reading the images through its own
    preprocessing. Returns `Agreement.numbers` (rank correlation and top-10% IoU means over the compared pairs,
    None where no pair was compared)."""
    device = student_trainer.args.device
    teacher = teacher_trainer.accelerator.unwrap_model(teacher_trainer.model)
    student = student_trainer.accelerator.unwrap_model(student_trainer.model)
    multi_label = student.config.problem_type == "multi_label_classification"
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=student_trainer.data_collator)
    parts, counts = [], []
    for batch in loader:
        images = batch["pixel_values"]
        images = images.to(device) if isinstance(images, torch.Tensor) else [image.to(device) for image in images]
        teacher_pixels = teacher_trainer.preprocess(images, train=False)
        student_pixels = student_trainer.preprocess(images, train=False)
        teacher_maps, classes = explain_maps(teacher, AGREEMENT_METHOD, teacher_pixels, None)
        student_maps, _ = explain_maps(student, AGREEMENT_METHOD, student_pixels, classes)
        with torch.no_grad():
            predictions = [
                predicted_classes(forward_logits(model, pixels).float().cpu().numpy(), multi_label)
                for model, pixels in ((teacher, teacher_pixels), (student, student_pixels))
            ]
        parts.append(agreement(teacher_maps, student_maps, *(torch.from_numpy(p) for p in predictions), TOP_FRACTION))
        counts.append(len(classes))
    merged = Agreement(
        rank_correlation=np.concatenate([part.rank_correlation for part in parts]),
        top_iou=np.concatenate([part.top_iou for part in parts]),
        same_prediction=float(np.average([part.same_prediction for part in parts], weights=counts)),
        reference_blank=np.concatenate([part.reference_blank for part in parts]),
        other_blank=np.concatenate([part.other_blank for part in parts]),
    )
    return finite_or_null(merged.numbers(TOP_FRACTION))  # a mean over no pair is None (null), as in the JSON


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
    teacher_trainer: Any = None,
) -> ResultRow | None:
    """Test metrics (evaluated here unless given) and the measured cost of `trainer.model` on its device, and for
    a student (`teacher_trainer` given) its Grad-CAM agreement with the teacher on the test split.

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
    with_teacher = (
        None if teacher_trainer is None else teacher_agreement(teacher_trainer, trainer, data.dataset["test"])
    )
    return ResultRow(
        role=role,
        model=str(folder),
        architecture=architecture_name(model),
        cost=cost,
        test_metrics={name: float(test_metrics[name]) for name in METRIC_COLUMNS if name in test_metrics},
        agreement=with_teacher,
    )


def architecture_name(model: torch.nn.Module) -> str:
    """'DeiT (distillation token)', 'ResNet', 'ViT': the class name without its task suffix."""
    name = type(model).__name__
    if name.endswith("ForImageClassificationWithTeacher"):
        return name.removesuffix("ForImageClassificationWithTeacher") + " (distillation token)"
    return name.removesuffix("ForImageClassification")
