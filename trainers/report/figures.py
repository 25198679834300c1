"""Figures of the evaluation report. Each takes plain numbers and writes one PNG (atomically)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from explain.metrics.statistics import method_verdict
from pipelines.io import atomic_save_figure
from pipelines.labels import predicted_classes
from trainers.report.classification import Calibration, calibration_of, roc_curves


def _panels(count: int, width: float = 4.0, height: float = 3.6) -> tuple[Figure, np.ndarray]:
    figure = Figure(figsize=(width * count, height))
    return figure, np.atleast_1d(figure.subplots(1, count))


def plot_roc(curves: dict[str, dict[str, tuple]], aucs: dict[str, float], path: str | Path) -> None:
    """One panel per model: its ROC curves (positive class, one vs rest, or per label) and its AUC."""
    figure, axes = _panels(len(curves))
    for axis, (model, model_curves) in zip(axes, curves.items()):
        for name, (false_positive, true_positive) in model_curves.items():
            # A binary task has one curve, for its positive class: name it, or the reader cannot tell which.
            axis.plot(false_positive, true_positive, label=name if len(model_curves) > 1 else f"positive class: {name}")
        axis.plot([0, 1], [0, 1], "--", color="grey", linewidth=0.8)
        axis.set(title=f"{model} (AUC {aucs[model]:.3f})", xlabel="false positive rate", ylabel="true positive rate")
        if 1 <= len(model_curves) <= 14:
            axis.legend(fontsize=6 if len(model_curves) > 1 else 8, loc="lower right")
    atomic_save_figure(figure, path)


def plot_reliability(calibrations: dict[str, Calibration], path: str | Path) -> None:
    """Reliability diagrams: accuracy against confidence per bin, with the ECE in each title."""
    figure, axes = _panels(len(calibrations))
    for axis, (model, calibration) in zip(axes, calibrations.items()):
        centres = (calibration.bin_edges[:-1] + calibration.bin_edges[1:]) / 2
        width = calibration.bin_edges[1] - calibration.bin_edges[0]
        filled = calibration.bin_count > 0
        axis.bar(centres[filled], calibration.bin_accuracy[filled], width=width * 0.9, alpha=0.7, label="accuracy")
        axis.plot(calibration.bin_confidence[filled], calibration.bin_accuracy[filled], "o", color="black", ms=3)
        axis.plot([0, 1], [0, 1], "--", color="grey", linewidth=0.8, label="perfect calibration")
        axis.set(
            title=f"{model} (ECE {calibration.ece:.3f})",
            xlabel="confidence",
            ylabel="accuracy",
            xlim=(0, 1),
            ylim=(0, 1),
        )
        axis.legend(fontsize=7, loc="upper left")
    atomic_save_figure(figure, path)


def plot_probability_bars(
    images: np.ndarray,
    probabilities: dict[str, np.ndarray],
    label_names: list[str],
    true_labels: list[str],
    path: str | Path,
) -> None:
    """One row per sample image: the image, then each model's predicted probabilities side by side."""
    rows, classes = len(images), len(label_names)
    figure = Figure(
        figsize=(3 + 0.6 * classes * max(1, len(probabilities)) ** 0.5 + 2, 2.4 * rows), layout="constrained"
    )
    axes = np.atleast_2d(figure.subplots(rows, 2, gridspec_kw={"width_ratios": [1, 3]}))
    width = 0.8 / len(probabilities)
    for row, (image, truth) in enumerate(zip(images, true_labels)):
        # vmin/vmax: a dark image stays dark (imshow would stretch each grey image's own range to full contrast).
        grey = image.shape[-1] == 1 or image.ndim == 2
        axes[row, 0].imshow(image.squeeze(), cmap="gray" if grey else None, vmin=0, vmax=255)
        axes[row, 0].set_axis_off()
        axes[row, 0].set_title(f"true: {truth}", fontsize=8)
        for offset, (model, values) in enumerate(probabilities.items()):
            axes[row, 1].bar(np.arange(classes) + offset * width, values[row], width=width, label=model)
        axes[row, 1].set_xticks(np.arange(classes) + 0.4 - width / 2, label_names, fontsize=7, rotation=20)
        axes[row, 1].set(ylim=(0, 1), ylabel="probability")
    axes[0, 1].legend(fontsize=7)
    atomic_save_figure(figure, path)


def plot_accuracy_latency(points: dict[str, dict[str, float]], path: str | Path) -> None:
    """Test accuracy against latency per image (batch 1), marker area proportional to parameters; a horizontal bar
    spans the latency's quartiles when a point has ``latency_quartiles``."""
    figure = Figure(figsize=(5.5, 4))
    axis = figure.subplots()
    largest = max(point["parameters"] for point in points.values())
    for index, (model, point) in enumerate(points.items()):
        colour = f"C{index}"
        axis.scatter(
            point["latency_ms"], point["accuracy"], s=40 + 400 * point["parameters"] / largest, alpha=0.6, color=colour
        )
        if "latency_quartiles" in point:
            lower, upper = point["latency_quartiles"]
            axis.hlines(point["accuracy"], lower, upper, color=colour, linewidth=1.5)
        axis.annotate(
            f"{model}\n{point['parameters'] / 1e6:.2f}M",
            (point["latency_ms"], point["accuracy"]),
            xytext=(8, 6),  # beside the marker, not on it
            textcoords="offset points",
            fontsize=8,
        )
    axis.margins(x=0.15, y=0.15)  # room for the labels and the quartile bars inside the frame
    axis.set(
        xlabel="latency per image at batch 1 (ms): median, bar = quartiles",
        ylabel="test accuracy",
        title="Accuracy vs latency",
    )
    axis.grid(alpha=0.3)
    atomic_save_figure(figure, path)


def _band(axis: object, fractions: np.ndarray, curves: np.ndarray | None, colour: str) -> None:
    """The range (min to max) of the R random maps' mean curves, shaded."""
    if curves is not None and len(curves):
        axis.fill_between(fractions, curves.min(axis=0), curves.max(axis=0), color=colour, alpha=0.2, linewidth=0)


NORMALISED_PROBABILITY = "normalised class probability\n(1 intact, 0 baseline)"


def _normalised_panels(deletion: object, insertion: object, model: str, result: Any) -> None:
    """Deletion (most and least relevant first) and insertion: the mean per-image normalised curves the paired
    test's areas come from (`Faithfulness.paired_curves`), each random draw's mean curve in the band."""
    steps, mine, random = result.random_fractions, result.paired_curves, result.random_curves
    deletion.plot(steps, mine["deletion"], "o-", color="C0", label="MoRF (most relevant first)")
    deletion.plot(steps, mine["lerf_deletion"], "o-", color="C1", label="LeRF (least relevant first)")
    _band(deletion, steps, random["deletion"], "C0")
    _band(deletion, steps, random["lerf_deletion"], "C1")
    insertion.plot(steps, mine["insertion"], "o-", color="C2", label="insertion")
    _band(insertion, steps, random["insertion"], "C2")
    images = {name: comparison.finite.sum() for name, comparison in result.comparisons.items()}
    spread = result.median_dynamic_range
    deletion.set(
        title=f"{model}\ndeletion, {images['deletion']} images (median range {spread['deletion']:.3f})",
        xlabel="fraction of pixels deleted",
        ylabel=NORMALISED_PROBABILITY,
    )
    insertion.set(
        title=f"{model}\ninsertion, {images['insertion']} images (median range {spread['insertion']:.3f})",
        xlabel="fraction revealed",
        ylabel=NORMALISED_PROBABILITY,
    )


def _road_panel(road: object, model: str, result: Any) -> None:
    """ROAD most and least relevant first, the deciding measure's data (its LeRF minus MoRF), titled with the
    verdict it gives."""
    road.plot(result.road_fractions, result.road_curves["morf"], "o-", color="C0", label="MoRF")
    road.plot(result.road_fractions, result.road_curves["lerf"], "o-", color="C1", label="LeRF")
    _band(road, result.road_fractions, result.random_road_curves["morf"], "C0")
    _band(road, result.road_fractions, result.random_road_curves["lerf"], "C1")
    road.set(
        title=f"{model}\nROAD, deciding: {method_verdict(result.comparisons)}",
        xlabel="fraction removed (noisy linear imputation)",
        ylabel="class probability",
    )


def faithfulness_figure(curves: dict[str, Any], method: str) -> Figure:
    """One row per model (name -> `Faithfulness`): deletion (most and least relevant first), insertion and ROAD,
    each as the maps' mean curve over the paired test's images and steps, with a band spanning the R random maps'
    mean curves on the same images (a curve outside its band beats, or loses to, every random map on average).
    Deletion and insertion are the per-image normalised curves whose areas the table tests; ROAD, whose LeRF minus
    MoRF decides the verdict, is in probabilities (it has no baseline to normalise by)."""
    rows = len(curves)
    figure = Figure(figsize=(13, 3.3 * rows + 0.9), layout="constrained")
    axes = np.atleast_2d(figure.subplots(rows, 3))
    for row, (model, result) in enumerate(curves.items()):
        deletion, insertion, road = axes[row]
        _normalised_panels(deletion, insertion, model, result)
        _road_panel(road, model, result)
        for axis in (deletion, insertion, road):
            axis.title.set_fontsize(10)  # two lines, the model's name first: long names must not run into the next
            axis.grid(alpha=0.3)
            axis.margins(y=0.1)  # ROAD's probabilities often span little: let the axis follow them, not 0-1
    handles = [
        *axes[0, 0].get_legend_handles_labels()[0],
        *axes[0, 1].get_legend_handles_labels()[0],
        Patch(color="grey", alpha=0.3),
    ]
    labels = [
        "MoRF: most relevant first",
        "LeRF: least relevant first",
        "insertion",
        f"band: range of the {len(next(iter(curves.values())).random_curves['deletion'])} random maps' means",
    ]
    figure.suptitle(
        f"Faithfulness of {method} against random maps: ROAD LeRF - MoRF (right) decides the verdict; deletion and "
        "insertion (left) support it,\nas means of each image's curve normalised by its range, whose areas are the "
        "table's numbers; range: median |intact - baseline| probability"
    )
    figure.legend(handles, labels, loc="outside lower center", ncol=4, fontsize=9)
    return figure


def plot_faithfulness(curves: dict[str, Any], method: str, path: str | Path) -> None:
    """`faithfulness_figure`, saved to `path`."""
    atomic_save_figure(faithfulness_figure(curves, method), path)


def plot_agreement(
    distributions: dict[str, dict[str, np.ndarray]], reference: str, method: str, path: str | Path, top_fraction: float
) -> None:
    """Histograms of per-image rank correlation and top-k IoU between the reference's maps and each model's, over
    the pairs compared (a model with none says so in the legend)."""
    figure, (correlation, overlap) = _panels(2, 5, 3.6)
    for model, values in distributions.items():
        for axis, key, value_range in ((correlation, "rank_correlation", (-1, 1)), (overlap, "top_iou", (0, 1))):
            compared = values[key][~np.isnan(values[key])]  # blank-map pairs left out (metrics.agreement)
            mean = f"mean {compared.mean():.2f}" if compared.size else "no pair: every map blank"
            axis.hist(compared, bins=20, range=value_range, alpha=0.5, label=f"{model} ({mean}, {compared.size} pairs)")
    correlation.set(
        title=f"{method}: rank correlation with {reference}", xlabel="Spearman correlation", ylabel="images"
    )
    overlap.set(title=f"{method}: top-{top_fraction:.0%} overlap with {reference}", xlabel="IoU", ylabel="images")
    for axis in (correlation, overlap):
        axis.legend(fontsize=7)
    atomic_save_figure(figure, path)


def classification_figures(
    out: Path,
    logits: dict[str, np.ndarray],
    labels: np.ndarray,
    multi_label: bool,
    label_names: list[str],
    accuracy_latency: dict[str, dict[str, float]],
) -> dict[str, str]:
    """Confusion matrices, ROC curves, reliability diagrams and the accuracy/latency scatter; returns
    {title: file name} for the report."""
    figures = {}
    for index, (name, values) in enumerate(logits.items()):
        file_name = f"confusion_{index}_{Path(name).name}.png"
        plot_confusion_matrix(labels, predicted_classes(values, multi_label), label_names, out / file_name, title=name)
        figures[f"Confusion matrix: {name}"] = file_name
    aucs = {name: accuracy_latency[name]["auc"] for name in logits}
    plot_roc({n: roc_curves(v, labels, multi_label, label_names) for n, v in logits.items()}, aucs, out / "roc.png")
    plot_reliability({n: calibration_of(v, labels, multi_label) for n, v in logits.items()}, out / "reliability.png")
    plot_accuracy_latency(accuracy_latency, out / "accuracy_latency.png")
    return {
        **figures,
        "ROC curves": "roc.png",
        "Reliability diagrams": "reliability.png",
        "Accuracy vs latency": "accuracy_latency.png",
    }


def plot_confusion_matrix(
    labels: np.ndarray, predictions: np.ndarray, label_names: list[str], path: str | Path, title: str = ""
) -> None:
    """Counts per (true, predicted) class, coloured by the share of each true class.

    Args:
        labels: (N,) true class indices, or (N, L) 0/1 for multi-label (one 2x2 matrix per label).
        predictions: Same shape as `labels`: predicted class indices, or 0/1 per label.
    """
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    if labels.ndim == 2:
        matrices = [_confusion(labels[:, i], predictions[:, i], 2) for i in range(labels.shape[1])]
        titles, ticks = label_names, ["no", "yes"]
    else:
        matrices = [_confusion(labels, predictions, len(label_names))]
        titles, ticks = [title or "Confusion matrix"], label_names
    columns = min(len(matrices), 4)
    rows = -(-len(matrices) // columns)
    side = max(3.0, 0.6 * len(ticks) + 2) if len(matrices) == 1 else 2.6
    figure = Figure(figsize=(side * columns + 1, side * rows), layout="constrained")  # no title over a label above
    axes = np.atleast_1d(figure.subplots(rows, columns)).ravel()
    for axis, matrix, name in zip(axes, matrices, titles):
        _draw_matrix(axis, matrix, ticks, name)
    for axis in axes[len(matrices) :]:
        axis.set_axis_off()
    atomic_save_figure(figure, path)


def _confusion(labels: np.ndarray, predictions: np.ndarray, classes: int) -> np.ndarray:
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (labels.astype(np.int64), predictions.astype(np.int64)), 1)
    return matrix


def _draw_matrix(axis: Any, matrix: np.ndarray, ticks: list[str], title: str) -> None:
    shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    axis.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for (row, column), count in np.ndenumerate(matrix):
        colour = "white" if shares[row, column] > 0.5 else "black"
        axis.text(column, row, str(count), ha="center", va="center", color=colour, fontsize=9)
    positions = range(len(ticks))
    axis.set_xticks(positions, ticks, rotation=45 if len(ticks) > 2 else 0, ha="right" if len(ticks) > 2 else "center")
    axis.set_yticks(positions, ticks)
    axis.set(xlabel="predicted", ylabel="true", title=title)
