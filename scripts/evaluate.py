"""Evaluate and compare models on one dataset split, with an explanation report card.

    python scripts/evaluate.py --models runs/quickstart/teacher runs/quickstart/student \\
        --dataset_name breastmnist --split test --out report

The first model is the reference (the teacher): every other model's Grad-CAM maps are compared with its maps.
Writes report/index.md (tables and figures), report/metrics.json (every number), and the PNGs.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import fields
from pathlib import Path

# scripts/evaluate.py would shadow the `evaluate` library (imported by trainers.metrics) while this folder is on
# sys.path, as it is when a script here is run directly.
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != Path(__file__).resolve().parent]

import numpy as np
import torch
from transformers import HfArgumentParser

from explain.evaluation import FaithfulnessSettings, score_explanations
from explain.registry import canonical_name
from explain.workflow import Explainer, check_methods_fit, compute_dtype, pick_device
from pipelines import DataArguments, ImageCollator, load_image_dataset, run_cli
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


def main(argv: list[str] | None = None) -> dict:
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
    split = split.select(np.flatnonzero(keep))
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
        scores = score_explanations(
            {n: e.model for n, e in explainers.items()},
            {n: e.pixel_values(images) for n, e in explainers.items()},
            method,
            {n: torch.tensor(space.columns[i])[reference_class] for i, n in enumerate(names)},
            {n: torch.from_numpy(predicted_classes(v[chosen], data.multi_label)) for n, v in logits.items()},
            args.steps,
            args.top_fraction,
            args.batch_size,
            args.seed,
            dtype,
            settings,
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
        "command": "python scripts/evaluate.py " + shlex.join(argv),
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


if __name__ == "__main__":
    run_cli(main)
