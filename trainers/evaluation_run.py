"""The evaluation report, run: every model over one dataset split (classification, cost, calibration), then each
explanation method's faithfulness, randomisation check and agreement with the first model on a seeded sample,
written as report/index.md and report/metrics.json (and into a model card).

`scripts/report.py` is its command line; the measures of maps themselves live in `explain` (`explain.evaluation`
is their entry point), the tables and figures in `trainers.evaluation_plots` and `trainers.evaluation_report`, the
arguments and classification summaries in `trainers.evaluation`.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch
from transformers import HfArgumentParser

from explain.cli import pick_device
from explain.evaluation import FaithfulnessSettings, score_explanations
from explain.maps_dataset import read_maps
from explain.registry import canonical_name
from explain.workflow import Explainer, check_methods_fit, compute_dtype
from pipelines import DataArguments, ImageCollator, load_image_dataset
from pipelines.io import check_output_folder
from pipelines.locks import run_folder_lock
from pipelines.preprocess import processed_size
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
    """The evaluation, while this run holds its report folder."""
    device = pick_device(args.device)
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

    # Classification and cost, on the whole split.
    logits = {
        name: space.restrict(index, explainer.predict(split, collator, args.batch_size).numpy())
        for index, (name, explainer) in enumerate(explainers.items())
    }
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

    # Explanations, on a seeded sample of the split: every model sees the same images.
    chosen = np.sort(
        np.random.default_rng(args.seed).choice(len(split), min(args.explain_images, len(split)), replace=False)
    )
    images = collator([split[int(i)] for i in chosen])["pixel_values"]
    shown = chosen[: args.sample_images]
    plot_probability_bars(
        [images[row].permute(1, 2, 0).numpy() for row in range(len(shown))],  # `shown` leads `chosen`
        {n: scores_from_logits(v[shown], data.multi_label) for n, v in logits.items()},
        space.names,
        [label_text(labels[i], space.names, data.multi_label) for i in shown],
        out / "probabilities.png",
    )
    figures["Predicted probabilities for sample images"] = "probabilities.png"
    reference_class = torch.from_numpy(logits[names[0]][chosen].argmax(axis=1))  # in the shared label order
    settings = FaithfulnessSettings(
        args.random_maps,
        args.random_steps,
        args.paired_images,
        road_fractions=args.road_fraction_values(),
        insertion_start=args.insertion_start,
    )
    for method in methods:
        inputs = {n: e.pixel_values(images) for n, e in explainers.items()}
        given = None
        if args.maps:  # computed once, by python -m explain --save_maps
            given = {
                n: read_maps(args.maps, args.split, path, method, kept[chosen], tuple(inputs[n].shape[-2:]))
                for n, path in zip(names, args.models)
            }
        scores = score_explanations(
            {n: e.model for n, e in explainers.items()},
            inputs,
            method,
            {n: torch.tensor(space.columns[i])[reference_class] for i, n in enumerate(names)},
            {n: torch.from_numpy(predicted_classes(v[chosen], data.multi_label)) for n, v in logits.items()},
            args.steps,
            args.top_fraction,
            args.batch_size,
            args.seed,
            dtype,
            settings,
            given,
        )
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


def label_names(model: torch.nn.Module) -> list[str]:
    return [model.config.id2label[index] for index in range(model.config.num_labels)]


def label_text(label: np.ndarray, names: list[str], multi_label: bool) -> str:
    if multi_label:
        return ", ".join(name for name, present in zip(names, label) if present) or "none"
    return names[int(label)]
