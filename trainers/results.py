"""The teacher / distilled student / no-teacher student table: cost and test metrics, all measured."""

from __future__ import annotations

import math
import statistics
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


def seed_summary(runs: dict[int, list[dict[str, Any]]]) -> dict[str, Any]:
    """Mean and standard deviation over seeds of each role's test metrics, and the distilled student's paired gain
    over the student trained alone.

    Args:
        runs: seed -> that run's results.json rows (`ResultRow.as_dict`), the same roles in every run.

    Returns:
        ``{"seeds": [...], "roles": {role: {metric: {"mean", "sd", "values"}}}, "difference": {metric: {"mean",
        "sd", "standard_error", "values"}}}``; the difference (distilled minus no teacher, per seed) is absent when
        a run has no no-teacher row. The standard deviation is the sample one (n - 1), NaN for a single seed.
    """
    seeds = sorted(runs)
    roles = [row["role"] for row in runs[seeds[0]]]
    summary: dict[str, Any] = {"seeds": seeds, "roles": {}}
    by_role = {role: [next(r for r in runs[seed] if r["role"] == role) for seed in seeds] for role in roles}
    for role, rows in by_role.items():
        summary["roles"][role] = {
            name: _spread([row["test_metrics"][name] for row in rows])
            for name in METRIC_COLUMNS
            if all(name in row["test_metrics"] for row in rows)
        }
        summary["roles"][role]["parameters"] = rows[0]["cost"]["parameters"]
    if DISTILLED in by_role and ALONE in by_role:
        summary["difference"] = {}
        for name in METRIC_COLUMNS:
            if name not in summary["roles"][DISTILLED] or name not in summary["roles"][ALONE]:
                continue
            values = [
                distilled["test_metrics"][name] - alone["test_metrics"][name]
                for distilled, alone in zip(by_role[DISTILLED], by_role[ALONE])
            ]
            spread = _spread(values)
            spread["standard_error"] = spread["sd"] / math.sqrt(len(values))
            summary["difference"][name] = spread
    return summary


DISTILLED, ALONE = "student (distilled)", "student (no teacher)"


def _spread(values: list[float]) -> dict[str, Any]:
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else float("nan")
    return {"mean": mean, "sd": sd, "values": list(values)}


def seed_summary_markdown(summary: dict[str, Any]) -> str:
    """The seeds table: each role's metrics as mean ± sd, then the paired difference with its standard error."""
    seeds = summary["seeds"]
    header = "| model | parameters | " + " | ".join(f"test {METRIC_TITLES[name]}" for name in METRIC_COLUMNS) + " |"
    lines = [header, "|" + "---|" * (len(METRIC_COLUMNS) + 2)]
    for role, metrics in summary["roles"].items():
        cells = [_mean_sd(metrics[name]) if name in metrics else "n/a" for name in METRIC_COLUMNS]
        lines.append(f"| {role} | {metrics['parameters'] / 1e6:.3f}M | " + " | ".join(cells) + " |")
    lines += ["", f"Mean ± standard deviation over seeds {', '.join(map(str, seeds))} (n = {len(seeds)})."]
    difference = summary.get("difference")
    if difference:
        lines += ["", f"Distilled minus no-teacher student, paired by seed (n = {len(seeds)}):", ""]
        lines += ["| metric | mean difference | sd | standard error | per seed |", "|---|---|---|---|---|"]
        for name, spread in difference.items():
            per_seed = ", ".join(f"{value:+.4f}" for value in spread["values"])
            lines.append(
                f"| test {METRIC_TITLES[name]} | {spread['mean']:+.4f} | {spread['sd']:.4f} "
                f"| {spread['standard_error']:.4f} | {per_seed} |"
            )
    return "\n".join(lines)


METRIC_TITLES = {"accuracy": "ACC", "auc": "AUC", "f1": "macro F1"}


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
