"""The teacher / distilled student / no-teacher student table: cost and test metrics, all measured."""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from explain.base import forward_logits
from explain.metrics.agreement import Agreement, agreement
from explain.registry import default_method, explain_maps, method_title
from pipelines.io import atomic_write_json, atomic_write_text, finite_or_null
from pipelines.labels import is_multi_label_model, predicted_classes
from pipelines.preprocess import processed_size
from trainers.arguments import training_dtype
from trainers.report.cost import ModelCost, latency_text, measure_cost
from trainers.run_outputs import strip_prefix

METRIC_COLUMNS = ("accuracy", "auc", "f1")
TOP_FRACTION = 0.1


@dataclass
class ResultRow:
    """One model's line in the results table."""

    role: str  # "teacher", "student (distilled)", "student (no teacher)"
    model: str  # folder or Hub id
    architecture: str
    cost: ModelCost
    test_metrics: dict[str, float]
    # A student's map agreement with the teacher on the test split (`teacher_agreement`); None for the teacher.
    agreement: dict[str, float | int] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "cost": self.cost.as_dict()}


def results_markdown(rows: list[ResultRow]) -> str:
    """A markdown table, one row per model, with the device and dtype the latencies were measured in."""
    header = (
        "| model | architecture | parameters | size on disk | latency/image, batch 1 | latency/image, batch 64 "
        "| throughput | map rank correlation with the teacher | top-10% IoU with the teacher | compared pairs "
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
        f"on {', '.join(devices)}. Agreement: each student's {agreement_methods(rows)} map against the teacher's, "
        "both at the class the "
        "teacher predicts, on every test image; means over the pairs where neither map is blank (compared pairs of "
        "all images)."
    )
    return "\n".join(lines)


def agreement_methods(rows: list[ResultRow]) -> str:
    """The method(s) the agreement columns used, for the table's note ('Grad-CAM', 'gradient rollout')."""
    methods = sorted({row.agreement.get("method", "gradcam") for row in rows if row.agreement})
    return " / ".join(method_title(method) for method in methods) or "Grad-CAM"


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
    """How closely the student's map follows the teacher's on `dataset`: `explain.metrics.agreement`, batch by
    batch, both maps at the teacher's predicted class by the pair's default method (`explain.registry.default_method`:
    Grad-CAM, or for two vision transformers the method chosen for them), each model reading the images through its
    own preprocessing. Returns `Agreement.numbers` (rank correlation and top-10% IoU means over the compared pairs,
    None where no pair was compared) and the method."""
    device = student_trainer.args.device
    teacher = teacher_trainer.accelerator.unwrap_model(teacher_trainer.model)
    student = student_trainer.accelerator.unwrap_model(student_trainer.model)
    multi_label = is_multi_label_model(student)
    method = default_method(teacher, student)
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=student_trainer.data_collator)
    parts = []
    for batch in loader:
        images = batch["pixel_values"]
        images = images.to(device) if isinstance(images, torch.Tensor) else [image.to(device) for image in images]
        teacher_pixels = teacher_trainer.preprocess(images, train=False)
        student_pixels = student_trainer.preprocess(images, train=False)
        teacher_maps, classes = explain_maps(teacher, method, teacher_pixels, None)
        student_maps, _ = explain_maps(student, method, student_pixels, classes)
        with torch.no_grad():
            predictions = [
                predicted_classes(forward_logits(model, pixels).float().cpu().numpy(), multi_label)
                for model, pixels in ((teacher, teacher_pixels), (student, student_pixels))
            ]
        parts.append(agreement(teacher_maps, student_maps, *(torch.from_numpy(p) for p in predictions), TOP_FRACTION))
    merged = Agreement.concatenate(parts)
    # A mean over no pair is None (null), as in the JSON.
    return {**finite_or_null(merged.numbers(TOP_FRACTION)), "method": method}


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
    a student (`teacher_trainer` given) its map agreement with the teacher on the test split.

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
    dtype = training_dtype(trainer.args)
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


def seed_summary(runs: dict[int, list[dict[str, Any]]]) -> dict[str, Any]:
    """Mean and standard deviation over seeds of each role's test metrics (and a student's map agreement with
    the teacher), and the distilled student's paired difference from the student trained alone.

    Args:
        runs: seed -> that run's results.json rows (`ResultRow.as_dict`), the same roles in every run.

    Returns:
        ``{"seeds": [...], "roles": {role: {number: {"mean", "sd", "values"}, "parameters": int}}, "difference":
        {number: {"mean", "sd", "standard_error", "values"}}}``; a number is kept where every seed measured it; the
        difference (distilled minus no teacher, per seed) is absent when a run has no no-teacher row. The standard
        deviation is the sample one (n - 1), NaN for a single seed.
    """
    seeds = sorted(runs)
    roles = [row["role"] for row in runs[seeds[0]]]
    by_role = {
        role: [row_numbers(next(r for r in runs[seed] if r["role"] == role)) for seed in seeds] for role in roles
    }
    summary: dict[str, Any] = {"seeds": seeds, "roles": {}}
    for role, rows in by_role.items():
        summary["roles"][role] = {
            name: _spread([row[name] for row in rows]) for name in SEED_COLUMNS if _all(rows, name)
        }
        summary["roles"][role]["parameters"] = next(r for r in runs[seeds[0]] if r["role"] == role)["cost"][
            "parameters"
        ]
    if DISTILLED in by_role and ALONE in by_role:
        pairs = list(zip(by_role[DISTILLED], by_role[ALONE]))
        summary["difference"] = {}
        for name in SEED_COLUMNS:
            if all(name in distilled and name in alone for distilled, alone in pairs):
                spread = _spread([distilled[name] - alone[name] for distilled, alone in pairs])
                spread["standard_error"] = spread["sd"] / math.sqrt(len(pairs))
                summary["difference"][name] = spread
    return summary


DISTILLED, ALONE = "student (distilled)", "student (no teacher)"
# The numbers a seeds table aggregates: test metrics, then a student's map agreement with the teacher.
SEED_COLUMNS = (*METRIC_COLUMNS, "rank_correlation", "top_iou")


def row_numbers(row: dict[str, Any]) -> dict[str, float]:
    """A results row's test metrics and (for a student) its agreement means, where they were measured."""
    numbers = {name: row["test_metrics"][name] for name in METRIC_COLUMNS if name in row["test_metrics"]}
    agreement = row.get("agreement") or {}
    for name, key in (
        ("rank_correlation", "rank_correlation_mean"),
        ("top_iou", f"top{round(TOP_FRACTION * 100)}_iou_mean"),
    ):
        if agreement.get(key) is not None and agreement[key] == agreement[key]:
            numbers[name] = agreement[key]
    return numbers


def _all(rows: list[dict[str, float]], name: str) -> bool:
    return all(name in row for row in rows)


def _spread(values: list[float]) -> dict[str, Any]:
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else float("nan")
    return {"mean": mean, "sd": sd, "values": list(values)}


def seed_summary_markdown(summary: dict[str, Any]) -> str:
    """The seeds table: each role's numbers as mean ± sd, then the paired difference with its standard error."""
    seeds = summary["seeds"]
    columns = [name for name in SEED_COLUMNS if any(name in numbers for numbers in summary["roles"].values())]
    lines = ["| model | parameters | " + " | ".join(SEED_TITLES[name] for name in columns) + " |"]
    lines.append("|" + "---|" * (len(columns) + 2))
    for role, numbers in summary["roles"].items():
        cells = [_mean_sd(numbers[name]) if name in numbers else "n/a" for name in columns]
        lines.append(f"| {role} | {numbers['parameters'] / 1e6:.3f}M | " + " | ".join(cells) + " |")
    lines += ["", f"Mean ± standard deviation over seeds {', '.join(map(str, seeds))} (n = {len(seeds)})."]
    if any(name in columns for name in ("rank_correlation", "top_iou")):
        lines[-1] += (
            " Agreement: each student's map against the teacher's at the teacher's class (Grad-CAM, or for two vision "
            "transformers the method chosen for them), on every test image "
            "(means over the pairs where neither map is blank)."
        )
    difference = summary.get("difference")
    if difference:
        lines += ["", f"Distilled minus no-teacher student, paired by seed (n = {len(seeds)}):", ""]
        lines += ["| number | mean difference | sd | standard error | per seed |", "|---|---|---|---|---|"]
        for name, spread in difference.items():
            per_seed = ", ".join(f"{value:+.4f}" for value in spread["values"])
            lines.append(
                f"| {SEED_TITLES[name]} | {spread['mean']:+.4f} | {spread['sd']:.4f} "
                f"| {spread['standard_error']:.4f} | {per_seed} |"
            )
    return "\n".join(lines)


SEED_TITLES = {
    "accuracy": "test ACC",
    "auc": "test AUC",
    "f1": "test macro F1",
    "rank_correlation": "map rank correlation with the teacher",
    "top_iou": "top-10% IoU with the teacher",
}


def _mean_sd(spread: dict[str, Any]) -> str:
    sd = spread["sd"]
    return f"{spread['mean']:.4f}" + ("" if sd != sd else f" ± {sd:.4f}")


def write_seed_summary(folder: str | Path, runs: dict[int, list[dict[str, Any]]], command: str) -> str:
    """Write results.md and results.json of a run repeated over seeds into `folder`; returns the markdown."""
    summary = seed_summary(runs)
    markdown = seed_summary_markdown(summary)
    folder = Path(folder)
    text = f"# Distillation results over seeds\n\n{markdown}\n\nMade by: `{command}`\n"
    atomic_write_text(folder / "results.md", text)
    atomic_write_json(folder / "results.json", {"command": command, **summary, "runs": {str(s): runs[s] for s in runs}})
    return markdown
