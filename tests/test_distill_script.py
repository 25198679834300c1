"""scripts/distill.py end to end: the measured results table, the model card, publishing, two processes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from huggingface_hub import ModelCard
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score
from transformers import AutoImageProcessor, AutoModelForImageClassification

import pipelines.publishing
import trainers.hub
from pipelines import ConfigError, OfflineError, run_cli
from trainers.hub import REQUIRED_FILES, files_to_push
from trainers.report.cost import count_parameters

from helpers import faults
from helpers.distill import COUNTS, distill_config, save_teacher
from helpers.hub import RecordingHub
from helpers.project import load_script

main = load_script("distill").main


def measured_by_hand(folder: Path, npz: Path) -> dict[str, float]:
    """ACC, AUC and macro F1 of the model saved in `folder` on the npz's test images, from a forward pass here and
    scikit-learn (MedMNIST's binary-class rules: AUC on the positive score, positive when it is above 0.5); no
    Trainer, no results-table code."""
    with np.load(npz) as arrays:
        images = torch.from_numpy(arrays["test_images"])[:, None].repeat(1, 3, 1, 1)  # grayscale to RGB
        labels = arrays["test_labels"][:, 0]
    model = AutoModelForImageClassification.from_pretrained(folder).eval()
    pixel_values = AutoImageProcessor.from_pretrained(folder)(images=images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        positive = model(pixel_values=pixel_values).logits.softmax(-1)[:, 1].numpy()
    predicted = (positive > 0.5).astype(int)
    return {
        "accuracy": accuracy_score(labels, predicted),
        "auc": roc_auc_score(labels, positive),
        "f1": f1_score(labels, predicted, average="macro"),
    }


@pytest.fixture(scope="module")
def distilled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    tmp_path = tmp_path_factory.mktemp("distill")
    config = distill_config(tmp_path)
    # A third of the test labels flipped: on the learnable images every model would score 1.0 (AUC included), and
    # the table's metrics could not tell which model a row's numbers came from.
    npz = tmp_path / "data" / "breastmnist.npz"
    with np.load(npz) as stored:
        arrays = dict(stored)
    arrays["test_labels"][::3] ^= 1
    np.savez_compressed(npz, **arrays)
    result = main([str(config)])
    return tmp_path, result


def test_results_table_rows_come_from_measurement(distilled) -> None:
    tmp_path, result = distilled
    rows = json.loads((tmp_path / "student" / "results.json").read_text())["rows"]
    assert [row["role"] for row in rows] == ["teacher", "student (distilled)", "student (no teacher)"]
    for row, folder in zip(rows, ("teacher", "student", "baseline")):
        model = AutoModelForImageClassification.from_pretrained(tmp_path / folder)
        assert row["cost"]["parameters"] == count_parameters(model)
        assert row["cost"]["size_on_disk_bytes"] == (tmp_path / folder / "model.safetensors").stat().st_size
        cost = row["cost"]
        for batch in (1, 64):
            lower, upper = cost[f"latency_ms_batch_{batch}_quartiles"]
            assert 0 < lower <= cost[f"latency_ms_batch_{batch}"] <= upper
        assert cost["throughput_images_per_s"] == pytest.approx(1000 / cost["latency_ms_batch_64"])
        # Every row's numbers are its own model's: evaluated again here, independently of the table's code.
        by_hand = measured_by_hand(tmp_path / folder, tmp_path / "data" / "breastmnist.npz")
        assert row["test_metrics"] == pytest.approx(by_hand, abs=1e-6)
    # The three models score differently, so the check above tells the rows apart (one given another's numbers fails).
    assert len({round(row["test_metrics"]["auc"], 3) for row in rows}) == 3
    for row, folder in zip(rows[1:], ("student", "baseline")):  # the students' rows agree with their metrics.json
        saved = json.loads((tmp_path / folder / "metrics.json").read_text())["test"]
        assert row["test_metrics"] == pytest.approx({name: saved[name] for name in ("accuracy", "auc", "f1")})
    assert rows[1]["architecture"] == "DeiT (distillation token)" and rows[0]["architecture"] == "ResNet"
    assert result["rows"] == rows
    markdown = (tmp_path / "student" / "results.md").read_text()
    assert "| student (distilled) | DeiT (distillation token) |" in markdown
    for row in rows:  # each latency with its quartiles, as the note under the table says
        lower, upper = row["cost"]["latency_ms_batch_1_quartiles"]
        assert f"| {row['cost']['latency_ms_batch_1']:.2f} ({lower:.2f}–{upper:.2f}) ms |" in markdown
    assert "with the quartiles of those passes in brackets" in markdown
    assert "scripts/distill.py" in markdown


def test_model_card_validates_and_carries_the_table(distilled) -> None:
    tmp_path, _ = distilled
    card = ModelCard.load(tmp_path / "student" / "README.md")
    rows = json.loads((tmp_path / "student" / "results.json").read_text())["rows"]
    student = rows[1]
    metrics = {result.metric_type: result.metric_value for result in card.data.eval_results}
    assert metrics == {
        "accuracy": pytest.approx(student["test_metrics"]["accuracy"]),
        "roc_auc": pytest.approx(student["test_metrics"]["auc"]),
        "f1": pytest.approx(student["test_metrics"]["f1"]),
    }
    assert {result.dataset_type for result in card.data.eval_results} == {"medmnist/breastmnist"}
    assert card.data.pipeline_tag == "image-classification"
    assert "teacher" not in card.data.to_dict()  # a local folder, not a Hub id: never published (issue 29)
    assert card.data.base_model is None  # built from a config
    assert "| teacher | ResNet |" in card.text and "| student (no teacher) |" in card.text
    # The card's table carries each row's measured test metrics (checked against the models in the test above).
    lines = card.text.splitlines()
    for row in rows:
        [line] = [line for line in lines if line.startswith(f"| {row['role']} |")]
        metrics = row["test_metrics"]
        assert line.endswith(f"| {metrics['accuracy']:.4f} | {metrics['auc']:.4f} | {metrics['f1']:.4f} |"), line
    assert "python scripts/distill.py" in card.text  # as this test launched it (in-process, no accelerate)


def test_student_folder_is_complete_for_publishing(distilled) -> None:
    tmp_path, _ = distilled
    names = files_to_push(tmp_path / "student")
    assert set(REQUIRED_FILES) <= set(names)
    assert {"results.md", "results.json"} <= set(names)
    assert not any(name.startswith(("checkpoint", "teacher-logits")) for name in names)


def test_push_while_offline_is_refused_before_training(tmp_path: Path) -> None:
    config = distill_config(tmp_path, train_baseline=False, push_to_hub=True, hub_model_id="someone/tiny-student")
    with pytest.raises(OfflineError, match="someone/tiny-student could not be published.*HF_HUB_OFFLINE"):
        main([str(config)])
    assert not (tmp_path / "student").exists()


def test_push_without_a_token_is_refused_before_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipelines.publishing, "is_offline", lambda: False)
    monkeypatch.setattr(pipelines.publishing, "get_token", lambda: None)
    config = distill_config(tmp_path, train_baseline=False, push_to_hub=True, hub_model_id="someone/tiny-student")
    with pytest.raises(ConfigError, match="no Hugging Face token"):
        main([str(config)])
    assert not (tmp_path / "student").exists()


def test_failed_push_fails_in_one_sentence_and_keeps_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    FakeHub.calls = []
    monkeypatch.setattr(pipelines.publishing, "is_offline", lambda: False)
    monkeypatch.setattr(pipelines.publishing, "get_token", lambda: "hf_token")
    monkeypatch.setattr(trainers.hub, "HfApi", FakeHub)  # its upload fails as an expired token would
    config = distill_config(tmp_path, train_baseline=False, push_to_hub=True, hub_model_id="someone/tiny-student")
    with pytest.raises(OfflineError, match="someone/tiny-student .*the local folder is complete") as error:
        main([str(config)])
    assert "\n" not in str(error.value)
    assert FakeHub.calls[0] == ("create", "someone/tiny-student", True)
    assert set(REQUIRED_FILES) <= set(files_to_push(tmp_path / "student"))
    rows = json.loads((tmp_path / "student" / "results.json").read_text())["rows"]
    assert [row["role"] for row in rows] == ["teacher", "student (distilled)"]


class FakeHub(RecordingHub):
    """Records what would be created and uploaded; its upload fails as an expired token would."""

    calls: list = []

    def upload_folder(self, folder_path: str, repo_id: str, allow_patterns: list[str], commit_message: str) -> None:
        super().upload_folder(folder_path, repo_id, allow_patterns, commit_message)
        raise RuntimeError(f"401 Unauthorized for token {self.token}")


def test_push_is_private_by_default_and_never_shows_the_token(distilled, monkeypatch: pytest.MonkeyPatch) -> None:
    tmp_path, _ = distilled
    FakeHub.calls = []
    monkeypatch.setattr(trainers.hub, "HfApi", FakeHub)
    with pytest.raises(OfflineError) as error:
        trainers.hub.push_folder(tmp_path / "student", "someone/x", token="hf_secret_token_123")
    assert FakeHub.calls[0] == ("create", "someone/x", True)
    assert FakeHub.calls[1][2] == sorted(files_to_push(tmp_path / "student"))
    assert "hf_secret_token_123" not in str(error.value) and "***" in str(error.value)


def test_label_mismatch_through_the_script_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = distill_config(tmp_path)
    save_teacher(tmp_path / "teacher3", ["a", "b", "c"])
    with pytest.raises(SystemExit) as exit_:
        run_cli(lambda: main([str(config), "--teacher_model_name_or_path", str(tmp_path / "teacher3")]))
    error = capsys.readouterr().err
    assert exit_.value.code == 2 and "Traceback" not in error
    assert [line for line in error.splitlines() if line.startswith("error: ")] == [
        "error: The teacher has 3 labels and the student 2; they must share one label space."
    ]
    assert error.endswith("one label space.\n")
    assert not (tmp_path / "student").exists()


@pytest.mark.slow
def test_two_process_distillation_run(tmp_path: Path) -> None:
    config = distill_config(tmp_path, per_device_eval_batch_size=4)
    result = faults.run(faults.command("distill", config, processes=2), tmp_path / "ddp.log")
    assert result.returncode == 0, result.stdout[-3000:]
    assert result.stdout.count("| student (distilled) |") == 1  # printed by the main process only
    metrics = json.loads((tmp_path / "student" / "metrics.json").read_text())
    assert metrics["test"]["samples"] == COUNTS[2] and metrics["validation"]["samples"] == COUNTS[1]
    rows = json.loads((tmp_path / "student" / "results.json").read_text())["rows"]
    assert len(rows) == 3
