"""Every model card this project writes (huggingface_hub's ModelCard) and publishing a model folder to the Hub: the
fine-tuned model's card, the distilled student's card with its results table, the evaluation report's section in any
model's card, and a shrunk copy's card. Each card is written to be published: intended use and limitations, models
and datasets by Hub id, no path of this machine."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import tempfile
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData

from pipelines.errors import ConfigError, DataError, OfflineError, failure_reason
from pipelines.io import atomic_write_text
from pipelines.publishing import check_push_possible
from trainers.distill_results import ResultRow, results_markdown

# What a published model folder holds: enough for `pipeline("image-classification", model=repo_id)`, its card,
# and the figures behind it. Checkpoints and cached teacher logits stay local.
PUSHED_FILES = (
    "model.safetensors",
    "config.json",
    "preprocessor_config.json",
    "README.md",
    "results.md",
    "results.json",
    "metrics.json",
    "training_curves.png",
    "confusion_matrix.png",
)
REQUIRED_FILES = ("model.safetensors", "config.json", "preprocessor_config.json", "README.md")
CARD_METRICS = {"accuracy": "accuracy", "auc": "roc_auc", "f1": "f1"}


# A card is written to be published: it names models and datasets by their Hub ids, never by a path on this machine
# (a path says nothing to a reader, and can say too much about the machine: user names, project folders).
LOCAL_MODEL = "a locally trained model"
# The card's first section after the title; `fold_into_model_card` adds it to a card that lacks it.
INTENDED_USE_TITLE = "## Intended use and limitations"


def build_model_card(
    rows: list[ResultRow],
    model_name: str,
    dataset: tuple[str, str],
    base_model: str | None,
    teacher: str,
    commands: list[str],
    distillation: str,
    model_folder: str | Path,
) -> ModelCard:
    """A card for the distilled student (``rows[1]``) with `model-index` test metrics and the results table.

    Args:
        rows: Teacher, distilled student, and (optionally) the no-teacher student.
        model_name: The Hub repo id, or the student's folder (of which the card shows the name only).
        dataset: Identifier and readable name of the dataset evaluated on (`run_outputs.dataset_description`).
        base_model: The student's initial checkpoint, a Hub id or a folder (None when it was built from a config).
        teacher: The teacher's folder or Hub id.
        commands: Commands that reproduce the model and the table.
        distillation: One line describing the distillation settings.
        model_folder: The student's saved folder (its labels and input size go into the limitations).
    """
    student = rows[1]
    dataset_id, dataset_name = dataset
    base = hub_base_model(base_model)
    teacher_id = None if is_local_path(teacher) else teacher
    data = card_metadata(
        model_name=public_model_name(model_name),
        base_model=base,
        datasets=[dataset_id] if dataset_is_on_the_hub(dataset_id) else None,
        tags=["image-classification", "knowledge-distillation", "see-what-you-shrink"],
        metrics=list(CARD_METRICS.values()),
        eval_results=card_eval_results(student.test_metrics, dataset),
        **({"teacher": teacher_id} if teacher_id else {}),
    )
    body = f"""
# {public_model_name(model_name)}

A {student.architecture} image classifier distilled from the teacher {quoted_or(teacher_id, f"({LOCAL_MODEL})")} on
{dataset_name} ({distillation}). Base model: {base_model_text(base_model, base)}.

{intended_use_section(model_folder, dataset_name)}

## Results (test split)

{results_markdown(rows)}

## Use

{use_snippet(model_name)}

## Reproduce

```bash
{chr(10).join(public_command(command) for command in commands)}
```
"""
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")


def build_finetune_card(
    report: dict[str, dict[str, Any]],
    model_name: str,
    dataset: tuple[str, str],
    base_model: str | None,
    command: str,
    model_folder: str | Path,
    architecture: str,
) -> ModelCard:
    """A fine-tuned model's card: `model-index` test metrics, the validation and test table, its limitations.

    Args:
        report: Metrics by split, as `run_outputs.evaluate_and_report` returns them.
        model_name: The Hub repo id, or the model's folder (of which the card shows the name only).
        dataset: Identifier and readable name of the dataset (`run_outputs.dataset_description`).
        base_model: The initial checkpoint, a Hub id or a folder (None when the model was built from a config).
        command: The command that made the model.
        model_folder: The saved model's folder.
        architecture: The model type, e.g. ``vit``.
    """
    dataset_id, dataset_name = dataset
    base = hub_base_model(base_model)
    data = card_metadata(
        model_name=public_model_name(model_name),
        base_model=base,
        datasets=[dataset_id] if dataset_is_on_the_hub(dataset_id) else None,
        tags=["image-classification", "see-what-you-shrink"],
        metrics=list(CARD_METRICS.values()),
        eval_results=card_eval_results(report["test"], dataset),
    )
    rows = [
        f"| {split} | {metrics.get('samples', '')} | "
        + " | ".join(f"{metrics[name]:.4f}" if name in metrics else "" for name in CARD_METRICS)
        + " |"
        for split, metrics in report.items()
    ]
    body = f"""
# {public_model_name(model_name)}

A {architecture} image classifier fine-tuned on {dataset_name}. Base model: {base_model_text(base_model, base)}.

{intended_use_section(model_folder, dataset_name)}

## Results

| split | images | ACC | AUC | macro F1 |
|---|---|---|---|---|
{chr(10).join(rows)}

## Use

{use_snippet(model_name)}

## Reproduce

```bash
{public_command(command)}
```
"""
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")


def card_eval_results(metrics: dict[str, Any], dataset: tuple[str, str]) -> list[EvalResult]:
    """The card's `model-index` entries: the test split's metrics that the Hub knows by name."""
    dataset_id, dataset_name = dataset
    return [
        EvalResult(
            task_type="image-classification",
            dataset_type=dataset_id,
            dataset_name=dataset_name,
            dataset_split="test",
            metric_type=card_metric,
            metric_name=f"test {name}",
            metric_value=float(metrics[name]),
        )
        for name, card_metric in CARD_METRICS.items()
        if name in metrics
    ]


def intended_use_section(model_folder: str | Path, dataset_name: str | None) -> str:
    """What the model is for and what it cannot do, from its saved config (labels) and image processor (input size).

    Args:
        dataset_name: The data it was trained and evaluated on; None when the card does not know (a report folded
            into another model's card names its evaluation data below).
    """
    folder = Path(model_folder)
    config = json.loads((folder / "config.json").read_text()) if (folder / "config.json").is_file() else {}
    labels = config.get("id2label", {})
    label_text = ", ".join(f"'{labels[key]}'" for key in sorted(labels, key=int)) or "its training labels"
    trained_on = (
        f"Trained and evaluated on {dataset_name} only: its results describe that dataset's test split,"
        if dataset_name
        else "Its results (below) describe the data it was evaluated on only,"
    )
    return f"""{INTENDED_USE_TITLE}

- For research only: studying image classifiers, their compression and their explanations (saliency maps). It is
  not a medical device, was not validated clinically, and must not be used for clinical decisions (diagnosis,
  treatment or triage).
- {trained_on} not images from other hospitals, scanners, populations or protocols.
- It classifies every image resized to {input_size_text(folder)}, the size it was trained at: detail lost at that
  size is invisible to it.
- {answers_text(config, label_text)}
- Its saliency maps show which pixels moved its prediction, not where a finding is, and are no evidence that a
  prediction is right."""


def answers_text(config: dict[str, Any], label_text: str) -> str:
    if config.get("problem_type") == "multi_label_classification":
        return f"It says, for every image, which of {label_text} it shows; it knows no other finding."
    return f"It answers with one of {label_text} for every image, including images that show none of them."


def input_size_text(model_folder: Path) -> str:
    """The saved image processor's size, e.g. '64x64 px' (`size` holds height and width, or a shortest edge)."""
    path = model_folder / "preprocessor_config.json"
    size = json.loads(path.read_text()).get("size") if path.is_file() else None
    if isinstance(size, dict) and "height" in size and "width" in size:
        return f"{size['height']}x{size['width']} px"
    if isinstance(size, dict) and "shortest_edge" in size:
        return f"a shortest edge of {size['shortest_edge']} px"
    return "the model's input size"


def is_local_path(name_or_path: str) -> bool:
    """Whether `name_or_path` is a path on this machine rather than a Hub id (which is never absolute and never
    starts with '.' or '~')."""
    path = Path(name_or_path)
    return path.is_absolute() or name_or_path.startswith((".", "~")) or path.exists()


def hub_base_model(name_or_path: str | None) -> str | None:
    """The Hub id a model started from: `name_or_path` when it is one; for a local folder, the base model its own
    card records, when that is a Hub id (config.json does not record where a model came from); else None."""
    if not name_or_path:
        return None
    if not is_local_path(name_or_path):
        return name_or_path
    card_path = Path(name_or_path) / "README.md"
    try:
        recorded = ModelCard.load(card_path).data.base_model if card_path.is_file() else None
    except (OSError, ValueError):  # a README whose front matter is not YAML records nothing readable
        recorded = None
    recorded = recorded[0] if isinstance(recorded, list) and recorded else recorded
    return recorded if isinstance(recorded, str) and not is_local_path(recorded) else None


def base_model_text(name_or_path: str | None, hub_id: str | None) -> str:
    if name_or_path is None:
        return "none (trained from a config, randomly initialised)"
    if is_local_path(name_or_path):
        return f"{LOCAL_MODEL} (itself from `{hub_id}`)" if hub_id else LOCAL_MODEL
    return f"`{hub_id}`"


def quoted_or(hub_id: str | None, fallback: str) -> str:
    return f"`{hub_id}`" if hub_id else fallback


def public_model_name(model_name: str) -> str:
    """The model's Hub id, or the name (never the path) of its local folder."""
    return Path(model_name).name if is_local_path(model_name) else model_name


def use_snippet(model_name: str) -> str:
    model = "path/to/this/model" if is_local_path(model_name) else model_name
    return f"""```python
from transformers import pipeline
classifier = pipeline("image-classification", model="{model}")
```"""


def dataset_is_on_the_hub(dataset_id: str) -> bool:
    """MedMNIST, image folders and datasets on this machine are not Hub datasets (`run_outputs.dataset_description`
    names them 'medmnist/<flag>', 'imagefolder' and 'local-dataset'); any other identifier is the Hub id the data was
    loaded from."""
    return not dataset_id.startswith("medmnist/") and dataset_id not in ("imagefolder", "local-dataset")


def public_command(command: str) -> str:
    """`command` with every local path (a model or data folder, an output folder, a config outside the project)
    replaced by ``<its name>``; the project's own scripts and configs stay, so that the recipe still reads."""

    def public(value: str) -> str:
        if is_project_file(value) or not is_local_path(value):
            return value
        return f"<{Path(value).name or value}>"

    def quoted(word: str) -> str:
        return word if word.startswith("<") and word.endswith(">") else shlex.quote(word)

    try:
        split = shlex.split(command)
    except ValueError:  # unbalanced quotes (a command written by hand): words as they stand
        split = command.split()
    words = []
    for word in split:
        key, equals, value = word.partition("=")
        if word.startswith("--") and equals:
            words.append(f"{shlex.quote(key)}={quoted(public(value))}")
        else:
            words.append(quoted(public(word)))
    return " ".join(words)


def is_project_file(path: str) -> bool:
    """A file of this project's recipe (scripts/, configs/), named relative to the project, as its commands do."""
    return not Path(path).is_absolute() and Path(path).parts[:1] in (("scripts",), ("configs",))


def write_model_card(folder: str | Path, card: ModelCard) -> Path:
    path = Path(folder) / "README.md"
    atomic_write_text(path, str(card))
    return path


def files_to_push(folder: str | Path) -> list[str]:
    """The files of `folder` a push publishes; raises if a required one is missing."""
    folder = Path(folder)
    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    if missing:
        raise DataError(f"{folder} is not ready to publish: it lacks {', '.join(missing)}.")
    return [name for name in PUSHED_FILES if (folder / name).is_file()]


def planned_push(training_args: Any) -> str | None:
    """The repo a run publishes its model folder to, once, after its evaluation (None: it publishes nothing).

    Trainer's own push is turned off: it would create the repo before training (and fail there, with a traceback,
    offline) and push every checkpoint. A push that cannot happen is refused now, before any work. The repo is
    ``hub_model_id``, else the output folder's name (Trainer's rule).
    """
    if not training_args.push_to_hub:
        return None
    training_args.push_to_hub = False
    repo_id = training_args.hub_model_id or Path(training_args.output_dir).absolute().name
    check_push_possible(repo_id)
    return repo_id


def push_folder(
    folder: str | Path,
    repo_id: str,
    private: bool = True,
    token: str | None = None,
    commit_message: str = "Upload distilled student (see-what-you-shrink)",
) -> str:
    """Create (private by default) and upload the model repo; one sentence on failure, the folder untouched.

    Returns:
        The repo's URL.
    """
    names = files_to_push(folder)
    with tempfile.TemporaryDirectory(prefix="publish-") as staging:
        stage_for_publishing(Path(folder), names, Path(staging))
        try:
            api = HfApi(token=token)
            url = api.create_repo(repo_id, private=private, exist_ok=True)
            api.upload_folder(
                folder_path=staging,
                repo_id=repo_id,
                allow_patterns=names,
                commit_message=commit_message,
            )
        except Exception as error:  # network, auth and offline errors come in many types
            raise OfflineError(
                f"Could not push {folder} to the Hub as {repo_id} ({failure_reason(error, token)}); the local folder "
                "is complete: log in (hf auth login or HF_TOKEN), check the network, and run the push again."
            ) from None
    return str(url)


# The published files that may quote paths of this machine: the commands recorded in metrics.json and results.json
# (and results.md), the models of results.json's rows.
TEXT_FILES = ("README.md", "results.md", "results.json", "metrics.json")


def stage_for_publishing(folder: Path, names: list[str], staging: Path) -> None:
    """The files `names` of `folder` as they are published, in `staging`: the text files with every local path they
    record replaced by ``<its name>``; the others linked (or copied, across file systems). The folder is untouched:
    its records keep the paths, which reproduce the run on this machine."""
    paths = recorded_local_paths(folder)
    for name in names:
        source, target = folder / name, staging / name
        if name in TEXT_FILES:
            atomic_write_text(target, without_local_paths(source.read_text(), paths))
            continue
        try:
            os.link(source, target)
        except OSError:
            shutil.copy2(source, target)


def recorded_local_paths(folder: Path) -> list[str]:
    """The paths of this machine that `folder`'s metrics.json and results.json record: words of their commands
    (outside the project's scripts/ and configs/), the models of the results' rows, and the folder itself."""
    commands, models = [], []
    for name in ("metrics.json", "results.json"):
        path = folder / name
        record = json.loads(path.read_text()) if path.is_file() else {}
        commands.append(record.get("command") or "")
        models += [row.get("model") or "" for row in record.get("rows", [])]
    words = [word.partition("=")[2] if word.startswith("--") else word for c in commands for word in c.split()]
    found = {word for word in [*words, *models, str(folder)] if word and is_local_path(word)}
    # A bare folder name ('student') says nothing about this machine, and replacing it would hit ordinary words.
    found = {path for path in found if "/" in path and not is_project_file(path)}
    return sorted(found, key=len, reverse=True)  # a folder's subfolders first


def without_local_paths(text: str, paths: list[str]) -> str:
    for path in paths:
        text = re.sub(rf"(?<![\w./-]){re.escape(path)}(?![\w./-])", f"<{Path(path).name}>", text)
    return text


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


def card_metadata(**fields: Any) -> ModelCardData:
    """A card's front matter: every model this project makes or evaluates is a transformers image classifier; the
    `fields` add to that (model name, base model, results...)."""
    return ModelCardData(library_name="transformers", pipeline_tag="image-classification", **fields)


# The heading of the evaluation report's section in a model card, which a later report replaces.
SECTION_TITLE = "## Evaluation report"
MADE_BY = re.compile(r"^Made by: `([^`]*)`", re.MULTILINE)


def fold_into_model_card(model_folder: str | Path, report_markdown: str) -> Path:
    """Put the report (its index.md text without figures) into the model's card (README.md) as its 'Evaluation
    report' section, replacing an earlier one; figures stay in the report folder.

    Raises:
        ConfigError: `model_folder` does not exist.
    """
    path = check_model_card_folder(model_folder) / "README.md"
    card = ModelCard.load(path) if path.is_file() else ModelCard(f"---\n{card_metadata().to_yaml()}\n---\n")
    if not card.data.to_dict():  # a README without front matter: str(card) would write an empty `{}` block
        card.data = card_metadata()
    body = card.text.split(f"\n{SECTION_TITLE}\n")[0].rstrip()
    if INTENDED_USE_TITLE not in body:  # a card this project did not write (or wrote before issue 29)
        body = f"{body}\n\n{intended_use_section(model_folder, None)}".lstrip("\n")
    section = report_markdown.replace("# Evaluation report", SECTION_TITLE, 1)
    section = section.replace("\n## ", "\n### ")
    # The report names its models by folder name, but its command by their paths on this machine.
    section = MADE_BY.sub(lambda match: f"Made by: `{public_command(match.group(1))}`", section)
    # The section always follows a newline, so that the split above finds (and replaces) it on the next run.
    card.text = f"{body}\n\n{section}" if body else f"\n{section}"
    atomic_write_text(path, str(card))
    return path


def model_card_text(record: dict[str, Any], model_folder: str | Path) -> str:
    """A shrunk copy's card: front matter, what was done and how to load it (from its ``shrink.json`` record), and
    its limitations (from the copy saved in `model_folder`)."""
    details = record["details"]
    source = record["source"]
    base = hub_base_model(source)
    metadata = card_metadata(base_model=base, tags=["image-classification", "see-what-you-shrink", record["method"]])
    lines = [
        f"---\n{metadata.to_yaml()}\n---",
        f"# {record['method']} copy of {public_model_name(source)}",
        "",
        f"Made with `{public_command(record['command'])}`.",
        "",
    ]
    if record["method"] == "int8":
        lines += [
            f"- {details['library']}; {details['scheme']}.",
            f"- Quantized: {len(details['quantized_modules'])} {details['layers']} modules, "
            f"{details['quantized_weight_share']:.1%} of the parameters; everything else stays float32.",
            f"- Gradients (Grad-CAM): {details['gradients']}.",
            *([f"- Speed: {details['speed']}."] if "speed" in details else []),
            load_instructions(details),
        ]
    else:
        lines += [
            f"- {details['library']}; ratio {details['ratio']}.",
            f"- Parameters: {details['parameters_before']:,} -> {details['parameters_after']:,} "
            f"({details['parameters_removed_fraction']:.1%} fewer).",
            f"- New config fields: {json.dumps(details['config_changes'])}.",
        ]
        if record.get("recovery"):
            lines.append(f"- Recovery fine-tune: {json.dumps(record['recovery'])}.")
    lines += ["", intended_use_section(model_folder, None)]
    return "\n".join(lines) + "\n"


def load_instructions(details: dict[str, Any]) -> str:
    if "quantization_map" in details:
        return (
            '- Load it with `pipelines.load_classifier` (it needs optimum-quanto: `pip install -e ".[shrink]"`); '
            "transformers cannot serialize quanto models, so a plain `from_pretrained` does not give the int8 model."
        )
    return (
        "- `AutoModelForImageClassification.from_pretrained` loads it (it needs torchao: "
        '`pip install -e ".[shrink]"`); load it with `pipelines.load_classifier` for Grad-CAM\'s gradients.'
    )
