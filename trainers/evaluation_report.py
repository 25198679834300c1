"""The evaluation report: every number in metrics.json, and index.md drawn from exactly those numbers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

from pipelines.errors import ConfigError
from pipelines.io import atomic_write_json, atomic_write_text
from trainers.model_cost import latency_text

SECTION_TITLE = "## Evaluation report"


def _f4(value: float) -> str:
    return "n/a" if value is None or value != value else f"{value:.4f}"


def _count(value: int | None) -> str:
    """A count, or n/a for a report written before the count was kept."""
    return "n/a" if value is None else str(value)


BLANK_NOTE = (
    "A blank map (one value throughout, e.g. Grad-CAM's all-zero map when no region supports the class) ranks "
    "nothing, so pairs with a blank map are left out of the means; n/a means no pair was left."
)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown table's lines."""
    return [f"| {' | '.join(header)} |", "|---" * len(header) + "|", *(f"| {' | '.join(cells)} |" for cells in rows)]


def _precision_recall(model: dict[str, Any], labels: list[str]) -> list[str]:
    per_class = model["classification"]["per_class"]
    return [f"{_f4(per_class[label]['precision'])} / {_f4(per_class[label]['recall'])}" for label in labels]


def _cost_cells(cost: dict[str, Any]) -> list[str]:
    return [
        f"{cost['parameters']:,}",
        f"{cost['size_on_disk_mib']:.2f}",
        latency_text(cost["latency_ms_batch_1"], cost["latency_ms_batch_1_quartiles"], 3),
        latency_text(cost["latency_ms_batch_64"], cost["latency_ms_batch_64_quartiles"], 3),
        f"{cost['throughput_images_per_s']:,.0f}",
    ]


def render_markdown(report: dict[str, Any], figures: bool = True) -> str:
    """index.md's text from the report dictionary (also what metrics.json holds), so the two cannot disagree."""
    models = report["models"]
    lines = [
        "# Evaluation report",
        "",
        f"Dataset {report['dataset']}, split `{report['split']}`: {report['images']} images "
        f"({report['explained_images']} explained). Reference model: `{report['reference']}`. "
        f"Measured on {report['device']} ({report['dtype']}).",
        "",
        f"Made by: `{report['command']}`",
        "",
        "## Classification",
        "",
    ]
    lines += _table(
        ["model", "ACC", "AUC", "macro F1", "ECE"],
        [
            [name, *(_f4(model["classification"][key]) for key in ("accuracy", "auc", "f1", "ece"))]
            for name, model in models.items()
        ],
    )
    lines += ["", "Per class (precision / recall):", ""]
    lines += _table(
        ["model", *report["labels"]],
        [[name, *_precision_recall(model, report["labels"])] for name, model in models.items()],
    )
    lines += ["", "## Cost", ""]
    lines += _table(
        [
            "model",
            "parameters",
            "size on disk (MiB)",
            "latency/image, batch 1 (ms): median (quartiles)",
            "latency/image, batch 64 (ms): median (quartiles)",
            "throughput (img/s)",
        ],
        [[name, *_cost_cells(model["cost"])] for name, model in models.items()],
    )
    lines += [
        "",
        "## Explanations",
        "",
        f"Faithfulness: deletion and insertion curves with {report['steps']} steps (RISE); the random row of each "
        "model uses uniform random maps on the same images. Lower deletion and higher insertion areas are better.",
        "",
    ]
    curves = ("deletion_auc", "random_deletion_auc", "insertion_auc", "random_insertion_auc")
    lines += _table(
        ["model", "method", "deletion AUC", "random deletion AUC", "insertion AUC", "random insertion AUC"],
        [
            [name, method, *(_f4(numbers[key]) for key in curves)]
            for name, model in models.items()
            for method, numbers in model["faithfulness"].items()
        ],
    )
    lines += [
        "",
        "Sanity check (model-parameter randomisation): mean rank correlation between each model's maps and the maps "
        "of the same architecture with re-initialised weights. Low is good: the maps depend on what was learnt. "
        + BLANK_NOTE,
        "",
    ]
    lines += _table(
        [
            "model",
            "method",
            "rank correlation with re-initialised model",
            "pairs compared",
            "blank maps (trained / re-initialised)",
        ],
        [
            [
                name,
                method,
                _f4(numbers["rank_correlation_mean"]),
                _count(numbers.get("pairs")),
                f"{_count(numbers.get('blank_maps'))} / {_count(numbers.get('blank_reinitialised_maps'))}",
            ]
            for name, model in models.items()
            for method, numbers in model["randomization"].items()
        ],
    )
    iou_key = f"top{report['top_percent']}_iou_mean"
    lines += [
        "",
        f"Agreement with the reference (`{report['reference']}`): per image, the rank correlation and the overlap "
        f"(IoU) of the top {report['top_percent']}% pixels between the reference's map and the model's map for the "
        "same class, and how often the two predict the same (over every image). " + BLANK_NOTE,
        "",
    ]
    lines += _table(
        [
            "model",
            "method",
            "mean rank correlation",
            f"mean top-{report['top_percent']}% IoU",
            "same prediction",
            "pairs compared",
            "blank maps (reference / model)",
        ],
        [
            [
                name,
                method,
                *(_f4(numbers[key]) for key in ("rank_correlation_mean", iou_key, "prediction_agreement")),
                _count(numbers.get("pairs")),
                f"{_count(numbers.get('blank_reference_maps'))} / {_count(numbers.get('blank_maps'))}",
            ]
            for name, model in models.items()
            for method, numbers in model.get("agreement", {}).items()
        ],
    )
    if figures:
        lines += ["", "## Figures", ""]
        for title, file_name in report["figures"].items():
            lines += [f"### {title}", "", f"![{title}]({file_name})", ""]
    return "\n".join(lines).rstrip() + "\n"


def write_report(out: str | Path, report: dict[str, Any]) -> Path:
    """Write metrics.json and index.md into `out`; returns the path of index.md."""
    out = Path(out)
    atomic_write_json(out / "metrics.json", report)
    atomic_write_text(out / "index.md", render_markdown(report))
    return out / "index.md"


def check_model_card_folder(model_folder: str | Path) -> Path:
    """The model folder whose card gets the report; checked before the evaluation, so that a mistyped path is
    refused at once instead of after minutes of work (and never created: a card without its model is no card).

    Raises:
        ConfigError: the folder does not exist or is not a folder.
    """
    folder = Path(model_folder)
    if not folder.is_dir():
        problem = "is a file, not a folder" if folder.exists() else "does not exist"
        raise ConfigError(
            f"Model card folder {folder} {problem}; give the folder of the model whose card gets the report."
        )
    return folder


def card_metadata() -> ModelCardData:
    """Front matter for a card that has none: every model this project evaluates is a transformers image classifier."""
    return ModelCardData(library_name="transformers", pipeline_tag="image-classification")


def fold_into_model_card(model_folder: str | Path, report: dict[str, Any]) -> Path:
    """Put the report's tables into the model's card (README.md) as its 'Evaluation report' section, replacing
    an earlier one; figures stay in the report folder.

    Raises:
        ConfigError: `model_folder` does not exist.
    """
    path = check_model_card_folder(model_folder) / "README.md"
    card = ModelCard.load(path) if path.is_file() else ModelCard(f"---\n{card_metadata().to_yaml()}\n---\n")
    if not card.data.to_dict():  # a README without front matter: str(card) would write an empty `{}` block
        card.data = card_metadata()
    body = card.text.split(f"\n{SECTION_TITLE}\n")[0].rstrip()
    section = render_markdown(report, figures=False).replace("# Evaluation report", SECTION_TITLE, 1)
    section = section.replace("\n## ", "\n### ")
    # The section always follows a newline, so that the split above finds (and replaces) it on the next run.
    card.text = f"{body}\n\n{section}" if body else f"\n{section}"
    atomic_write_text(path, str(card))
    return path
