"""The evaluation report, run: every model over one dataset split (classification, cost, calibration), then each
explanation method's faithfulness, randomisation check and agreement with the first model on a seeded sample or on
every image (`--explain_images all`), the audit of what each model forgot and its robustness under corruption
(`--corruptions`), written as report/index.md and report/metrics.json (and into a model card).

Under `accelerate launch --num_processes N` the work is shared: the split's classification logits and the explained
images' per-image measures (`explain.metrics.scores.explanation_parts`), and the corrupted images' predictions and
map stability (`trainers.report.robustness`), are computed in fixed chunks of `batch_size` images, process r taking
chunks r, r + N, ..., and gathered in chunk order; the main process alone measures cost, aggregates
(`scores_from_parts`: means, mean curves, signed-rank tests, verdicts), plots and writes. Chunks are cut
from the images, not the processes, and every random draw is seeded per image, so the numbers are the same on any
number of processes. With `--maps DIR` (`python -m explain --save_maps`) the models' maps are read, not computed.

`scripts/report.py` is its command line; the measures of maps live in `explain.metrics`, the classification numbers
in `trainers.report.classification`, cost in `trainers.report.cost`, figures in `trainers.report.figures` and the
markdown in `trainers.report.markdown`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from explain.explainer import Explainer, display_names, methods_for_models
from explain.maps_dataset import process_state, read_maps
from explain.metrics.faithfulness import FaithfulnessSettings
from explain.metrics.randomization import randomized_copy
from explain.metrics.scores import ModelParts, ScoredImages, explanation_parts, scores_from_parts
from explain.metrics.statistics import paired_mask
from pipelines import DataArguments, ImageCollator, load_image_dataset
from pipelines.corruptions import corruption_dataset, corruption_names
from pipelines.io import check_output_folder, finish_partial, mark_partial
from pipelines.labels import label_text, model_label_names, predicted_classes
from pipelines.locks import run_folder_lock
from pipelines.preprocess import processed_size
from pipelines.progress import chunks_with_progress
from pipelines.runtime import compute_dtype, device_name, pick_device
from trainers.hub import check_model_card_folder, fold_into_model_card
from trainers.metrics import scores_from_logits
from trainers.report.arguments import ReportArguments
from trainers.report.classification import classification_summary, shared_label_space
from trainers.report.cost import measure_cost
from trainers.report.figures import classification_figures, plot_agreement, plot_faithfulness, plot_probability_bars
from trainers.report.forgotten import AuditSettings, audit_models
from trainers.report.markdown import render_markdown, write_report
from trainers.report.robustness import RobustnessSettings, check_reference, corrupt_split, robustness_report
from trainers.report.split import ReportSplit, check_seed_group, check_seed_labels, in_order, my_chunks, seed_group
from trainers.shrink.copies import read_shrink_record


def run_report(args: ReportArguments, data_args: DataArguments, command: str) -> dict:
    """Check the output folders, then evaluate while this run holds the report folder.

    Args:
        command: The command line that made the report, recorded in it.

    Returns:
        The report, as written to metrics.json (an empty dict on the other processes of a distributed run).
    """
    # Mistakes that would otherwise surface only after the evaluation, or halfway through writing the report.
    check_output_folder(args.output_dir)
    if args.model_card:
        check_model_card_folder(args.model_card)
    with run_folder_lock(args.output_dir):  # one writer per report folder
        return evaluate_models(args, data_args, command)


def evaluate_models(args: ReportArguments, data_args: DataArguments, command: str) -> dict:
    """The evaluation, while this run holds its report folder: on every process of an `accelerate launch` run (or
    the only one), each predicting and explaining its share of the split; the main process aggregates, measures
    cost and writes the report.

    Returns:
        The report on the main process; an empty dict on the others.
    """
    started = time.perf_counter()
    state = process_state(cpu=args.device == "cpu")
    # One process: the device asked for. Launched: the one accelerate gave this process.
    device = pick_device(args.device) if state.num_processes == 1 else state.device
    dtype = compute_dtype(args.precision, device)
    data = load_image_dataset(data_args)
    loading = args.loading_options
    groups = [seed_group(path) for path in args.models]
    # A seed group is shown by its first seed; its other seeds are predicted for the audit alone.
    loaded = [
        Explainer(members[0], device, dtype, **loading, batch_size=args.batch_size, title=title_of(path, members))
        for path, members in zip(args.models, groups)
    ]
    names = display_names(loaded)
    explainers = dict(zip(names, loaded))
    methods = methods_for_models(args.methods, {name: explainer.model for name, explainer in explainers.items()})
    space = shared_label_space(
        [model_label_names(e.model) for e in explainers.values()], data.label_names, args.allow_label_mismatch
    )
    collator = ImageCollator(data.num_labels, data.multi_label, data_args.image_mode)
    split = data.dataset[args.split]
    keep, labels = space.keep(collator.labels([{"label": label} for label in split["label"]]).numpy(), data.multi_label)
    kept = np.flatnonzero(keep)  # the split's own row numbers, which a maps dataset knows the images by
    run = ReportSplit(split.select(kept), kept, labels, collator, space, data.multi_label, explainers, state)
    robustness = robustness_settings(args, data_args, run)  # a corruption that does not apply refused before any work

    # Distributed: classification logits of the whole split, then the explanation measures of every explained
    # image, each process on its share of fixed chunks, gathered in order.
    logits = {
        name: space.restrict(index, predict_split(run, explainer, args.batch_size))
        for index, (name, explainer) in enumerate(explainers.items())
    }
    seeds_started = time.perf_counter()
    seed_logits = {
        name: seed_group_logits(run, index, path, members, logits[name], loading, (device, dtype), args.batch_size)
        for index, (name, path, members) in enumerate(zip(names, args.models, groups))
        if len(members) > 1 and args.audit and len(names) > 1
    }
    seeds_seconds = time.perf_counter() - seeds_started  # the audit's share: the other seeds' predictions
    chosen = args.explained_positions(len(run.rows))
    settings = args.faithfulness_settings(dtype)
    parts = explain_split(args, run, methods, logits, chosen, settings)
    robustness_started = time.perf_counter()
    corrupted = (
        corrupt_split(run, robustness, args.corrupted_positions(len(run.rows)), logits) if robustness.names else None
    )
    robustness_seconds = time.perf_counter() - robustness_started
    if not state.is_main_process:
        return {}

    # The main process alone: cost (timed while the others are done), the aggregate step, figures and the report.
    out = Path(args.output_dir)
    mark_partial(out)  # until index.md is written: a killed report's figures are marked
    models = measure_models([members[0] for members in groups], run, logits, device, dtype, args.latency_repeats)
    figures = classification_figures(out, logits, labels, data.multi_label, space.names, accuracy_latency(models))
    figures.update(probability_figure(args, run, logits, chosen, out))
    for method in methods:
        per_chunk = [chunk[method] for chunk in parts]
        figures.update(method_figures(args, method, per_chunk, settings, models, out))
    audit_seconds = None
    if args.audit and len(names) > 1:
        audit_started = time.perf_counter()
        audit_settings = AuditSettings(args.audit_map_images, args.audit_figure_images, args.top_fraction, args.seed)
        audits, audit_figures = audit_models(run, logits, seed_logits, audit_settings, out)
        for name, audit in audits.items():
            models[name]["audit"] = audit
        figures.update(audit_figures)
        audit_seconds = round(time.perf_counter() - audit_started + seeds_seconds, 1)
    corruptions = None
    if corrupted is not None:
        robustness_started = time.perf_counter()
        numbers, corruptions, robustness_figures = robustness_report(run, robustness, corrupted, logits, out)
        for name, values in numbers.items():
            models[name]["robustness"] = values
        figures.update(robustness_figures)
        robustness_seconds += time.perf_counter() - robustness_started
    report = {
        "command": command,
        "dataset": data_args.dataset_name or data_args.data_dir,
        "split": args.split,
        "images": len(run.rows),
        "explained_images": len(chosen),
        "processes": state.num_processes,
        "reference": names[0],
        "labels": space.names,
        "device": device_name(device),
        "dtype": str(dtype).removeprefix("torch."),
        "steps": args.steps,
        "top_percent": round(args.top_fraction * 100),
        "seed_groups": {name: len(members) for name, members in zip(names, groups) if len(members) > 1},
        "corruptions": corruptions,
        "models": models,
        "figures": figures,
        # Wall-clock seconds on the main process: the whole evaluation, and the audit's and robustness's shares of it.
        "seconds": {
            "total": round(time.perf_counter() - started, 1),
            "audit": audit_seconds,
            "robustness": round(robustness_seconds, 1) if corrupted is not None else None,
        },
    }
    index = write_report(out, report)
    finish_partial(out)
    if args.model_card:
        fold_into_model_card(args.model_card, render_markdown(report, figures=False))
    print(f"Report: {index}")
    return report


def robustness_settings(args: ReportArguments, data_args: DataArguments, run: ReportSplit) -> RobustnessSettings:
    """The corruptions asked for, checked against the data (a colour corruption on grey images, AlexNet's errors for
    a dataset without them) before anything is corrupted."""
    dataset = corruption_dataset(data_args.dataset_source, data_args.dataset_name)
    images = run.images(np.arange(min(1, len(run.rows))))
    channels = int(images.shape[1] if isinstance(images, torch.Tensor) else images[0].shape[0])
    names = corruption_names(args.corruptions, dataset, channels)
    if names:
        check_reference(args.corruption_reference, dataset, names)
    return RobustnessSettings(
        names, dataset, args.seed, args.batch_size, args.corruption_map_images, args.corruption_reference
    )


def title_of(path: str, members: list[str]) -> str | None:
    """What the report calls a seed group: its folder's name (a single model keeps the Explainer's own title)."""
    return Path(path).name if members != [path] else None


def seed_group_logits(
    run: ReportSplit,
    index: int,
    path: str,
    members: list[str],
    first: np.ndarray,
    loading: dict[str, bool],
    placement: tuple[torch.device, torch.dtype],
    batch_size: int,
) -> np.ndarray:
    """(S, N, L) every seed's logits on the split (the first seed's are `first`, already predicted), the seeds
    loaded one at a time, after checking that they are one recipe (`check_seed_group`, `check_seed_labels`)."""
    check_seed_group(path, members)
    shown = (members[0], list(run.explainers.values())[index].label_names)
    rest = []
    for member in members[1:]:
        explainer = Explainer(member, *placement, **loading, batch_size=batch_size)
        check_seed_labels(path, shown, (member, explainer.label_names))
        rest.append(run.space.restrict(index, predict_split(run, explainer, batch_size)))
    return np.stack([first, *rest])


def measure_models(
    paths: list[str],
    run: ReportSplit,
    logits: dict[str, np.ndarray],
    device: torch.device,
    dtype: torch.dtype,
    latency_repeats: int,
) -> dict[str, dict[str, Any]]:
    """Each model's classification numbers on the split, its measured cost, and what made it (a shrunk copy's
    shrink.json); `paths` are the model folders (a seed group's first seed)."""
    native = tuple(run.images(np.arange(1))[0].shape[-2:])
    models = {}
    for path, (name, explainer) in zip(paths, run.explainers.items()):
        size = processed_size(explainer.preprocess.image_processor, native)
        cost = measure_cost(
            explainer.model, path, size, device, dtype, latency_repeats, progress=f"latency ({explainer.title})"
        ).as_dict()
        cost["size_on_disk_mib"] = round(cost["size_on_disk_bytes"] / 2**20, 2)
        summary = classification_summary(logits[name], run.labels, run.multi_label, run.space.names)
        models[name] = {"path": path, "classification": summary, "cost": cost, "shrink": read_shrink_record(path)}
    return models


def accuracy_latency(models: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """What the accuracy-vs-latency figure plots of each model."""
    return {
        name: {
            "latency_ms": model["cost"]["latency_ms_batch_1"],
            "latency_quartiles": model["cost"]["latency_ms_batch_1_quartiles"],
            "accuracy": model["classification"]["accuracy"],
            "auc": model["classification"]["auc"],
            "parameters": model["cost"]["parameters"],
        }
        for name, model in models.items()
    }


def probability_figure(
    args: ReportArguments, run: ReportSplit, logits: dict[str, np.ndarray], chosen: np.ndarray, out: Path
) -> dict[str, str]:
    """Each model's predicted probabilities for the first `sample_images` explained images."""
    shown = chosen[: args.sample_images]
    images = run.images(shown)
    plot_probability_bars(
        [images[row].permute(1, 2, 0).numpy() for row in range(len(shown))],
        {name: scores_from_logits(values[shown], run.multi_label) for name, values in logits.items()},
        run.space.names,
        [label_text(run.labels[index], run.space.names) for index in shown],
        out / "probabilities.png",
    )
    return {"Predicted probabilities for sample images": "probabilities.png"}


def method_figures(
    args: ReportArguments,
    method: str,
    parts: list[dict[str, ModelParts]],
    settings: FaithfulnessSettings,
    models: dict[str, dict[str, Any]],
    out: Path,
) -> dict[str, str]:
    """The aggregate step for one method: its numbers into `models` (the reference first), and its faithfulness and
    agreement figures."""
    reference = next(iter(models))
    scores = scores_from_parts(parts, settings, args.top_fraction)
    for name, numbers in scores.numbers.items():
        for key, value in numbers.items():
            models[name].setdefault(key, {})[method] = value
    plot_faithfulness(scores.curves, method, out / f"faithfulness_{method}.png")
    figures = {f"Deletion, insertion and ROAD curves against random maps: {method}": f"faithfulness_{method}.png"}
    if scores.distributions:
        plot_agreement(scores.distributions, reference, method, out / f"agreement_{method}.png", args.top_fraction)
        figures[f"Agreement with {reference}: {method}"] = f"agreement_{method}.png"
    return figures


def predict_split(run: ReportSplit, explainer: Explainer, batch_size: int) -> np.ndarray:
    """Logits (N, L) of the whole split: each process predicts chunks r, r + W, ... of `batch_size` images."""
    mine = my_chunks(run.state, len(run.rows), batch_size)
    mine = chunks_with_progress(mine, f"predictions ({explainer.title})", run.state.is_main_process)
    done = [(number, explainer.predict_batch(run.images(chunk)).numpy()) for number, chunk in mine]
    return np.concatenate(in_order(run.state, done))


def explain_split(
    args: ReportArguments,
    run: ReportSplit,
    methods: list[str],
    logits: dict[str, np.ndarray],
    chosen: np.ndarray,
    settings: FaithfulnessSettings,
) -> list[dict[str, dict[str, ModelParts]]]:
    """Per-image measures of each method's maps at the `chosen` positions of the split, cut into fixed chunks of
    `batch_size` images; process r takes chunks r, r + W, ... and loads each chunk's images when its turn comes.

    Returns:
        Per chunk, in order: method -> model -> `ModelParts` (on every process).
    """
    explainers, state = run.explainers, run.state
    names = list(explainers)
    paired = paired_mask(len(chosen), settings.paired_images)  # over every explained image, before the cut
    models = {name: explainer.model for name, explainer in explainers.items()}
    # Made once per model (a chunk at a time would re-initialise a ViT-B for every 64 images).
    copies = {name: randomized_copy(model, args.seed) for name, model in models.items()}
    done = []
    # The faithfulness curves are measured here too, chunk by chunk: this is the report's longest step.
    chunks = my_chunks(state, len(chosen), args.batch_size)
    for number, chunk in chunks_with_progress(chunks, "explanations and faithfulness", state.is_main_process):
        positions = chosen[chunk]
        images = run.images(positions)
        reference_class = torch.from_numpy(logits[names[0]][positions].argmax(axis=1))  # shared label order
        per_method = {}
        random_cache = {}  # the random maps' curves of this chunk, the same for every method (same targets)
        for method in methods:
            inputs = {name: explainer.pixel_values(images) for name, explainer in explainers.items()}
            given = None
            if args.maps:  # computed once, by python -m explain --save_maps
                given = {
                    name: read_maps(  # a seed group's maps are its first seed's, the model it shows
                        args.maps,
                        args.split,
                        explainer.name,
                        method,
                        run.kept[positions],
                        tuple(inputs[name].shape[-2:]),
                    )
                    for name, explainer in explainers.items()
                }
            scored = ScoredImages(
                pixel_values=inputs,
                reference_targets={
                    name: torch.tensor(run.space.columns[index])[reference_class] for index, name in enumerate(names)
                },
                predictions={
                    name: torch.from_numpy(predicted_classes(values[positions], run.multi_label))
                    for name, values in logits.items()
                },
                given_maps=given,
                rows=run.kept[positions],
                paired=paired[chunk],
            )
            per_method[method] = explanation_parts(
                models, scored, method, settings, args.top_fraction, copies, random_cache
            )
        done.append((number, per_method))
    return in_order(state, done)
