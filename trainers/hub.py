"""Model cards (huggingface_hub's ModelCard) and publishing a model folder to the Hub."""

from __future__ import annotations

import os
from pathlib import Path

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData, get_token

from pipelines.errors import ConfigError, DataError, OfflineError, is_offline
from pipelines.io import atomic_write_text
from trainers.results import ResultRow, results_markdown

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
        dataset: Identifier and readable name of the dataset evaluated on (see `reporting.dataset_description`).
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
    data = ModelCardData(
        model_name=model_name,
        base_model=base_model,
        library_name="transformers",
        pipeline_tag="image-classification",
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
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        secret = token or os.environ.get("HF_TOKEN")  # scripts pass the token there (see arguments.hide_hub_token)
        if secret:
            reason = reason.replace(secret, "***")
        raise OfflineError(
            f"Could not push {folder} to the Hub as {repo_id} ({type(error).__name__}: {reason}); the local folder is "
            "complete: log in (hf auth login or HF_TOKEN), check the network, and run the push again."
        ) from None
    return str(url)
