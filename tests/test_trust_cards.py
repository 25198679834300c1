"""Issue 29, finding 7: every model card this project writes (fine-tuned, distilled, shrunk, and the report's section
in any card) says what the model is for and what it cannot do, names models and datasets by their Hub ids, and holds
no path of this machine."""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import ModelCard

import trainers.hub as hub
from pipelines import DataArguments
from trainers.run_outputs import dataset_description

from helpers.data import make_medmnist_npz, tiny_run_config, write_config
from helpers.distill import distill_config, save_teacher
from helpers.models import TINY_RESNET, save_classifier
from helpers.project import load_script

finetune = load_script("finetune").main
distill = load_script("distill").main

INTENDED_USE = "## Intended use and limitations"
NOT_CLINICAL = "must not be used for clinical decisions"
REPORT = """# Evaluation report

Dataset breastmnist, split `test`: 16 images (16 explained). Reference model: `teacher`.

Made by: `python scripts/report.py --models {root}/teacher {root}/student --model_card {root}/student --split test`

## Classification
"""


def assert_publishable(card: ModelCard, tmp_path: Path) -> None:
    """The intended-use section, and no path of this machine anywhere (front matter included)."""
    text = str(card)
    assert f"\n{INTENDED_USE}\n" in text and NOT_CLINICAL in " ".join(text.split())
    assert str(tmp_path) not in text and "/tmp" not in text


def test_distilled_card_has_intended_use_and_no_local_paths(tmp_path: Path) -> None:
    distill([str(distill_config(tmp_path, train_baseline=False))])
    card = ModelCard.load(tmp_path / "student" / "README.md")
    assert_publishable(card, tmp_path)
    assert "'malignant', 'normal, benign'" in card.text and "32x32 px" in card.text  # its labels and input size
    assert "teacher" not in card.data.to_dict()  # a local folder, not a Hub id
    assert "python scripts/distill.py <distill.yaml>" in card.text  # the recipe, without the config's path
    assert card.data.model_name == "student"


def test_finetune_card_names_the_base_model_by_its_hub_id(tmp_path: Path) -> None:
    """A model fine-tuned from a local folder whose own card records a Hub base model gets that Hub id."""
    make_medmnist_npz(tmp_path / "data" / "breastmnist.npz")
    base = save_teacher(tmp_path / "base")
    (base / "README.md").write_text("---\nbase_model: someone/tiny-resnet\n---\n# base\n")
    values = tiny_run_config(tmp_path, tmp_path / "data", max_steps=2, model_name_or_path=str(base))
    del values["model_config"]
    finetune([str(write_config(tmp_path / "run.yaml", **values))])
    card = ModelCard.load(tmp_path / "run" / "README.md")
    assert_publishable(card, tmp_path)
    assert card.data.base_model == "someone/tiny-resnet"
    assert "Base model: a locally trained model (itself from `someone/tiny-resnet`)" in card.text
    assert card.data.datasets is None  # MedMNIST is not a Hub dataset
    assert [result.dataset_type for result in card.data.eval_results] == ["medmnist/breastmnist"] * 3


def test_a_hub_dataset_and_base_model_are_linked_by_their_ids(tmp_path: Path) -> None:
    folder = Path(save_classifier(tmp_path / "model", TINY_RESNET))
    report = {"validation": {"samples": 4, "accuracy": 0.5}, "test": {"samples": 4, "accuracy": 0.75, "auc": 0.8}}
    card = hub.build_finetune_card(
        report,
        model_name="someone/model",
        dataset=("someone/xrays", "someone/xrays"),
        base_model="microsoft/resnet-18",
        command=f"python scripts/finetune.py {tmp_path}/run.yaml --output_dir={tmp_path}/model",
        model_folder=folder,
        architecture="resnet",
    )
    assert_publishable(card, tmp_path)
    assert (card.data.datasets, card.data.base_model, card.data.model_name) == (
        ["someone/xrays"],
        "microsoft/resnet-18",
        "someone/model",
    )
    assert "python scripts/finetune.py <run.yaml> --output_dir=<model>" in card.text
    assert 'pipeline("image-classification", model="someone/model")' in card.text
    assert "| test | 4 | 0.7500 | 0.8000 |  |" in card.text


def test_the_report_section_adds_intended_use_and_drops_local_paths(tmp_path: Path) -> None:
    folder = Path(save_classifier(tmp_path / "student", TINY_RESNET))
    (folder / "README.md").write_text("---\nlibrary_name: transformers\n---\n# Student\n\nIntro.\n")
    hub.fold_into_model_card(folder, REPORT.format(root=tmp_path))
    card = ModelCard.load(folder / "README.md")
    assert_publishable(card, tmp_path)
    assert "Made by: `python scripts/report.py --models <teacher> <student> --model_card <student> --split test`" in (
        card.text
    )
    assert card.text.index("Intro.") < card.text.index(INTENDED_USE) < card.text.index("## Evaluation report")
    hub.fold_into_model_card(folder, REPORT.format(root=tmp_path))  # a second report: one intended-use section still
    assert ModelCard.load(folder / "README.md").text.count(INTENDED_USE) == 1


def test_a_shrunk_copy_card_has_intended_use_and_no_local_paths(tmp_path: Path) -> None:
    folder = Path(save_classifier(tmp_path / "pruned", TINY_RESNET))
    record = {
        "method": "prune",
        "source": str(tmp_path / "teacher"),
        "command": f"python scripts/shrink.py --model {tmp_path}/teacher --method prune --out {folder}",
        "details": {
            "library": "torch-pruning",
            "ratio": 0.5,
            "parameters_before": 100,
            "parameters_after": 50,
            "parameters_removed_fraction": 0.5,
            "config_changes": {"hidden_sizes": [8, 16]},
        },
        "recovery": None,
    }
    card = ModelCard(hub.model_card_text(record, folder))
    assert_publishable(card, tmp_path)
    assert card.text.lstrip().startswith("# prune copy of teacher\n")
    assert "Made with `python scripts/shrink.py --model <teacher> --method prune --out <pruned>`." in card.text


def test_a_dataset_repo_on_this_machine_is_named_not_linked(tmp_path: Path) -> None:
    (tmp_path / "xrays").mkdir()
    args = DataArguments(dataset_source="hub", dataset_name=str(tmp_path / "xrays"))
    dataset = dataset_description(args)
    assert dataset == ("local-dataset", "local dataset xrays")
    folder = Path(save_classifier(tmp_path / "model", TINY_RESNET))
    report = {"test": {"samples": 4, "accuracy": 0.75}}
    card = hub.build_finetune_card(report, str(folder), dataset, None, "python scripts/finetune.py x", folder, "resnet")
    assert_publishable(card, tmp_path)
    assert card.data.datasets is None and "Trained and evaluated on local dataset xrays only" in card.text
