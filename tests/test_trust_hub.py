"""Issue 29, finding 1: every push is private unless asked otherwise, and a push that cannot happen offline is refused
in one sentence before any work; the push itself is replaced here (nothing goes online)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import explain.cli
import trainers.hub
from pipelines import DataArguments, OfflineError, run_cli
from pipelines.config import parse_config
from trainers.arguments import ModelArguments, OneCycleTrainingArguments

from helpers.data import make_medmnist_npz, tiny_run_config, write_config
from helpers.hub import RecordingHub
from helpers.models import save_tiny_classifiers
from helpers.project import load_script

finetune = load_script("finetune").main


def run_config(tmp_path: Path, **overrides: object) -> Path:
    make_medmnist_npz(tmp_path / "data" / "breastmnist.npz")
    values = tiny_run_config(tmp_path, tmp_path / "data", max_steps=2, **overrides)
    return write_config(tmp_path / "run.yaml", **values)


@pytest.mark.parametrize(("option", "private"), [([], True), (["--hub_private_repo", "false"], False)])
def test_finetune_push_is_private_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, option: list[str], private: bool
) -> None:
    RecordingHub.calls = []
    # By name: the check's module (pipelines.publishing) is resolved when the test runs.
    monkeypatch.setattr("pipelines.publishing.is_offline", lambda: False)
    monkeypatch.setattr("pipelines.publishing.get_token", lambda: "hf_token")
    monkeypatch.setattr(trainers.hub, "HfApi", RecordingHub)
    config = run_config(tmp_path, push_to_hub=True, hub_model_id="someone/tiny-model")
    finetune([str(config), *option])
    assert RecordingHub.calls[0] == ("create", "someone/tiny-model", private)
    [(_, repo, uploaded)] = RecordingHub.calls[1:]  # one upload, after the evaluation: no checkpoint pushed on its own
    assert repo == "someone/tiny-model"
    assert {"model.safetensors", "config.json", "README.md", "metrics.json"} <= set(uploaded)


def test_published_files_quote_no_path_of_this_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """metrics.json records the command with its paths (it reproduces the run here); the published copy does not."""
    monkeypatch.setattr("pipelines.publishing.is_offline", lambda: False)
    monkeypatch.setattr("pipelines.publishing.get_token", lambda: "hf_token")
    monkeypatch.setattr(trainers.hub, "HfApi", RecordingHub)
    config = run_config(tmp_path, push_to_hub=True, hub_model_id="someone/tiny-model")
    finetune([str(config)])
    assert str(tmp_path) in (tmp_path / "run" / "metrics.json").read_text()  # the local record, unchanged
    published = json.loads(RecordingHub.uploaded["metrics.json"])
    assert published["command"] == "python scripts/finetune.py <run.yaml>"
    assert published["test"] == json.loads((tmp_path / "run" / "metrics.json").read_text())["test"]
    for name, content in RecordingHub.uploaded.items():
        assert str(tmp_path).encode() not in content, name
    assert RecordingHub.uploaded["model.safetensors"] == (tmp_path / "run" / "model.safetensors").read_bytes()


@pytest.mark.parametrize("option", [[], ["--hub_private_repo", "false"]])
def test_training_arguments_default_to_a_private_repo(tmp_path: Path, option: list[str]) -> None:
    """finetune.py, distill.py and lr_find.py parse the same training arguments."""
    config = write_config(tmp_path / "run.yaml", dataset_name="breastmnist", model_name_or_path="x", output_dir="run")
    types = (DataArguments, ModelArguments, OneCycleTrainingArguments)
    *_, training_args = parse_config(types, [str(config), *option])
    assert training_args.hub_private_repo is (not option)


def test_finetune_push_offline_is_refused_before_training(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    config = run_config(tmp_path, push_to_hub=True, hub_model_id="someone/tiny-model")  # the tests run offline
    with pytest.raises(SystemExit) as exit_:
        run_cli(lambda: finetune([str(config)]))
    error = capsys.readouterr().err
    assert exit_.value.code == 2 and "Traceback" not in error
    assert error == (
        "error: push_to_hub is set, but someone/tiny-model could not be published after training: HF_HUB_OFFLINE is "
        "set; unset it, or run without push_to_hub.\n"
    )
    assert not (tmp_path / "run").exists()  # nothing trained, nothing written


def test_explain_maps_push_offline_is_refused_before_any_map(tmp_path: Path) -> None:
    make_medmnist_npz(tmp_path / "data" / "breastmnist.npz")
    folders = save_tiny_classifiers(tmp_path, ("resnet", "vit"))
    argv = ["--model", folders["resnet"], "--dataset_name", "breastmnist", "--data_dir", str(tmp_path / "data")]
    argv += ["--verify_md5", "false", "--split", "test", "--device", "cpu", "--save_maps", str(tmp_path / "maps")]
    with pytest.raises(OfflineError) as refused:
        explain.cli.main([*argv, "--push_to_hub", "someone/maps"])
    assert str(refused.value) == (
        "push_to_hub is set, but someone/maps could not be published once the maps are computed: HF_HUB_OFFLINE is "
        "set; unset it, or run without push_to_hub."
    )
    assert not (tmp_path / "maps").exists()  # no map computed, no folder made
