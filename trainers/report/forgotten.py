"""The audit's maps: what the reference and a shrunk model look at on the images the shrink changed, against the
images both still predict alike, and the figure of the forgotten images (`trainers.report.audit` has the numbers).

"Did it also look elsewhere?": on the images whose prediction changed, is the model's map further from the
reference's than on the images it still predicts alike? Per image, the rank correlation and the top-10% overlap
(IoU) of the two maps at the reference's class; the two sets compared with a two-sided Mann-Whitney U test (they
are different images, so no pairing). Pairs with a blank map (Grad-CAM's all-zero map) are left out, as in the
report's agreement table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from matplotlib.figure import Figure
from scipy.stats import mannwhitneyu

from explain.explainer import Explainer
from explain.metrics.agreement import blank_maps, rank_correlation, top_fraction_iou
from explain.metrics.statistics import mean_over
from explain.plots import display_images, panel_grid, resize_maps
from explain.registry import default_method, method_title
from pipelines.io import atomic_save_figure
from pipelines.labels import label_text, predicted_classes
from pipelines.progress import progress_bar
from trainers.metrics import scores_from_logits
from trainers.report.audit import audit_predictions
from trainers.report.split import ReportSplit

if TYPE_CHECKING:
    from tqdm import tqdm


@dataclass
class AuditSettings:
    """How much of the split the audit draws maps of.

    Attributes:
        map_images: At most this many changed images (and as many kept ones) for the map agreement test.
        figure_images: Rows of the forgotten-images figure.
        top_fraction: Share of top pixels the overlap (IoU) compares.
        seed: Seeds the sample of kept images and the bootstrap.
    """

    map_images: int = 64
    figure_images: int = 8
    top_fraction: float = 0.1
    seed: int = 0


@dataclass
class AuditImages:
    """The images whose maps the audit draws, as positions of the report's split.

    Attributes:
        changed: Where the model's prediction differs from the reference's (all of them, up to the cap).
        kept: A seeded sample of where the two predict alike, as many as `changed` (at least `minimum`).
    """

    changed: np.ndarray
    kept: np.ndarray


def audit_images(changed: np.ndarray, cap: int, seed: int, minimum: int = 16) -> AuditImages:
    """Every changed image, or a seeded sample of `cap` of them (a sample, not the first ones: a split sorted by
    class would otherwise confound class with change), and a seeded sample of as many kept images (at least
    `minimum`, so a model that changes one image still has a baseline to compare it with); none of either when no
    image changed."""
    rng = np.random.default_rng(seed)
    changed_positions, kept_positions = np.flatnonzero(changed), np.flatnonzero(~changed)
    if len(changed_positions) > cap:
        changed_positions = np.sort(rng.choice(changed_positions, cap, replace=False))
    wanted = min(len(kept_positions), max(len(changed_positions), minimum), cap) if len(changed_positions) else 0
    return AuditImages(changed_positions, np.sort(rng.choice(kept_positions, wanted, replace=False)))


def map_agreement_by_change(
    reference_maps: torch.Tensor, model_maps: torch.Tensor, changed: np.ndarray, top_fraction: float
) -> dict[str, Any]:
    """Rank correlation and top-`top_fraction` IoU of matching maps, on the changed images against the kept ones.

    Args:
        reference_maps, model_maps: (N, H, W) maps at the reference's class (any two resolutions).
        changed: (N,) True for a changed image, False for a kept one.
    """
    changed = np.asarray(changed, bool)
    correlation = rank_correlation(reference_maps, model_maps).numpy()
    iou = top_fraction_iou(reference_maps, model_maps, top_fraction).numpy()
    compared = ~(blank_maps(reference_maps) | blank_maps(model_maps)).numpy()
    iou_key = f"top{round(top_fraction * 100)}_iou"
    numbers: dict[str, Any] = {}
    for name, members in (("changed", changed), ("kept", ~changed)):
        numbers[name] = {
            "images": int(members.sum()),
            "pairs": int((members & compared).sum()),
            "rank_correlation_mean": mean_over(correlation, members & compared),
            f"{iou_key}_mean": mean_over(iou, members & compared),
        }
    for key, values in (("rank_correlation", correlation), (iou_key, iou)):
        first, second = values[changed & compared], values[~changed & compared]
        numbers[f"{key}_p"] = (
            float(mannwhitneyu(first, second, alternative="two-sided").pvalue)
            if len(first) and len(second)
            else float("nan")
        )
    return numbers


def maps_at_reference_class(
    explainer: Explainer, method: str, images: torch.Tensor | list[torch.Tensor], classes: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's maps (N, H, W) for `classes` (in its own output order) and its probability of each."""
    explanation = explainer.explain(method, images, classes)
    return explanation.maps, explanation.score


@dataclass
class ForgottenPanels:
    """What the forgotten-images figure shows, one row per image.

    Attributes:
        images: uint8 (B, C, H, W) or a list of them, as the split holds them.
        rows: The split's row number of each image (how a user finds it again).
        notes: What happened to each image, e.g. "negative flip" or "exemplar, distance 1.33".
        true_labels: Each image's label in words.
        reference_maps, model_maps: (B, H, W) in [0, 1], both at the reference's class.
        reference_captions, model_captions: Each model's prediction and probability in words.
    """

    images: torch.Tensor | list[torch.Tensor]
    rows: list[int]
    notes: list[str]
    true_labels: list[str]
    reference_maps: torch.Tensor
    model_maps: torch.Tensor
    reference_captions: list[str]
    model_captions: list[str]


def forgotten_figure(panels: ForgottenPanels, reference: str, model: str, method: str, heading: str) -> Figure:
    """The forgotten images: each input with its true label, then the reference's map and the model's map at the
    reference's class side by side, each model's prediction and probability written under its map."""
    size = tuple(panels.reference_maps.shape[-2:])
    images = display_images(panels.images, size)
    title = method_title(method)
    reference_column = f"{reference}: {title} at its class"
    model_column = f"{model}: {title} at the class of {reference}"
    columns = {
        reference_column: resize_maps(panels.reference_maps, size),
        model_column: resize_maps(panels.model_maps, size),
    }
    captions = {
        "input": [f"true: {label}" for label in panels.true_labels],
        reference_column: panels.reference_captions,
        model_column: panels.model_captions,
    }
    row_labels = [f"image {row}\n{note}" for row, note in zip(panels.rows, panels.notes)]
    return panel_grid(images, columns, row_labels, captions, heading)


def prediction_caption(model: str, probabilities: np.ndarray, names: list[str], multi_label: bool) -> str:
    """'student: normal 0.81' (the predicted class and its probability), or a multi-label model's predicted set."""
    if multi_label:
        return f"{model}: {label_text((probabilities > 0.5).astype(int), names)}"
    predicted = int(probabilities.argmax())
    return f"{model}: {names[predicted]} {probabilities[predicted]:.2f}"


def audit_models(
    run: ReportSplit,
    logits: dict[str, np.ndarray],
    seed_logits: dict[str, np.ndarray],
    settings: AuditSettings,
    out: Path,
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Every model audited against the reference (the first): the numbers of `audit_predictions`, the maps'
    agreement on the changed against the kept images, and the forgotten-images figure.

    Args:
        run: The split and the models.
        logits: Each model's logits (N, L) on the split, in the shared label order.
        seed_logits: For a model given as a seed group, every member's logits (S, N, L) (the first is the model
            itself); models given alone are absent.
        settings: How many images the maps and the figure take, the seed, the top fraction.
        out: The report folder, for the figures.

    Returns:
        Model name -> its audit (the reference has none), and the figures (title -> file name).
    """
    names = list(run.explainers)
    reference = names[0]
    audits, figures = {}, {}
    for index, name in enumerate(names[1:], start=1):
        audit = audit_predictions(
            logits[reference],
            logits[name],
            run.labels,
            run.space.names,
            run.multi_label,
            seed_logits.get(reference),
            seed_logits.get(name),
            settings.seed,
        )
        method = default_method(run.explainers[reference].model, run.explainers[name].model)
        changed = predicted_classes(logits[reference], run.multi_label) != predicted_classes(
            logits[name], run.multi_label
        )
        if run.multi_label:
            changed = changed.any(axis=1)
        chosen = audit_images(changed, settings.map_images, settings.seed)
        positions = np.concatenate([chosen.changed, chosen.kept])
        if len(positions):
            with progress_bar(2 * len(positions), f"audit maps ({name})", run.state.is_main_process) as bar:
                maps = model_pair_maps(run, (0, index), method, logits[reference], positions, bar)
            agreement = map_agreement_by_change(
                maps[0][0], maps[index][0], np.arange(len(positions)) < len(chosen.changed), settings.top_fraction
            )
            audit["map_agreement"] = {"method": method, "changed_images": int(changed.sum()), **agreement}
        shown = audit["exemplars"]["positions"][: settings.figure_images]
        if shown:
            file_name = f"forgotten_{safe_file_name(name)}.png"
            figure = forgotten_figure(
                forgotten_panels(run, (0, index), method, logits, shown, audit["exemplars"], seed_logits),
                reference,
                name,
                method,
                heading_for(audit, reference, name),
            )
            atomic_save_figure(figure, out / file_name)
            figures[f"What {name} forgot (audit against {reference})"] = file_name
        audits[name] = audit
    return audits, figures


def heading_for(audit: dict[str, Any], reference: str, model: str) -> str:
    """The forgotten-images figure's title: which images it shows and in what order."""
    if audit["class_test"] is not None:
        return (
            f"What {model} changed: images whose modal prediction over the seeds of {model} differs from that of "
            f"{reference}, largest histogram distance first"
        )
    return f"What {model} forgot: images {reference} gets right and {model} wrong, most confident first"


def safe_file_name(name: str) -> str:
    """A model's display name (perhaps a path or Hub id) as part of a file name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "model"


def reference_classes(
    run: ReportSplit, model_index: int, reference_logits: np.ndarray, positions: np.ndarray
) -> torch.Tensor:
    """The reference's predicted (top) class of each image, as model `model_index`'s output index."""
    shared = reference_logits[positions].argmax(axis=1)
    return torch.tensor(run.space.columns[model_index])[torch.from_numpy(shared)]


def model_pair_maps(
    run: ReportSplit,
    indices: tuple[int, int],
    method: str,
    reference_logits: np.ndarray,
    positions: np.ndarray,
    bar: tqdm | None = None,
) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """Both models' maps (N, H, W) and probabilities (N,) at the reference's class of the images at `positions`;
    each model's images counted on `bar`, if given."""
    explainers = list(run.explainers.values())
    images = run.images(positions)
    maps = {}
    for index in indices:
        classes = reference_classes(run, index, reference_logits, positions)
        maps[index] = maps_at_reference_class(explainers[index], method, images, classes)
        if bar is not None:
            bar.update(len(positions))
    return maps


def forgotten_panels(
    run: ReportSplit,
    indices: tuple[int, int],
    method: str,
    logits: dict[str, np.ndarray],
    shown: list[int],
    exemplars: dict[str, Any],
    seed_logits: dict[str, np.ndarray],
) -> ForgottenPanels:
    """The rows of the forgotten-images figure for the images at `shown` (positions of the split), in order; under
    a seed group's caption, how its seeds voted (the exemplars over seeds are chosen by those votes)."""
    names = list(run.explainers)
    reference, model = names[indices[0]], names[indices[1]]
    positions = np.asarray(shown)
    maps = model_pair_maps(run, indices, method, logits[reference], positions)
    scores = {name: scores_from_logits(logits[name][positions], run.multi_label) for name in (reference, model)}
    notes = exemplar_notes(exemplars, len(positions))
    captions = {
        name: [prediction_caption(name, row, run.space.names, run.multi_label) for row in scores[name]]
        for name in (reference, model)
    }
    for name in (reference, model):
        if name in seed_logits and not run.multi_label:
            votes = seed_logits[name][:, positions].argmax(axis=2)  # (S, B)
            captions[name] = [
                f"{caption}\n{seed_votes(votes[:, row], run.space.names)}" for row, caption in enumerate(captions[name])
            ]
    return ForgottenPanels(
        images=run.images(positions),
        rows=[int(row) for row in run.kept[positions]],
        notes=notes,
        true_labels=[label_text(run.labels[position], run.space.names) for position in positions],
        reference_maps=maps[indices[0]][0],
        model_maps=maps[indices[1]][0],
        reference_captions=captions[reference],
        model_captions=captions[model],
    )


def exemplar_notes(exemplars: dict[str, Any], count: int) -> list[str]:
    """What each of the first `count` exemplars is: a negative flip; or an exemplar over seeds with its histogram
    distance and, for one label per image, which side's modal prediction is right ("forgotten": the reference's;
    "learnt": the model's; "both wrong")."""
    if exemplars["rule"].startswith("negative flips"):
        return ["negative flip"] * count
    notes = [f"exemplar, distance {score:.2f}" for score in exemplars["scores"][:count]]
    if exemplars.get("outcomes") is None:
        return notes
    return [f"{note}\n{what}" for note, what in zip(notes, exemplars["outcomes"][:count])]


def seed_votes(predictions: np.ndarray, names: list[str]) -> str:
    """'seeds: normal 2, pneumonia 1': how a seed group's members predicted one image, most votes first."""
    classes, counts = np.unique(predictions, return_counts=True)
    order = np.argsort(-counts, kind="stable")
    return "seeds: " + ", ".join(f"{names[classes[i]]} {counts[i]}" for i in order)
