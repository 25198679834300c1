"""Every model card this project writes (huggingface_hub's ModelCard) and publishing a model folder to the Hub: the
distilled student's card with its results table, the evaluation report's section in any model's card, and a shrunk
copy's card."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData, get_token

from pipelines.errors import ConfigError, DataError, OfflineError, failure_reason, is_offline
from pipelines.io import atomic_write_text
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


def build_model_card(
    rows: list[ResultRow],
    model_name: str,
    dataset: tuple[str, str],
    base_model: str | None,
    teacher: str,
    commands: list[str],
    distillation: str,
) -> ModelCard:
    """A card for the distilled student (``rows[1]``) with `model-index` test metrics and the results table.

    Args:
        rows: Teacher, distilled student, and (optionally) the no-teacher student.
        model_name: The Hub repo id (or a local name).
        dataset: Identifier and readable name of the dataset evaluated on (`run_outputs.dataset_description`).
        base_model: The student's initial checkpoint (None when it was built from a config).
        teacher: The teacher's folder or Hub id.
        commands: Commands that reproduce the model and the table.
        distillation: One line describing the distillation settings.
    """
    student = rows[1]
    dataset_id, dataset_name = dataset
    eval_results = [
        EvalResult(
            task_type="image-classification",
            dataset_type=dataset_id,
            dataset_name=dataset_name,
            dataset_split="test",
            metric_type=card_metric,
            metric_name=f"test {name}",
            metric_value=float(student.test_metrics[name]),
        )
        for name, card_metric in CARD_METRICS.items()
        if name in student.test_metrics
    ]
    data = card_metadata(
        model_name=model_name,
        base_model=base_model,
        tags=["image-classification", "knowledge-distillation", "see-what-you-shrink"],
        metrics=list(CARD_METRICS.values()),
        eval_results=eval_results,
        teacher=teacher,
    )
    reproduce = "\n".join(commands)
    body = f"""
# {model_name}

A {student.architecture} image classifier distilled from the teacher `{teacher}` on {dataset_name}
({distillation}). Base model: {f"`{base_model}`" if base_model else "none (trained from a config, randomly initialised)"}.

## Results (test split)

{results_markdown(rows)}

## Use

```python
from transformers import pipeline
classifier = pipeline("image-classification", model="{model_name}")
```

## Reproduce

```bash
{reproduce}
```
"""
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")


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


def check_push_possible(repo_id: str) -> None:
    """Refuse before training, not after it, a push that cannot happen: offline, or without a token."""
    if is_offline():
        raise OfflineError(
            f"push_to_hub is true but HF_HUB_OFFLINE is set, so {repo_id} could not be published after training; "
            "unset HF_HUB_OFFLINE, or set push_to_hub: false."
        )
    if get_token() is None:
        raise ConfigError(
            f"push_to_hub is true but there is no Hugging Face token to publish {repo_id} with: log in "
            "(hf auth login), set HF_TOKEN, or give hub_token."
        )


def push_folder(folder: str | Path, repo_id: str, private: bool = True, token: str | None = None) -> str:
    """Create (private by default) and upload the model repo; one sentence on failure, the folder untouched.

    Returns:
        The repo's URL.
    """
    names = files_to_push(folder)
    try:
        api = HfApi(token=token)
        url = api.create_repo(repo_id, private=private, exist_ok=True)
        api.upload_folder(
            folder_path=str(folder),
            repo_id=repo_id,
            allow_patterns=names,
            commit_message="Upload distilled student (see-what-you-shrink)",
        )
    except Exception as error:  # network, auth and offline errors come in many types
        raise OfflineError(
            f"Could not push {folder} to the Hub as {repo_id} ({failure_reason(error, token)}); the local folder is "
            "complete: log in (hf auth login or HF_TOKEN), check the network, and run the push again."
        ) from None
    return str(url)


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
    section = report_markdown.replace("# Evaluation report", SECTION_TITLE, 1)
    section = section.replace("\n## ", "\n### ")
    # The section always follows a newline, so that the split above finds (and replaces) it on the next run.
    card.text = f"{body}\n\n{section}" if body else f"\n{section}"
    atomic_write_text(path, str(card))
    return path


def model_card_text(record: dict[str, Any]) -> str:
    """A shrunk copy's card: front matter, what was done and how to load it (from its ``shrink.json`` record)."""
    details = record["details"]
    metadata = card_metadata(tags=["image-classification", "see-what-you-shrink", record["method"]])
    lines = [
        f"---\n{metadata.to_yaml()}\n---",
        f"# {record['method']} copy of {record['source']}",
        "",
        f"Made with `{record['command']}`.",
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
