"""What a run leaves behind besides the model: metrics.json, training curves, confusion matrix, a summary table."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from pipelines.io import atomic_save_figure, atomic_write_json
from pipelines.labels import predicted_classes
from trainers.report.figures import plot_confusion_matrix

HEADLINE_METRICS = ("accuracy", "auc", "f1", "loss")


def strip_prefix(metrics: dict[str, float], prefix: str) -> dict[str, float]:
    """``{"eval_auc": 0.9}`` -> ``{"auc": 0.9}``."""
    return {key.removeprefix(f"{prefix}_"): value for key, value in metrics.items()}


def write_metrics(path: str | Path, metrics_by_split: dict[str, dict[str, Any]]) -> None:
    atomic_write_json(path, metrics_by_split)


def summary_table(metrics_by_split: dict[str, dict[str, Any]], columns: Iterable[str] = HEADLINE_METRICS) -> str:
    """A markdown table: one row per split, one column per metric."""
    columns = [column for column in columns if any(column in m for m in metrics_by_split.values())]
    lines = ["| split | images | " + " | ".join(columns) + " |", "|---" * (len(columns) + 2) + "|"]
    for split, metrics in metrics_by_split.items():
        cells = [_format(metrics.get(column)) for column in columns]
        lines.append(f"| {split} | {metrics.get('samples', '')} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _format(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else ("" if value is None else str(value))


def plot_training_curves(log_history: list[dict[str, Any]], path: str | Path) -> None:
    """Training and validation loss, and validation metrics, against the optimizer step."""
    figure = Figure(figsize=(11, 4))
    loss_axis, metric_axis = figure.subplots(1, 2)
    train = [(entry["step"], entry["loss"]) for entry in log_history if "loss" in entry]
    evals = [entry for entry in log_history if "eval_loss" in entry]
    if train:
        loss_axis.plot(*zip(*train), label="train loss")
    if evals:
        loss_axis.plot([e["step"] for e in evals], [e["eval_loss"] for e in evals], "o-", label="validation loss")
        for name in ("accuracy", "auc", "f1"):
            points = [(e["step"], e[f"eval_{name}"]) for e in evals if f"eval_{name}" in e]
            if points:
                metric_axis.plot(*zip(*points), "o-", label=f"validation {name}")
    loss_axis.set(xlabel="step", ylabel="loss", title="Loss")
    metric_axis.set(xlabel="step", ylabel="score", title="Validation metrics", ylim=(0, 1.02))
    for axis in (loss_axis, metric_axis):
        axis.grid(alpha=0.3)
        if axis.lines:
            axis.legend()
    atomic_save_figure(figure, path)


def evaluate_and_report(
    trainer: Any, data: Any, output_dir: str | Path, command: str | None = None
) -> dict[str, dict[str, Any]]:
    """Evaluate on validation and test, then write training_curves.png, confusion_matrix.png and, last, metrics.json.

    Metrics are computed on predictions gathered from every process, with padding duplicates dropped;
    `samples` counts them, so a distributed run shows it evaluated each image once. `command`, when given, is
    recorded in metrics.json so that model cards can say how the model was made.
    """
    report = {}
    for split in ("validation", "test"):
        output = trainer.predict(data.dataset[split], metric_key_prefix=split)
        metrics = strip_prefix(output.metrics, split)
        report[split] = {"samples": int(output.predictions.shape[0]), **metrics}
        if split == "test":
            test_output = output
    if trainer.is_world_process_zero():
        output_dir = Path(output_dir)
        # Any curve to draw: a short run may log evaluations but no training loss (logging_steps > its steps).
        if any("loss" in entry or "eval_loss" in entry for entry in trainer.state.log_history):
            plot_training_curves(trainer.state.log_history, output_dir / "training_curves.png")
        plot_confusion_matrix(
            np.asarray(test_output.label_ids),
            predicted_classes(np.asarray(test_output.predictions), data.multi_label),
            data.label_names,
            output_dir / "confusion_matrix.png",
            title="Test confusion matrix",
        )
        # Last: its presence says the run finished (see trainers.checkpoints.COMPLETION_MARKERS).
        write_metrics(output_dir / "metrics.json", {**report, "command": command} if command else report)
    return report


def recorded_command(folder: str | Path) -> str | None:
    """The command recorded in a run folder's metrics.json, if any."""
    path = Path(folder) / "metrics.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text()).get("command")


def dataset_description(data_args: Any) -> tuple[str, str]:
    """(identifier, readable name) of a dataset spec, e.g. ('medmnist/breastmnist', 'BreastMNIST (28 px)')."""
    if data_args.dataset_source == "medmnist":
        flag = data_args.dataset_name
        return f"medmnist/{flag}", f"{flag.removesuffix('mnist').capitalize()}MNIST ({data_args.medmnist_size} px)"
    if data_args.dataset_source == "hub" and not Path(data_args.dataset_name).exists():
        return data_args.dataset_name, data_args.dataset_name
    if data_args.dataset_source == "hub":  # a dataset repo on this machine: its name only, never its path (cards)
        return "local-dataset", f"local dataset {Path(data_args.dataset_name).name}"
    return "imagefolder", f"image folder {Path(data_args.data_dir).name}"
