"""scripts/report.py (trainers.report.run) end to end on tiny models: the report's files, its numbers, bad input, the model card."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support, roc_auc_score
from transformers import AutoImageProcessor, AutoModelForImageClassification

from explain.metrics.faithfulness import CurveSettings, deletion_insertion
from explain.metrics.masking import random_maps
from pipelines import ConfigError, UserFacingError
from pipelines.io import finite_or_null
from pipelines.models import build_classifier
from trainers.hub import fold_into_model_card
from trainers.report.markdown import render_markdown

from helpers.data import make_medmnist_npz
from helpers.models import PROCESSOR_32, TINY_RESNET, TINY_VIT
from helpers.project import load_script

main = load_script("report").main
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
    # A mean over no compared pair of maps is NaN in the returned report and null in the file (strict JSON).
    assert json.loads((out / "metrics.json").read_text()) == finite_or_null(json.loads(json.dumps(report)))
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


def split_images(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """The test split straight from the npz: uint8 (N, 28, 28) images and (N,) class indices."""
    with np.load(root / "data" / "breastmnist.npz") as arrays:
        return arrays["test_images"], arrays["test_labels"][:, 0].astype(np.int64)


def load_plainly(folder: Path) -> tuple[torch.nn.Module, torch.Tensor]:
    """The saved model, loaded with transformers alone, and its image processor's inputs for the test split
    (grayscale repeated to RGB), so that the report's numbers are checked without the script's own code."""
    model = AutoModelForImageClassification.from_pretrained(folder).eval()
    processor = AutoImageProcessor.from_pretrained(folder)
    images, _ = split_images(folder.parent)
    rgb = [np.repeat(image[:, :, None], 3, axis=2) for image in images]
    return model, processor(images=rgb, return_tensors="pt")["pixel_values"]


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """Guo et al. (2017): 15 equal-width confidence bins (low, high], weighted |accuracy - confidence|."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    edges = np.linspace(0, 1, bins + 1)
    total = 0.0
    for low, high in zip(edges[:-1], edges[1:]):
        inside = (confidence > low) & (confidence <= high)
        if inside.any():
            total += inside.sum() * abs(correct[inside].mean() - confidence[inside].mean())
    return total / len(labels)


def test_report_holds_every_measurement(setup: Path, report: dict) -> None:
    assert report["images"] == 11 and report["explained_images"] == 6 and report["reference"] == "teacher"
    _, labels = split_images(setup)
    # The script's documented sample for explanations: numpy's generator seeded with --seed (0), sorted.
    chosen = np.sort(np.random.default_rng(0).choice(11, 6, replace=False))
    for name in ("teacher", "student"):
        model = report["models"][name]
        network, pixel_values = load_plainly(setup / name)
        with torch.no_grad():
            probabilities = network(pixel_values).logits.softmax(dim=-1).double().numpy()
        predicted = probabilities.argmax(axis=1)
        # Each model's classification numbers come from its own outputs (not the reference model's).
        classification = model["classification"]
        assert classification["accuracy"] == pytest.approx(accuracy_score(labels, predicted)), name
        assert classification["auc"] == pytest.approx(roc_auc_score(labels, probabilities[:, 1])), name
        assert classification["f1"] == pytest.approx(f1_score(labels, predicted, average="macro")), name
        assert classification["ece"] == pytest.approx(expected_calibration_error(probabilities, labels), abs=1e-6)
        precision, recall, _, support = precision_recall_fscore_support(
            labels, predicted, labels=[0, 1], zero_division=0
        )
        assert classification["per_class"] == {
            label: {"precision": pytest.approx(p), "recall": pytest.approx(r), "support": s}
            for label, p, r, s in zip(LABELS, precision, recall, support)
        }, name
        # The random-map baseline of the faithfulness numbers depends only on the images, the model's predicted
        # classes and the seed (each image's map seeded by its row in the split), so the library's deletion/insertion
        # function can recompute it here. The Grad-CAM areas would need Grad-CAM maps, which only the code under
        # test makes; they are left to the explain tests.
        inputs = pixel_values[chosen]
        chance = random_maps(inputs[:, 0], seed=0, rows=chosen)
        baseline = deletion_insertion(
            network, inputs, chance, torch.from_numpy(predicted[chosen]), CurveSettings(steps=3)
        )
        gradcam = model["faithfulness"]["gradcam"]
        assert gradcam["random_deletion_auc"] == pytest.approx(float(baseline.deletion_auc.mean()), abs=1e-5)
        assert gradcam["random_insertion_auc"] == pytest.approx(float(baseline.insertion_auc.mean()), abs=1e-5)
        assert gradcam["images"] == 6
        cost = model["cost"]
        assert cost["parameters"] == sum(parameter.numel() for parameter in network.parameters())
        assert (
            0
            < cost["latency_ms_batch_1_quartiles"][0]
            <= cost["latency_ms_batch_1"]
            <= cost["latency_ms_batch_1_quartiles"][1]
        )
        assert {"deletion_auc", "insertion_auc", "random_deletion_auc", "random_insertion_auc"} <= set(
            model["faithfulness"]["gradcam"]
        )
        randomised = model["randomization"]["gradcam"]
        assert randomised["images"] == 6
        assert_pairs_left_after_blank_maps(randomised, randomised["blank_maps"], randomised["blank_reinitialised_maps"])
    assert "agreement" not in report["models"]["teacher"]
    agreed = report["models"]["student"]["agreement"]["gradcam"]
    # The means, plus the counts of blank maps and of the pairs the means average.
    assert set(agreed) == {
        "rank_correlation_mean",
        "top10_iou_mean",
        "prediction_agreement",
        "images",
        "pairs",
        "blank_maps",
        "blank_reference_maps",
    }
    assert_pairs_left_after_blank_maps(agreed, agreed["blank_reference_maps"], agreed["blank_maps"])
    # The reference's maps for its own predicted class are the maps its randomisation check used.
    assert agreed["blank_reference_maps"] == report["models"]["teacher"]["randomization"]["gradcam"]["blank_maps"]


def assert_pairs_left_after_blank_maps(numbers: dict, blank_a: int, blank_b: int) -> None:
    """A pair is compared when neither map is blank; a mean over no pair is NaN, over some a correlation."""
    assert 6 - blank_a - blank_b <= numbers["pairs"] <= 6 - max(blank_a, blank_b)
    assert (numbers["pairs"] == 0) == math.isnan(numbers["rank_correlation_mean"])
    assert numbers["pairs"] == 0 or -1 <= numbers["rank_correlation_mean"] <= 1


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


def test_explanation_rows_show_the_json_numbers_with_n_a_for_no_pair(setup: Path, report: dict) -> None:
    lines = (setup / "report" / "index.md").read_text().splitlines()
    four = lambda value: "n/a" if value is None or math.isnan(value) else f"{value:.4f}"  # noqa: E731
    for name, model in report["models"].items():
        numbers = model["randomization"]["gradcam"]
        blank = f"{numbers['blank_maps']} / {numbers['blank_reinitialised_maps']}"
        assert (
            f"| {name} | gradcam | {four(numbers['rank_correlation_mean'])} | {numbers['pairs']} | {blank} |" in lines
        )
    numbers = report["models"]["student"]["agreement"]["gradcam"]
    means = " | ".join(
        four(numbers[key]) for key in ("rank_correlation_mean", "top10_iou_mean", "prediction_agreement")
    )
    blank = f"{numbers['blank_reference_maps']} / {numbers['blank_maps']}"
    assert f"| student | gradcam | {means} | {numbers['pairs']} | {blank} |" in lines


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


def test_models_with_other_labels_are_refused_or_limited_to_shared_labels(setup: Path, report: dict) -> None:
    # "three" is the teacher with its head's rows moved to a different label order (plus a zero row for a label
    # the dataset lacks): on the shared labels its logits are the teacher's, if each is read from its own column.
    three_labels = ["normal, benign", "other", "malignant"]
    three, processor = build_classifier(TINY_RESNET, three_labels, image_processor_config=PROCESSOR_32)
    teacher = AutoModelForImageClassification.from_pretrained(setup / "teacher").state_dict()
    weights = {}
    for key, value in three.state_dict().items():
        if value.shape == teacher[key].shape:
            weights[key] = teacher[key]
        else:  # a head parameter: one row per label
            weights[key] = torch.zeros_like(value)
            for row, label in enumerate(three_labels):
                if label in LABELS:
                    weights[key][row] = teacher[key][LABELS.index(label)]
    three.load_state_dict(weights)
    three.save_pretrained(setup / "three")
    processor.save_pretrained(setup / "three")

    with pytest.raises(ConfigError, match="allow_label_mismatch"):
        main(arguments(setup, "teacher", "three"))
    limited = main(arguments(setup, "teacher", "three", allow_label_mismatch="true", out=str(setup / "limited")))
    assert limited["labels"] == LABELS
    # Every image's class is shared, so both models are scored on the whole split, as the teacher was alone.
    expected = dict(report["models"]["teacher"]["classification"])
    expected_per_class = expected.pop("per_class")  # pytest.approx takes no nested dictionaries
    for name in ("teacher", "three"):
        classification = dict(limited["models"][name]["classification"])
        per_class = classification.pop("per_class")
        assert classification == pytest.approx(expected), name
        for label in LABELS:
            assert per_class[label] == pytest.approx(expected_per_class[label]), (name, label)


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
        fold_into_model_card(tmp_path, render_markdown(report, figures=False))
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
