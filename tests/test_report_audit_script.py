"""The audit inside scripts/report.py on tiny models: each model against the reference in metrics.json and index.md,
seed groups (folders of seed-N models), the forgotten-images figure, and the one-sentence refusals."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch
from transformers import AutoImageProcessor, AutoModelForImageClassification

from pipelines import ConfigError
from pipelines.models import build_classifier

from helpers.data import make_medmnist_npz
from helpers.models import PROCESSOR_32, TINY_RESNET, TINY_VIT
from helpers.project import load_script

main = load_script("report").main
LABELS = ["malignant", "normal, benign"]


def save_model(folder: Path, config: dict, labels: list[str] = LABELS, dataset: str | None = None) -> Path:
    model, processor = build_classifier(config, labels, image_processor_config=PROCESSOR_32)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    if dataset:  # the card distill.py writes names the dataset in its model-index
        front = f"model-index:\n- name: {folder.name}\n  results:\n  - dataset:\n      type: {dataset}\n"
        (folder / "README.md").write_text(f"---\n{front}---\n# {folder.name}\n")
    return folder


def save_swapped(teacher: Path, folder: Path) -> Path:
    """The teacher with its classifier's two rows swapped: it calls every image the class the teacher does not, so
    every image the teacher gets right is a negative flip (a planted shrink that forgets)."""
    model = AutoModelForImageClassification.from_pretrained(teacher)
    weights = {
        key: value.flip(0) if key.startswith("classifier") and value.shape[0] == len(LABELS) else value
        for key, value in model.state_dict().items()
    }
    model.load_state_dict(weights)
    model.save_pretrained(folder)
    AutoImageProcessor.from_pretrained(teacher).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("audit")
    torch.manual_seed(0)  # the same tiny random models on every run
    make_medmnist_npz(root / "data" / "breastmnist.npz", counts=(8, 6, 40))
    save_model(root / "teacher", TINY_RESNET)
    save_model(root / "student", TINY_VIT)
    save_swapped(root / "teacher", root / "swapped")
    for seed in range(2):
        save_model(root / "teachers" / f"seed-{seed}", TINY_RESNET)
    for seed in range(3):
        save_model(root / "students" / f"seed-{seed}", TINY_RESNET)
    return root


def arguments(root: Path, *models: str, **extra: object) -> list[str]:
    values = {
        "dataset_name": "breastmnist",
        "data_dir": str(root / "data"),
        "verify_md5": "false",
        "out": str(root / "report"),
        "explain_images": 4,
        "paired_images": 4,
        "steps": 2,
        "random_maps": 1,
        "latency_repeats": 1,
        "device": "cpu",
        "sample_images": 1,
        "corruptions": "none",  # the report's robustness section has its own tests
        **extra,
    }
    argv = ["--models", *[str(root / model) for model in models]]
    for key, value in values.items():
        argv += [f"--{key}", str(value)]
    return argv


@pytest.fixture(scope="module")
def report(setup: Path) -> dict:
    return main(arguments(setup, "teacher", "student"))


def test_each_model_is_audited_against_the_reference_and_the_flips_add_up_to_its_accuracy(report: dict) -> None:
    assert "audit" not in report["models"]["teacher"]
    audit = report["models"]["student"]["audit"]
    accuracy = {name: model["classification"]["accuracy"] for name, model in report["models"].items()}
    assert audit["flips"]["net_change"] == pytest.approx(accuracy["student"] - accuracy["teacher"], abs=1e-12)
    assert audit["flips"]["predictions"] == report["images"]
    assert audit["class_test"] is None and "needs at least 2 seeds" in audit["class_test_note"]
    changed = round((1 - audit["fidelity"]["agreement"]) * report["images"])
    if changed:  # random tiny models: whether any prediction changed is up to their weights
        assert audit["map_agreement"]["method"] == "gradcam"
        assert audit["map_agreement"]["changed_images"] == changed
        assert audit["map_agreement"]["changed"]["images"] == min(64, changed)
    else:  # nothing changed, nothing to compare (the planted shrink below always changes)
        assert "map_agreement" not in audit


def test_index_shows_the_audit_and_the_forgotten_images_figure(setup: Path, report: dict) -> None:
    text = (setup / "report" / "index.md").read_text()
    assert "## What the shrink forgot (audit against `teacher`)" in text
    audit = report["models"]["student"]["audit"]
    negative = audit["flips"]["negative"]
    assert f"| {negative['count']} ({negative['rate']:.4f};" in text
    assert f"- student: {len(audit['exemplars']['positions'])} forgotten images" in text
    figure = report["figures"].get("What student forgot (audit against teacher)")
    assert (figure is not None) == bool(audit["exemplars"]["positions"])
    if figure:
        assert (setup / "report" / figure).stat().st_size > 10_000


def test_a_planted_shrink_flips_every_image_the_teacher_gets_right_and_the_figure_shows_them(setup: Path) -> None:
    swapped = main(arguments(setup, "teacher", "swapped", out=str(setup / "swapped_report")))
    audit = swapped["models"]["swapped"]["audit"]
    teacher_right = round(swapped["models"]["teacher"]["classification"]["accuracy"] * swapped["images"])
    assert teacher_right > 0
    assert audit["flips"]["negative"]["count"] == teacher_right
    assert audit["flips"]["positive"]["count"] == swapped["images"] - teacher_right
    assert audit["fidelity"]["agreement"] == 0.0
    assert len(audit["exemplars"]["positions"]) == teacher_right
    # Every image changed: the map test has no kept image to compare with.
    assert audit["map_agreement"]["changed_images"] == swapped["images"]
    assert audit["map_agreement"]["kept"]["images"] == 0 and math.isnan(audit["map_agreement"]["rank_correlation_p"])
    figure = swapped["figures"]["What swapped forgot (audit against teacher)"]
    assert (setup / "swapped_report" / figure).stat().st_size > 10_000


def test_seed_groups_give_the_class_test_and_the_exemplars_over_seeds(setup: Path) -> None:
    grouped = main(arguments(setup, "teachers", "students", out=str(setup / "grouped")))
    assert grouped["seed_groups"] == {"teachers": 2, "students": 3}
    assert list(grouped["models"]) == ["teachers", "students"]
    assert grouped["models"]["teachers"]["path"].endswith("seed-0")
    audit = grouped["models"]["students"]["audit"]
    assert audit["seeds"] == {"reference": 2, "model": 3}
    assert [row["class"] for row in audit["class_test"]] == LABELS
    assert audit["exemplars"]["rule"].startswith("modal prediction over seeds differs")
    text = (setup / "grouped" / "index.md").read_text()
    outcomes = audit["exemplars"]["outcomes"]
    assert len(outcomes) == len(audit["exemplars"]["positions"])
    assert set(outcomes) <= {"forgotten", "learnt", "both wrong"}
    line = (
        rf"- students: {len(outcomes)} images changed over seeds \(.*\): {outcomes.count('forgotten')} forgotten .*; "
        r"3 seeds against the reference's 2, classes hurt: "
    )
    assert re.search(line, text)


def test_no_audit_when_asked(setup: Path) -> None:
    plain = main(arguments(setup, "teacher", "student", audit="false", out=str(setup / "plain")))
    assert all("audit" not in model for model in plain["models"].values())
    assert "What the shrink forgot" not in (setup / "plain" / "index.md").read_text()


def test_a_seed_group_with_other_labels_is_one_sentence(setup: Path) -> None:
    save_model(setup / "mixed" / "seed-0", TINY_RESNET)
    save_model(setup / "mixed" / "seed-1", TINY_RESNET, labels=["benign", "malignant"])
    out = setup / "mixed_report"
    with pytest.raises(ConfigError, match=r"Seed group .*mixed: seed-1 has labels \['benign', 'malignant'\]"):
        main(arguments(setup, "teacher", "mixed", out=str(out)))
    assert not (out / "index.md").exists()


def test_a_seed_group_of_different_datasets_is_one_sentence(setup: Path) -> None:
    save_model(setup / "datasets" / "seed-0", TINY_RESNET, dataset="medmnist/breastmnist")
    save_model(setup / "datasets" / "seed-1", TINY_RESNET, dataset="medmnist/pneumoniamnist")
    with pytest.raises(ConfigError, match="Seed group .*datasets mixes datasets .*seed-1 on medmnist/pneumoniamnist"):
        main(arguments(setup, "teacher", "datasets", out=str(setup / "datasets_report")))
