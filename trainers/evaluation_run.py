"""The evaluation report, run: every model over one dataset split (classification, cost, calibration), then each
explanation method's faithfulness, randomisation check and agreement with the first model on a seeded sample or on
every image (`--explain_images all`), written as report/index.md and report/metrics.json (and into a model card).

Under `accelerate launch --num_processes N` the work is shared: the split's classification logits and the explained
images' per-image measures (`explain.evaluation.explanation_parts`) are computed in fixed chunks of `batch_size`
images, process r taking chunks r, r + N, ..., and gathered in chunk order; the main process alone measures cost,
aggregates (`scores_from_parts`: means, mean curves, signed-rank tests, verdicts), plots and writes. Chunks are cut
from the images, not the processes, and every random draw is seeded per image, so the numbers are the same on any
number of processes. With `--maps DIR` (`python -m explain --save_maps`) the models' maps are read, not computed.

`scripts/report.py` is its command line; the measures of maps themselves live in `explain` (`explain.evaluation`
is their entry point), the tables and figures in `trainers.evaluation_plots` and `trainers.evaluation_report`, the
arguments and classification summaries in `trainers.evaluation`.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import PartialState
from accelerate.utils import gather_object
from tqdm.auto import tqdm
from transformers import HfArgumentParser

from explain.explainer import Explainer, check_methods_fit
from explain.maps_dataset import examples, process_state, read_maps
from explain.metrics.faithfulness import FaithfulnessSettings
from explain.metrics.randomization import randomized_copy
from explain.metrics.scores import ModelParts, explanation_parts, scores_from_parts
from explain.metrics.statistics import paired_mask
from explain.registry import canonical_name
from pipelines import DataArguments, ImageCollator, load_image_dataset
from pipelines.io import check_output_folder
from pipelines.locks import run_folder_lock
from pipelines.preprocess import processed_size
from pipelines.runtime import compute_dtype, pick_device
from trainers.evaluation import EvaluateArguments, classification_summary, shared_label_space
from trainers.evaluation_plots import classification_figures, plot_agreement, plot_faithfulness, plot_probability_bars
from trainers.evaluation_report import check_model_card_folder, fold_into_model_card, write_report
from trainers.metrics import scores_from_logits
from trainers.model_cost import measure_cost
from trainers.reporting import predicted_classes
from trainers.shrinking import read_shrink_record


def parse_arguments(argv: list[str]) -> tuple[EvaluateArguments, DataArguments]:
    namespace = vars(HfArgumentParser([EvaluateArguments, DataArguments]).parse_args(argv))
    pick = lambda cls: cls(**{f.name: namespace[f.name] for f in fields(cls)})  # noqa: E731
    return pick(EvaluateArguments), pick(DataArguments)


def display_names(paths: list[str]) -> list[str]:
    """Folder names when they are unique (teacher, student, ...), else the paths as given."""
    names = [Path(path).name for path in paths]
    return names if len(set(names)) == len(names) else list(paths)


def evaluate(argv: list[str] | None = None) -> dict:
    """Parse `argv` (default: the command line), check the output folders, and run the evaluation while this run
    holds the report folder.

    Returns:
        The report, as written to metrics.json.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    args, data_args = parse_arguments(argv)
    # Mistakes that would otherwise surface only after the evaluation, or halfway through writing the report.
    check_output_folder(args.out)
    if args.model_card:
        check_model_card_folder(args.model_card)
    with run_folder_lock(args.out):  # one writer per report folder
        return evaluate_models(args, data_args, argv)


def evaluate_models(args: EvaluateArguments, data_args: DataArguments, argv: list[str]) -> dict:
    """The evaluation, while this run holds its report folder: on every process of an `accelerate launch` run (or
    the only one), each predicting and explaining its share of the split; the main process aggregates, measures
    cost and writes the report.

    Returns:
        The report on the main process; an empty dict on the others.
    """
    state = process_state(cpu=args.device == "cpu")
    # One process: the device asked for. Launched: the one accelerate gave this process.
    device = pick_device(args.device) if state.num_processes == 1 else state.device
    dtype = compute_dtype(args.precision, device)
    methods = [canonical_name(method) for method in args.methods.split(",") if method.strip()]
    data = load_image_dataset(data_args)
    names = display_names(args.models)
    loading = {"allow_pickle": args.allow_pickle, "trust_remote_code": args.trust_remote_code}
    explainers = {
        name: Explainer(path, device, dtype, **loading, batch_size=args.batch_size)
        for name, path in zip(names, args.models)
    }
    check_methods_fit(methods, {name: explainer.model for name, explainer in explainers.items()})
    space = shared_label_space(
        [label_names(e.model) for e in explainers.values()], data.label_names, args.allow_label_mismatch
    )
    collator = ImageCollator(data.num_labels, data.multi_label, data_args.image_mode)
    split = data.dataset[args.split]
    keep, labels = space.keep(collator.labels([{"label": label} for label in split["label"]]).numpy(), data.multi_label)
    kept = np.flatnonzero(keep)  # the split's own row numbers, which a maps dataset knows the images by
    split = split.select(kept)
    out = Path(args.out)

    # Distributed: classification logits of the whole split, then the explanation measures of every explained
    # image, each process on its share of fixed chunks, gathered in order.
    logits = {
        name: space.restrict(index, predict_split(explainer, split, collator, args.batch_size, state))
        for index, (name, explainer) in enumerate(explainers.items())
    }
    chosen = args.explained_positions(len(split))
    settings = FaithfulnessSettings(
        args.random_maps,
        args.random_steps,
        args.paired_images,
        road_fractions=args.road_fraction_values(),
        insertion_start=args.insertion_start,
    )
    parts = explain_split(
        args, methods, explainers, space, split, collator, logits, chosen, kept, settings, data.multi_label, state
    )
    if not state.is_main_process:
        return {}

    # The main process alone: cost (timed while the others are done), the aggregate step, figures and the report.
    native = tuple(collator([split[0]])["pixel_values"][0].shape[-2:])
    models = {}
    for path, (name, explainer) in zip(args.models, explainers.items()):
        size = processed_size(explainer.preprocess.image_processor, native)
        cost = measure_cost(explainer.model, path, size, device, dtype, args.latency_repeats).as_dict()
        cost["size_on_disk_mib"] = round(cost["size_on_disk_bytes"] / 2**20, 2)
        summary = classification_summary(logits[name], labels, data.multi_label, space.names)
        models[name] = {"path": path, "classification": summary, "cost": cost, "shrink": read_shrink_record(path)}
    figures = classification_figures(
        out,
        logits,
        labels,
        data.multi_label,
        space.names,
        {
            n: {
                "latency_ms": m["cost"]["latency_ms_batch_1"],
                "latency_quartiles": m["cost"]["latency_ms_batch_1_quartiles"],
                "accuracy": m["classification"]["accuracy"],
                "auc": m["classification"]["auc"],
                "parameters": m["cost"]["parameters"],
            }
            for n, m in models.items()
        },
    )
    shown = chosen[: args.sample_images]
    images = collator(examples_at(split, shown))["pixel_values"]
    plot_probability_bars(
        [images[row].permute(1, 2, 0).numpy() for row in range(len(shown))],
        {n: scores_from_logits(v[shown], data.multi_label) for n, v in logits.items()},
        space.names,
        [label_text(labels[i], space.names, data.multi_label) for i in shown],
        out / "probabilities.png",
    )
    figures["Predicted probabilities for sample images"] = "probabilities.png"
    for method in methods:
        scores = scores_from_parts([chunk[method] for chunk in parts], settings, args.top_fraction)
        for name, numbers in scores.numbers.items():
            for key, value in numbers.items():
                models[name].setdefault(key, {})[method] = value
        plot_faithfulness(scores.curves, method, out / f"faithfulness_{method}.png")
        figures[f"Deletion, insertion and ROAD curves against random maps: {method}"] = f"faithfulness_{method}.png"
        if scores.distributions:
            plot_agreement(scores.distributions, names[0], method, out / f"agreement_{method}.png", args.top_fraction)
            figures[f"Agreement with {names[0]}: {method}"] = f"agreement_{method}.png"

    report = {
        "command": "python scripts/report.py " + shlex.join(argv),
        "dataset": data_args.dataset_name or data_args.data_dir,
        "split": args.split,
        "images": len(split),
        "explained_images": len(chosen),
        "processes": state.num_processes,
        "reference": names[0],
        "labels": space.names,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "dtype": str(dtype).removeprefix("torch."),
        "steps": args.steps,
        "top_percent": round(args.top_fraction * 100),
        "models": models,
        "figures": figures,
    }
    index = write_report(out, report)
    if args.model_card:
        fold_into_model_card(args.model_card, report)
    print(f"Report: {index}")
    return report


def fixed_chunks(count: int, size: int) -> list[np.ndarray]:
    """Positions 0 to `count` - 1 cut into consecutive chunks of `size` (the last one shorter). The cut depends on
    nothing else, so every chunk is computed alike whichever process takes it and however many there are."""
    return [np.arange(start, min(start + size, count)) for start in range(0, count, size)]


def in_order(state: PartialState, done: list[tuple[int, Any]]) -> list[Any]:
    """Every process's (chunk number, result) pairs, gathered on every process, as the results in chunk order."""
    everyone = gather_object(done) if state.num_processes > 1 else done
    return [result for _, result in sorted(everyone, key=lambda pair: pair[0])]


def examples_at(split: Any, positions: np.ndarray) -> list[dict[str, Any]]:
    """The split's rows at `positions` as the collator takes them, read in one slice."""
    positions = np.asarray(positions)
    if len(positions) and np.array_equal(positions, np.arange(positions[0], positions[0] + len(positions))):
        return examples(split, int(positions[0]), int(positions[0]) + len(positions))
    return examples(split.select(positions), 0, len(positions))


def predict_split(
    explainer: Explainer, split: Any, collator: ImageCollator, batch_size: int, state: PartialState
) -> np.ndarray:
    """Logits (N, L) of the whole split: each process predicts chunks r, r + W, ... of `batch_size` images."""
    chunks = fixed_chunks(len(split), batch_size)
    done = [
        (number, explainer.predict_batch(collator(examples_at(split, chunk))["pixel_values"]).numpy())
        for number, chunk in list(enumerate(chunks))[state.process_index :: state.num_processes]
    ]
    return np.concatenate(in_order(state, done))


def explain_split(
    args: EvaluateArguments,
    methods: list[str],
    explainers: dict[str, Explainer],
    space: Any,
    split: Any,
    collator: ImageCollator,
    logits: dict[str, np.ndarray],
    chosen: np.ndarray,
    kept: np.ndarray,
    settings: FaithfulnessSettings,
    multi_label: bool,
    state: PartialState,
) -> list[dict[str, dict[str, ModelParts]]]:
    """Per-image explanation measures of the `chosen` positions of the split, cut into fixed chunks of
    `batch_size` images; process r takes chunks r, r + W, ... and loads each chunk's images when its turn comes.

    Returns:
        Per chunk, in order: method -> model -> `ModelParts` (on every process).
    """
    names = list(explainers)
    paired = paired_mask(len(chosen), settings.paired_images)  # over every explained image, before the cut
    chunks = list(enumerate(fixed_chunks(len(chosen), args.batch_size)))[state.process_index :: state.num_processes]
    models = {name: explainer.model for name, explainer in explainers.items()}
    # Made once per model (a chunk at a time would re-initialise a ViT-B for every 64 images).
    copies = {name: randomized_copy(model, args.seed) for name, model in models.items()}
    done = []
    # On the main process only; tqdm turns itself off where stderr is no terminal.
    bar = tqdm(
        total=sum(len(chunk) for _, chunk in chunks),
        unit="img",
        desc="explanations",
        disable=None if state.is_main_process else True,
    )
    with bar:
        for number, chunk in chunks:
            positions = chosen[chunk]
            images = collator(examples_at(split, positions))["pixel_values"]
            reference_class = torch.from_numpy(logits[names[0]][positions].argmax(axis=1))  # shared label order
            per_method = {}
            for method in methods:
                inputs = {n: e.pixel_values(images) for n, e in explainers.items()}
                given = None
                if args.maps:  # computed once, by python -m explain --save_maps
                    given = {
                        n: read_maps(args.maps, args.split, path, method, kept[positions], tuple(inputs[n].shape[-2:]))
                        for n, path in zip(names, args.models)
                    }
                per_method[method] = explanation_parts(
                    models,
                    inputs,
                    method,
                    {n: torch.tensor(space.columns[i])[reference_class] for i, n in enumerate(names)},
                    {n: torch.from_numpy(predicted_classes(v[positions], multi_label)) for n, v in logits.items()},
                    args.steps,
                    args.top_fraction,
                    args.batch_size,
                    args.seed,
                    explainers[names[0]].options["dtype"],
                    settings,
                    given,
                    rows=kept[positions],
                    paired=paired[chunk],
                    reinitialised=copies,
                )
            done.append((number, per_method))
            bar.update(len(chunk))
    return in_order(state, done)


def label_names(model: torch.nn.Module) -> list[str]:
    return [model.config.id2label[index] for index in range(model.config.num_labels)]


def label_text(label: np.ndarray, names: list[str], multi_label: bool) -> str:
    if multi_label:
        return ", ".join(name for name, present in zip(names, label) if present) or "none"
    return names[int(label)]
