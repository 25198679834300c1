"""scripts/evaluate.py end to end on tiny models: the report's files, its numbers, bad input, the model card."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import PROCESSOR_32, TINY_RESNET, TINY_VIT, load_script, make_medmnist_npz
from huggingface_hub import ModelCard

from pipelines import ConfigError, UserFacingError
from pipelines.models import build_classifier
from trainers.evaluation_report import fold_into_model_card

main = load_script("evaluate").main
LABELS = ["malignant", "normal, benign"]


def save_model(folder: Path, config: dict, labels: list[str] = LABELS) -> Path:
    model, processor = build_classifier(config, labels, image_processor_config=PROCESSOR_32)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("evaluate")
    make_medmnist_npz(root / "data" / "breastmnist.npz", counts=(8, 6, 11))
    save_model(root / "teacher", TINY_RESNET)
    save_model(root / "student", TINY_VIT)
    return root


def arguments(root: Path, *models: str, **extra: object) -> list[str]:
    values = {
        "dataset_name": "breastmnist",
        "data_dir": str(root / "data"),
        "verify_md5": "false",
        "out": str(root / "report"),
        "explain_images": 6,
        "steps": 3,
        "latency_repeats": 2,
        "device": "cpu",
        "sample_images": 2,
        **extra,
    }
    argv = ["--models", *[str(root / model) for model in (models or ("teacher", "student"))]]
    for key, value in values.items():
        argv += [f"--{key}", str(value)]
    return argv


@pytest.fixture(scope="module")
def report(setup: Path) -> dict:
    return main(arguments(setup))


def test_report_files_exist(setup: Path, report: dict) -> None:
    out = setup / "report"
    assert (out / "index.md").is_file()
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(report))
    for file_name in report["figures"].values():
        assert (out / file_name).is_file(), file_name
    assert {
        "roc.png",
        "reliability.png",
        "accuracy_latency.png",
        "probabilities.png",
        "faithfulness_gradcam.png",
        "agreement_gradcam.png",
    } <= set(report["figures"].values())
    assert len([f for f in report["figures"].values() if f.startswith("confusion_")]) == 2


def test_report_holds_every_measurement(report: dict) -> None:
    assert report["images"] == 11 and report["explained_images"] == 6 and report["reference"] == "teacher"
    for name in ("teacher", "student"):
        model = report["models"][name]
        assert {"accuracy", "auc", "f1", "ece", "per_class"} <= set(model["classification"])
        cost = model["cost"]
        assert cost["parameters"] > 0
        assert (
            0
            < cost["latency_ms_batch_1_quartiles"][0]
            <= cost["latency_ms_batch_1"]
            <= cost["latency_ms_batch_1_quartiles"][1]
        )
        assert {"deletion_auc", "insertion_auc", "random_deletion_auc", "random_insertion_auc"} <= set(
            model["faithfulness"]["gradcam"]
        )
        assert -1 <= model["randomization"]["gradcam"]["rank_correlation_mean"] <= 1
    assert "agreement" not in report["models"]["teacher"]
    assert set(report["models"]["student"]["agreement"]["gradcam"]) == {
        "rank_correlation_mean",
        "top10_iou_mean",
        "prediction_agreement",
        "images",
    }


def _formatted_numbers(value: object) -> set[str]:
    if isinstance(value, dict):
        return set().union(*(_formatted_numbers(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(_formatted_numbers(v) for v in value)) if value else set()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return set()
    return {f"{value:.4f}", f"{value:.3f}", f"{value:.2f}", f"{value:,}", f"{value:,.0f}", str(value)}


def test_every_number_the_markdown_shows_is_in_the_json(setup: Path, report: dict) -> None:
    known = _formatted_numbers(report)
    markdown = (setup / "report" / "index.md").read_text()
    rows = [line for line in markdown.splitlines() if line.startswith("| ") and not line.startswith("| model")]
    shown = [number for row in rows for cell in row.split("|")[2:] for number in re.findall(r"-?\d[\d,]*\.?\d*", cell)]
    assert len(shown) > 30
    missing = [number for number in shown if number not in known]
    assert not missing, missing


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"split": "train2"}, "split is 'train2'"),
        ({"steps": 1}, "K >= 2"),
        ({"methods": "magic"}, "Unknown explanation method"),
    ],
)
def test_bad_arguments_are_one_sentence(setup: Path, extra: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        main(arguments(setup, **extra))


def test_models_with_other_labels_are_refused_or_limited_to_shared_labels(setup: Path) -> None:
    save_model(setup / "three", TINY_RESNET, ["normal, benign", "other", "malignant"])
    with pytest.raises(ConfigError, match="allow_label_mismatch"):
        main(arguments(setup, "teacher", "three"))
    limited = main(arguments(setup, "teacher", "three", allow_label_mismatch="true", out=str(setup / "limited")))
    assert limited["labels"] == LABELS
    assert set(limited["models"]["three"]["classification"]["per_class"]) == set(LABELS)


def test_report_folds_into_a_model_card_once(setup: Path) -> None:
    card_folder = setup / "student"
    (card_folder / "README.md").write_text("---\nlibrary_name: transformers\n---\n# Student\n\nIntro.\n")
    for _ in range(2):
        main(arguments(setup, model_card=str(card_folder), out=str(setup / "carded")))
    card = ModelCard.load(card_folder / "README.md")
    assert card.data.library_name == "transformers"
    assert card.text.count("## Evaluation report") == 1 and "Intro." in card.text
    assert "### Classification" in card.text and "![" not in card.text


def test_a_missing_model_card_folder_is_refused_before_any_evaluation(setup: Path) -> None:
    out, missing = setup / "not_written", setup / "no_such_model"
    with pytest.raises(ConfigError, match=f"Model card folder {re.escape(str(missing))} does not exist"):
        main(arguments(setup, model_card=str(missing), out=str(out)))
    assert not missing.exists() and not out.exists()


@pytest.mark.parametrize("readme", [None, "# Student\n\nIntro.\n"])
def test_a_new_card_gets_valid_front_matter(setup: Path, report: dict, tmp_path: Path, readme: str | None) -> None:
    if readme is not None:  # a README without front matter
        (tmp_path / "README.md").write_text(readme)
    for _ in range(2):
        fold_into_model_card(tmp_path, report)
    text = (tmp_path / "README.md").read_text()
    assert text.startswith("---\nlibrary_name: transformers\npipeline_tag: image-classification\n---\n")
    assert "{}" not in text and text.count("---\n") == 2
    card = ModelCard.load(tmp_path / "README.md")
    assert card.data.to_dict() == {"library_name": "transformers", "pipeline_tag": "image-classification"}
    assert card.text.count("## Evaluation report") == 1 and "### Classification" in card.text
    assert ("Intro." in card.text) == (readme is not None)


def test_a_method_that_does_not_fit_a_model_is_refused_before_anything_is_written(setup: Path) -> None:
    out = setup / "rollout_report"
    with pytest.raises(ConfigError, match="Model teacher: Attention_rollout needs a vision transformer"):
        main(arguments(setup, methods="gradcam,attention_rollout", out=str(out)))
    assert not out.exists()


def test_a_device_this_machine_lacks_is_one_sentence(setup: Path) -> None:
    out = setup / "gpu_report"
    with pytest.raises(ConfigError, match="device 'gpu' is not a device torch knows; use cuda"):
        main(arguments(setup, device="gpu", out=str(out)))
    assert not out.exists()


def test_an_output_path_that_is_a_file_is_refused_before_any_evaluation(setup: Path) -> None:
    taken = setup / "taken.txt"
    taken.write_text("a file\n")
    with pytest.raises(UserFacingError, match=f"Output folder {re.escape(str(taken))} is an existing file"):
        main(arguments(setup, out=str(taken)))
    assert taken.read_text() == "a file\n"
