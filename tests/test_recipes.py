"""Every shipped recipe runs as a user runs it: its own script on the unchanged file, offline, against stand-in
Hub checkpoints (random weights, laid out as the Hugging Face cache lays out a download) and stand-in data of its
shape; then explain, evaluate, `transformers.pipeline` and a reload on what it wrote (see tests/helpers/rehearsal.py).

One rehearsal per architecture family starts from the published configs: deit_tiny_pathmnist (ViT, as
facebook/deit-tiny-patch16-224), distill_vit_base_to_deit_tiny's students (DeiT, facebook/deit-tiny-distilled-
patch16-224) and resnet18_pathmnist (ResNet, microsoft/resnet-18). The others start from smaller stand-ins of the
same checkpoints, fewer and narrower blocks of the published configs (vit_base_pathmnist, whose output is also the
distillation's teacher, and vit_base_cifar10: ViT-B/16 with one encoder block 192 wide; plants_folder: ResNet-18
with one block per stage, a quarter as wide; tests/helpers/standins.py says why), and each test checks that its
saved model differs from the published config in exactly those fields and its labels."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from PIL import Image as PILImage
from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageClassification, pipeline

import explain.cli
from pipelines import DevicePreprocess
from pipelines.medmnist_npz import medmnist_file_name

from helpers.project import ROOT, load_script
from helpers.rehearsal import (
    FAST_EVALUATE,
    FAST_EXPLAIN,
    PUBLISHED_CONFIG_REHEARSALS,
    Rehearsed,
    hub_checkpoints,
    published_config_rehearsals,
)
from helpers.standins import HUB_STANDINS, SMALLER_STANDINS, config_differences, published_preprocessor, standin_ids

# Every file, so that a recipe added later is rehearsed too; one whose needs cannot be derived fails.
RECIPES = sorted((ROOT / "configs").glob("*.yaml"))
MODEL_FILES = ("config.json", "model.safetensors", "preprocessor_config.json", "metrics.json")
RUN_FILES = ("training_curves.png", "confusion_matrix.png")
# Processor fields that decide what the model sees.
PREPROCESSING_FIELDS = (
    "do_resize",
    "size",
    "resample",
    "do_center_crop",
    "crop_size",
    "crop_pct",
    "do_rescale",
    "rescale_factor",
    "do_normalize",
    "image_mean",
    "image_std",
)
# What fine-tuning a checkpoint changes in its config on purpose: the labels, and the class with the head (the in21k
# checkpoint is published as a ViTModel, without one).
RELABELLED_FIELDS = {"id2label", "label2id", "num_labels", "problem_type", "architectures"}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def sample_images(run: Rehearsed, count: int = 2) -> torch.Tensor:
    """uint8 (count, C, H, W) test images of the rehearsal's stand-in data, at their native size."""
    values = {**run.values, **run.overrides}
    source = values.get("dataset_source", "medmnist")
    if source == "medmnist":
        npz = Path(values["data_dir"]) / medmnist_file_name(values["dataset_name"], values.get("medmnist_size", 28))
        images = np.load(npz)["test_images"][:count]
        images = images[..., None] if images.ndim == 3 else images
    elif source == "folder":
        files = sorted((Path(values["data_dir"]) / "test").glob("*.jpg"))[:count]
        images = np.stack([np.asarray(PILImage.open(path).convert("RGB")) for path in files])
    else:
        column = values.get("image_column", "image")
        parquet = sorted(Path(run.hf_home, "dataset-repos", values["dataset_name"]).rglob("test-*.parquet"))[0]
        rows = datasets.Dataset.from_parquet(str(parquet))[:count][column]
        images = np.stack([np.asarray(image.convert("RGB")) for image in rows])
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()


def as_pil(images: torch.Tensor) -> list[PILImage.Image]:
    """RGB PIL images, as `transformers.pipeline` converts every image."""
    arrays = images.permute(0, 2, 3, 1).numpy()
    return [PILImage.fromarray(array[..., 0] if array.shape[-1] == 1 else array).convert("RGB") for array in arrays]


def check_folder(folder: Path, label_names: list[str], distilled_token: bool) -> AutoModelForImageClassification:
    """The saved folder is complete and reloads with a head of the dataset's labels."""
    missing = [name for name in (*MODEL_FILES, *RUN_FILES) if not (folder / name).is_file()]
    assert not missing, f"{folder} lacks {missing}"
    model = AutoModelForImageClassification.from_pretrained(folder).eval()
    assert [model.config.id2label[index] for index in range(model.config.num_labels)] == label_names
    # The published 1000-label heads replaced, the in21k checkpoint's missing head created (DeiT: both heads).
    heads = [
        module for name, module in model.named_modules() if "classifier" in name and isinstance(module, torch.nn.Linear)
    ]
    assert heads and all(head.out_features == len(label_names) for head in heads)
    if distilled_token:
        assert type(model).__name__ == "DeiTForImageClassificationWithTeacher"
    return model


def published_form(value: object) -> object:
    """A processor field as the published (legacy) file writes it: one number for a square or shortest-edge size."""
    if dataclasses.is_dataclass(value):  # transformers' SizeDict
        value = {key: item for key, item in dataclasses.asdict(value).items() if item is not None}
    if isinstance(value, dict) and len(set(value.values())) == 1:
        return next(iter(value.values()))
    return list(value) if isinstance(value, tuple) else value


def check_started_from(run: Rehearsed, folder: Path) -> None:
    """A model fine-tuned from a Hub checkpoint has that checkpoint's published config, or the smaller stand-in's
    where the rehearsal ran against those: apart from its labels, exactly the smaller stand-in's changes."""
    start = run.values.get("model_name_or_path")
    if start not in standin_ids():
        return
    changed = config_differences(start, AutoConfig.from_pretrained(folder))
    changed = {name: value for name, value in changed.items() if name not in RELABELLED_FIELDS}
    assert changed == ({} if run.published_configs else SMALLER_STANDINS.get(start, {})), folder


def check_preprocessing(run: Rehearsed, folder: Path, images: torch.Tensor) -> None:
    """The saved processor preprocesses as the checkpoint published it (with the recipe's own overrides), and the
    project's device preprocessing equals `AutoImageProcessor` of that folder on the same images."""
    saved = AutoImageProcessor.from_pretrained(folder)
    overrides = run.values.get("image_processor_config") or {}
    start = run.values.get("model_name_or_path")
    if start in hub_checkpoints(run.values):
        published = AutoImageProcessor.from_pretrained(start, cache_dir=run.hf_home / "hub", **overrides)
        for name in PREPROCESSING_FIELDS:
            assert getattr(saved, name, None) == getattr(published, name, None), f"{folder}: {name} differs"
        raw = published_preprocessor(start)
        # And in the published file's own terms (DeiT: resize 256, crop 224, bicubic, ImageNet mean and std).
        for name in ("size", "crop_size", "resample", "image_mean", "image_std", "crop_pct"):
            if name in raw and name not in overrides:
                assert published_form(getattr(saved, name)) == published_form(raw[name]), f"{folder}: {name}"
    ours = DevicePreprocess(saved, num_channels=3)(images)
    reference = saved(images=as_pil(images), return_tensors="pt")["pixel_values"]
    assert ours.shape == reference.shape
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)


def check_pipeline_matches_reload(folder: Path, model, images: torch.Tensor, label_names: list[str]) -> None:
    """`pipeline("image-classification")` on one image gives the reloaded model's probabilities by label."""
    classify = pipeline("image-classification", model=str(folder), device="cpu")
    scores = {row["label"]: row["score"] for row in classify(as_pil(images[:1])[0], top_k=len(label_names))}
    assert set(scores) == set(label_names)
    processor = AutoImageProcessor.from_pretrained(folder)
    with torch.no_grad():
        logits = model(pixel_values=DevicePreprocess(processor)(images[:1])).logits[0]
    expected = (
        torch.softmax(logits, -1) if model.config.problem_type != "multi_label_classification" else logits.sigmoid()
    )
    got = torch.tensor([scores[name] for name in label_names])
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)


@pytest.mark.skipif(not HUB_STANDINS.is_dir(), reason=f"{HUB_STANDINS} is absent")
def test_each_architecture_family_is_rehearsed_once_from_its_published_configs() -> None:
    # Every family that a recipe starts from has its published-config rehearsal, and the table names no other.
    chosen = published_config_rehearsals(RECIPES)
    assert {family: recipe.stem for family, recipe in chosen.items()} == PUBLISHED_CONFIG_REHEARSALS


@pytest.mark.slow
@pytest.mark.parametrize("recipe", RECIPES, ids=lambda path: path.stem)
def test_recipe_rehearsal(recipe: Path, rehearsals, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = sha256(recipe)
    run = rehearsals.get(recipe)
    assert sha256(recipe) == before, "the rehearsal changed the recipe file"
    images = sample_images(run)
    made = {role: folder for role, folder in run.folders.items() if role not in ("teacher", "model")}
    made = made or {"model": run.folders["model"]}
    distilled_token = bool(run.values.get("deit_distillation_token"))
    models = {role: check_folder(folder, run.label_names, distilled_token) for role, folder in made.items()}
    for role, folder in made.items():
        check_started_from(run, folder)
        check_preprocessing(run, folder, images)
        check_pipeline_matches_reload(folder, models[role], images, run.label_names)
    if "student" in made:
        results = json.loads((made["student"] / "results.json").read_text())
        assert [row["role"] for row in results["rows"]][:2] == ["teacher", "student (distilled)"]
        assert (made["student"] / "README.md").is_file()

    # explain and evaluate run in this process, as their own tests do (no second import of the libraries); a Hub
    # dataset is found where the scripts above found it, in the stand-in home's datasets cache.
    monkeypatch.setattr(
        datasets.config, "HF_DATASETS_CACHE", type(datasets.config.HF_DATASETS_CACHE)(run.hf_home / "datasets")
    )
    first, *others = made.values()
    compare = ["--compare_with", str(others[0])] if others else []
    out = tmp_path / "explain"
    explain_args = ["--model", str(first), *compare, *run.data_cli, "--out", str(out), *FAST_EXPLAIN]
    explain.cli.main(explain_args)
    index = json.loads((out / "index.json").read_text())
    assert {"overlay.png", "methods.png"} <= {entry["file"] for entry in index["files"]}
    assert ("models.png" in {entry["file"] for entry in index["files"]}) == bool(others)
    assert all((out / entry["file"]).is_file() for entry in index["files"])

    report = tmp_path / "report"
    evaluated = [run.folders["teacher"], *made.values()] if "teacher" in run.folders else list(made.values())
    evaluate_args = ["--models", *map(str, evaluated), *run.data_cli, "--out", str(report), *FAST_EVALUATE]
    load_script("report").main(evaluate_args)
    metrics = json.loads((report / "metrics.json").read_text())
    assert len(metrics["models"]) == len(evaluated)
    assert (report / "index.md").is_file()
