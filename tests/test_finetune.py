"""scripts/finetune.py end to end on tiny models: outputs, pipeline() round trip, resume, bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from medmnist.evaluator import getAUC
from PIL import Image as PILImage
from safetensors.torch import load_file
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score
from transformers import AutoImageProcessor, AutoModelForImageClassification, pipeline

from pipelines import ConfigError, DataError, DevicePreprocess, UserFacingError
from trainers.image_classification import build_trainer

from helpers.data import BEST_IS_HIGHEST_LOSS, make_medmnist_npz, tiny_run_config, write_config
from helpers.models import PROCESSOR_32, TINY_RESNET, TINY_VIT
from helpers.project import ROOT, load_script

main = load_script("finetune").main

COUNTS = (40, 13, 17)  # odd evaluation sizes: a sample counted twice would show


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, Path]:
    tmp_path = tmp_path_factory.mktemp("finetune")
    make_medmnist_npz(tmp_path / "data" / "breastmnist.npz", counts=COUNTS)
    values = tiny_run_config(tmp_path, tmp_path / "data", model_config=TINY_VIT)
    report = main([str(write_config(tmp_path / "run.yaml", **values))])
    return Path(values["output_dir"]), report, tmp_path / "data"


def test_run_writes_model_processor_metrics_and_plots(finished_run) -> None:
    output_dir, report, _ = finished_run
    for name in (
        "model.safetensors",
        "config.json",
        "preprocessor_config.json",
        "metrics.json",
        "training_curves.png",
        "confusion_matrix.png",
    ):
        assert (output_dir / name).is_file(), name
    config = json.loads((output_dir / "config.json").read_text())
    assert config["id2label"] == {"0": "malignant", "1": "normal, benign"}
    assert config["label2id"] == {"malignant": 0, "normal, benign": 1}
    metrics = json.loads((output_dir / "metrics.json").read_text())
    assert metrics.pop("command").startswith("python scripts/finetune.py ")  # run in-process here, not by accelerate
    assert metrics == json.loads(json.dumps(report))
    assert metrics["validation"]["samples"] == COUNTS[1] and metrics["test"]["samples"] == COUNTS[2]
    for split in ("validation", "test"):
        assert {"accuracy", "auc", "f1", "loss"} <= set(metrics[split])
    assert not list(output_dir.glob(".*.tmp"))


def test_reported_metrics_match_the_saved_model_scored_by_sklearn(finished_run) -> None:
    output_dir, _, data_dir = finished_run
    arrays = np.load(data_dir / "breastmnist.npz")
    model = AutoModelForImageClassification.from_pretrained(output_dir).eval()
    preprocess = DevicePreprocess(AutoImageProcessor.from_pretrained(output_dir), num_channels=3)
    metrics = json.loads((output_dir / "metrics.json").read_text())
    for split, prefix in (("validation", "val"), ("test", "test")):
        images, labels = arrays[f"{prefix}_images"], arrays[f"{prefix}_labels"][:, 0].astype(np.int64)
        with torch.no_grad():
            logits = model(pixel_values=preprocess(torch.from_numpy(images)[:, None])).logits.double()
        probabilities = logits.softmax(-1).numpy()
        predicted = probabilities.argmax(1)
        # Not vacuous: both classes present and no tied scores, so AUC is defined and any mix-up of which label
        # belongs to which image (reversed, shuffled) would move it.
        assert set(labels) == {0, 1} and len(np.unique(probabilities[:, 1])) == len(labels), split
        reported = metrics[split]
        # Accuracy, AUC and F1 depend only on the argmax and the order of the scores. Recomputing the logits in one
        # batch instead of Trainer's batches of 8 moves them by float32 rounding (~1e-7), far below any gap between
        # two images' scores, so the metrics agree up to float summation: 1e-9.
        assert reported["accuracy"] == pytest.approx(accuracy_score(labels, predicted), abs=1e-9), split
        assert reported["auc"] == pytest.approx(roc_auc_score(labels, probabilities[:, 1]), abs=1e-9), split
        assert reported["f1"] == pytest.approx(f1_score(labels, predicted, average="macro"), abs=1e-9), split
        # The loss sums float32 values in another order than ours: 1e-5 relative.
        expected_loss = F.cross_entropy(logits, torch.from_numpy(labels)).item()
        assert reported["loss"] == pytest.approx(expected_loss, rel=1e-5), split


def test_saved_model_works_in_a_plain_transformers_pipeline(finished_run) -> None:
    output_dir, _, data_dir = finished_run
    images = np.load(data_dir / "breastmnist.npz")["test_images"][:4]
    classifier = pipeline("image-classification", model=str(output_dir), device="cpu")
    answers = classifier([PILImage.fromarray(image) for image in images], top_k=2)
    model = AutoModelForImageClassification.from_pretrained(output_dir).eval()
    preprocess = DevicePreprocess(AutoImageProcessor.from_pretrained(output_dir), num_channels=3)
    with torch.no_grad():
        probabilities = model(pixel_values=preprocess(torch.from_numpy(images)[:, None])).logits.softmax(-1)
    for answer, expected in zip(answers, probabilities):
        by_label = {entry["label"]: entry["score"] for entry in answer}
        assert set(by_label) == {"malignant", "normal, benign"}
        # pipeline() converts grayscale PIL images to RGB itself; the scores match our device path.
        assert by_label["malignant"] == pytest.approx(float(expected[0]), abs=1e-4)


@pytest.mark.parametrize("model_config", [TINY_RESNET, TINY_VIT], ids=["resnet", "vit"])
def test_resume_continues_from_the_newest_checkpoint_and_matches_an_uninterrupted_run(
    tmp_path: Path, model_config: dict
) -> None:
    # ViT checks the reload through from_pretrained: transformers (5.24, 5.25) saves ViT weights under legacy names that
    # Trainer's own load_state_dict would not match.
    make_medmnist_npz(tmp_path / "data" / "breastmnist.npz")
    values = tiny_run_config(
        tmp_path, tmp_path / "data", max_steps=6, save_strategy="steps", save_steps=2, model_config=model_config
    )
    config = write_config(tmp_path / "c.yaml", **values)
    run_dir = Path(values["output_dir"])
    main([str(config)])
    reference = load_file(run_dir / "model.safetensors")
    assert sorted(p.name for p in run_dir.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]

    # As if the run had died after step 4: the newest checkpoint left is checkpoint-4.
    shutil.rmtree(run_dir / "checkpoint-6")
    (run_dir / "model.safetensors").unlink()
    main([str(config), "--resume_from_checkpoint", "true"])

    state = json.loads((run_dir / "checkpoint-6" / "trainer_state.json").read_text())
    assert state["global_step"] == 6
    assert [entry["step"] for entry in state["log_history"] if "loss" in entry] == [1, 2, 3, 4, 5, 6]
    weights = load_file(run_dir / "model.safetensors")
    for name, tensor in reference.items():
        torch.testing.assert_close(weights[name], tensor, atol=1e-6, rtol=1e-5)


def test_resume_from_a_checkpoint_of_other_labels_is_refused(tmp_path: Path, npz_dir: Path) -> None:
    values = tiny_run_config(tmp_path, npz_dir, max_steps=2, save_strategy="steps", save_steps=2)
    main([str(write_config(tmp_path / "c.yaml", **values))])
    make_medmnist_npz(tmp_path / "other" / "pneumoniamnist.npz", flag="pneumoniamnist")
    values.update(dataset_name="pneumoniamnist", data_dir=str(tmp_path / "other"), max_steps=4)
    with pytest.raises(DataError, match="checkpoint-2 was trained on the labels .*malignant.*but this run's data has"):
        main([str(write_config(tmp_path / "c.yaml", **values)), "--resume_from_checkpoint", "true"])


def test_a_fresh_run_into_a_folder_of_earlier_checkpoints_says_so(
    tmp_path: Path, npz_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    values = tiny_run_config(tmp_path, npz_dir, max_steps=2, save_strategy="steps", save_steps=2)
    config = str(write_config(tmp_path / "c.yaml", **values))
    main([config])
    assert "from an earlier run" not in caplog.text
    main([config, "--overwrite_output_dir", "true"])  # without it, the trained model there is not replaced
    assert "already holds checkpoint-2 from an earlier run" in caplog.text


def test_a_last_batch_of_one_image_through_batch_norm_is_one_sentence(tmp_path: Path, npz_dir: Path) -> None:
    # At 8 px the tiny ResNet's last feature map is 1x1; 33 images in batches of 8 leave one image for the last.
    values = tiny_run_config(
        tmp_path,
        npz_dir,
        image_processor_config={**PROCESSOR_32, "size": {"height": 8, "width": 8}},
        max_train_samples=33,
        max_steps=5,
    )
    with pytest.raises(DataError, match="training batch of one image.*set dataloader_drop_last: true"):
        main([str(write_config(tmp_path / "c.yaml", **values))])
    main([str(write_config(tmp_path / "c.yaml", **values, dataloader_drop_last=True))])  # the advice works


def test_best_checkpoint_is_loaded_at_the_end(tmp_path: Path, npz_dir: Path) -> None:
    values = tiny_run_config(
        tmp_path,
        npz_dir,
        model_config=TINY_VIT,
        max_steps=6,
        **BEST_IS_HIGHEST_LOSS,
    )
    main([str(write_config(tmp_path / "c.yaml", **values))])
    run_dir = Path(values["output_dir"])
    state = json.loads((run_dir / "checkpoint-6" / "trainer_state.json").read_text())
    assert Path(state["best_model_checkpoint"]).name != "checkpoint-6"
    best = AutoModelForImageClassification.from_pretrained(state["best_model_checkpoint"])
    final = AutoModelForImageClassification.from_pretrained(run_dir)
    for (name, tensor), reference in zip(final.state_dict().items(), best.state_dict().values()):
        torch.testing.assert_close(tensor, reference, msg=name)


def test_resume_true_without_checkpoints_starts_fresh(tmp_path: Path, npz_dir: Path) -> None:
    values = tiny_run_config(tmp_path, npz_dir, max_steps=2, resume_from_checkpoint=True)
    report = main([str(write_config(tmp_path / "c.yaml", **values))])
    assert report["test"]["samples"] == 16


def test_multi_label_run_trains_with_smoothed_bce(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_medmnist_npz(tmp_path / "data" / "chestmnist.npz", flag="chestmnist")
    values = tiny_run_config(tmp_path, tmp_path / "data", dataset_name="chestmnist", label_smoothing_factor=0.1)
    built = []  # the trainer main() builds, kept to ask it for its loss after the run

    def build_and_keep(*args, **kwargs):
        built.append(build_trainer(*args, **kwargs))
        return built[-1]

    monkeypatch.setitem(main.__globals__, "build_trainer", build_and_keep)
    report = main([str(write_config(tmp_path / "c.yaml", **values))])
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["problem_type"] == "multi_label_classification" and len(config["id2label"]) == 14

    (trainer,) = built
    model = trainer.model.eval()
    labels = torch.from_numpy(np.load(tmp_path / "data" / "chestmnist.npz")["val_labels"]).double()
    # Hand-made BCE with logits against targets smoothed towards 0.5 by 0.1 (1 -> 0.95, 0 -> 0.05), per image.
    targets = labels * 0.9 + 0.05
    start, logits = 0, []
    for batch in trainer.get_eval_dataloader():  # the validation split, in file order, batches of 8 and 4
        inputs = trainer._prepare_inputs(batch)  # uint8 images -> pixel_values, as in training and evaluation
        torch.testing.assert_close(inputs["labels"].double(), labels[start : start + len(inputs["labels"])])
        with torch.no_grad():
            loss = trainer.compute_loss(model, inputs)
            batch_logits = model(pixel_values=inputs["pixel_values"]).logits.double()
        batch_targets = targets[start : start + len(batch_logits)]
        by_hand = -(batch_targets * F.logsigmoid(batch_logits) + (1 - batch_targets) * F.logsigmoid(-batch_logits))
        # float32 loss against a float64 formula: 1e-5 relative.
        assert loss.item() == pytest.approx(by_hand.mean().item(), rel=1e-5)
        logits.append(batch_logits)
        start += len(batch_logits)
    assert start == len(labels) == report["validation"]["samples"]
    logits = torch.cat(logits)
    by_hand = -(targets * F.logsigmoid(logits) + (1 - targets) * F.logsigmoid(-logits))
    assert report["validation"]["loss"] == pytest.approx(by_hand.mean().item(), rel=1e-5)
    # Mean per-label AUC by MedMNIST's own evaluator, on the logits of the same batches as Trainer's: 1e-9.
    expected_auc = getAUC(labels.numpy(), torch.sigmoid(logits).numpy(), "multi-label, binary-class")
    assert report["validation"]["auc"] == pytest.approx(expected_auc, abs=1e-9)


def test_photo_folder_with_mixed_sizes_trains(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for split in ("train", "val", "test"):
        (tmp_path / "plants" / split).mkdir(parents=True)
        for label in range(4):
            for index in range(3):
                width, height = 24 + 4 * index, 20 + 2 * label
                array = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
                PILImage.fromarray(array).save(tmp_path / "plants" / split / f"{label}_{index}.jpg")
    values = tiny_run_config(
        tmp_path,
        tmp_path / "plants",
        dataset_source="folder",
        dataset_name=None,
        class_names=["Rudo", "Baya", "Greg", "Yuki"],
        verify_md5=True,
        max_steps=2,
    )
    report = main([str(write_config(tmp_path / "c.yaml", **values))])
    assert report["test"]["samples"] == 12
    assert json.loads((tmp_path / "run" / "config.json").read_text())["id2label"]["3"] == "Yuki"


BEST_BY_STEPS = {"load_best_model_at_end": True, "eval_strategy": "steps", "save_strategy": "steps", "eval_steps": 2}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({**BEST_BY_STEPS, "save_steps": 2, "metric_for_best_model": "acuracy"}, "metric_for_best_model is 'acuracy'"),
        ({"per_device_train_batch_size": 0}, "per_device_train_batch_size is 0; it must be at least 1"),
        ({"learning_rate": -1.0}, "learning_rate is -1.0; it cannot be negative"),
    ],
)
def test_settings_trainer_would_trip_over_later_are_refused_before_training(
    tmp_path: Path, npz_dir: Path, overrides: dict, message: str
) -> None:
    values = tiny_run_config(tmp_path, npz_dir, **overrides)
    with pytest.raises(ConfigError, match=message):
        main([str(write_config(tmp_path / "c.yaml", **values))])
    assert not (tmp_path / "run").exists()


def test_output_dir_that_is_a_file_is_refused_and_kept(tmp_path: Path, npz_dir: Path) -> None:
    (tmp_path / "run").write_text("notes")
    with pytest.raises(UserFacingError, match="is an existing file; give a folder"):
        main([str(write_config(tmp_path / "c.yaml", **tiny_run_config(tmp_path, npz_dir)))])
    assert (tmp_path / "run").read_text() == "notes"


def _run_script(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "finetune.py"), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
    )


def _assert_one_clear_line(result: subprocess.CompletedProcess, *parts: str) -> None:
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == 1, result.stderr[-2000:]
    for part in parts:
        assert part in error_lines[0]


@pytest.mark.slow
def test_cli_unknown_key_exits_with_one_sentence_and_writes_nothing(tmp_path: Path, npz_dir: Path) -> None:
    values = tiny_run_config(tmp_path, npz_dir, batch_sise=3)
    result = _run_script(str(write_config(tmp_path / "c.yaml", **values)))
    _assert_one_clear_line(result, "Unknown config key 'batch_sise'")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_cli_uncached_hub_model_offline_fails_at_once(tmp_path: Path, npz_dir: Path) -> None:
    values = tiny_run_config(tmp_path, npz_dir, model_config=None, model_name_or_path="google/vit-base-patch16-224")
    start = time.perf_counter()
    result = _run_script(str(write_config(tmp_path / "c.yaml", **values)))
    assert time.perf_counter() - start < 60  # import time included; the Hub is never retried
    _assert_one_clear_line(result, "google/vit-base-patch16-224", "HF_HUB_OFFLINE")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_cli_missing_medmnist_file_offline(tmp_path: Path) -> None:
    values = tiny_run_config(tmp_path, tmp_path / "empty", dataset_name="octmnist")
    result = _run_script(
        str(write_config(tmp_path / "c.yaml", **values)),
        env={**os.environ, "MEDMNIST_ROOT": str(tmp_path / "nowhere"), "HOME": str(tmp_path)},
    )
    _assert_one_clear_line(result, "octmnist.npz", "MEDMNIST_ROOT", "https://zenodo.org")
