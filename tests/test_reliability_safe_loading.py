"""Safe loading: weights from safetensors; pickles refused unless allowed, then read with weights_only=True so that
they cannot run code; a checkpoint's own code never runs unless the config says so; the Hub token never reaches
an output file or a log.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch

from pipelines import DataError
from pipelines.config import parse_config
from pipelines.models import build_classifier, load_classifier
from trainers.arguments import ModelArguments, hide_hub_token, recordable_argv

from helpers import faults
from helpers.data import make_medmnist_npz, tiny_run_config, write_config
from helpers.models import PROCESSOR_32, TINY_RESNET

LABELS = ["malignant", "normal, benign"]
TOKEN = "hf_reliabilityTestToken0123456789abcdef"


class RunsCode:
    """Unpickling this calls `exec`, which writes `marker`: what a hostile pytorch_model.bin would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


def saved_model(folder: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    model, processor = build_classifier(TINY_RESNET, LABELS, image_processor_config=PROCESSOR_32)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder, {name: tensor.clone() for name, tensor in model.state_dict().items()}


def pickle_only(folder: Path) -> dict[str, torch.Tensor]:
    """A folder whose weights are only a pickle (pytorch_model.bin), holding the real state dict."""
    _, state = saved_model(folder)
    (folder / "model.safetensors").unlink()
    torch.save(state, folder / "pytorch_model.bin")
    return state


def test_pickle_only_checkpoint_is_refused_with_the_reason_and_the_switch(tmp_path: Path) -> None:
    pickle_only(tmp_path / "model")
    with pytest.raises(DataError) as error:
        load_classifier(str(tmp_path / "model"), LABELS)
    message = str(error.value)
    assert "\n" not in message
    for part in ("pytorch_model.bin", "unpickling can run code", "allow_pickle", "weights_only=True"):
        assert part in message


def test_allowed_pickle_loads_through_torch_load_with_weights_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = pickle_only(tmp_path / "model")
    calls = []
    real_load = torch.load

    def spy(*args: object, **kwargs: object) -> object:
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    model, _ = load_classifier(str(tmp_path / "model"), LABELS, allow_pickle=True)
    assert calls and all(flag is True for flag in calls), calls
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, state[name]), name


@pytest.mark.parametrize("container", ["plain pickle", "torch.save zip"])
def test_a_pickle_that_would_run_code_is_not_run_even_when_pickles_are_allowed(tmp_path: Path, container: str) -> None:
    folder, _ = saved_model(tmp_path / "model")
    (folder / "model.safetensors").unlink()
    marker = tmp_path / "code-ran"
    payload = {"resnet.embedder.embedder.convolution.weight": RunsCode(marker)}
    if container == "plain pickle":
        (folder / "pytorch_model.bin").write_bytes(pickle.dumps(payload, protocol=2))
    else:
        torch.save(payload, folder / "pytorch_model.bin")
    pickle.loads(pickle.dumps(RunsCode(tmp_path / "control")))  # the payload does run when unpickled plainly
    assert (tmp_path / "control").read_text() == "ran"

    with pytest.raises(DataError, match="objects other than tensors") as error:
        load_classifier(str(folder), LABELS, allow_pickle=True)
    assert "\n" not in str(error.value)
    assert not marker.exists()


def test_resuming_from_a_checkpoint_with_hostile_pickled_state_does_not_run_it(tmp_path: Path) -> None:
    script = faults.load_script("finetune")
    make_medmnist_npz(tmp_path / "data" / "breastmnist.npz")
    values = tiny_run_config(tmp_path, tmp_path / "data", max_steps=4, save_strategy="steps", save_steps=2)
    config = write_config(tmp_path / "run.yaml", **values)
    script.main([str(config), "--max_steps", "2"])
    checkpoint = tmp_path / "run" / "checkpoint-2"
    marker = tmp_path / "code-ran"
    torch.save({"python": RunsCode(marker)}, checkpoint / "rng_state.pth")
    with pytest.raises(DataError, match="checkpoint-2 holds pickled") as error:
        script.main([str(config), "--resume_from_checkpoint", str(checkpoint)])
    assert "\n" not in str(error.value)
    assert not marker.exists()


def remote_code_folder(tmp_path: Path, model_type: str) -> tuple[Path, Path]:
    """A checkpoint whose config.json points (auto_map) at its own modeling code, which writes a marker on import."""
    folder, _ = saved_model(tmp_path / "model")
    marker = tmp_path / "remote-code-ran"
    (folder / "custom.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\n"
        "from transformers import ResNetConfig, ResNetForImageClassification\n"
        f"class CustomConfig(ResNetConfig):\n    model_type = {model_type!r}\n"
        "class CustomModel(ResNetForImageClassification):\n    config_class = CustomConfig\n"
    )
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = model_type
    config["auto_map"] = {
        "AutoConfig": "custom.CustomConfig",
        "AutoModelForImageClassification": "custom.CustomModel",
    }
    (folder / "config.json").write_text(json.dumps(config))
    return folder, marker


def test_checkpoint_code_never_runs_unless_the_config_says_so(tmp_path: Path) -> None:
    config_file = write_config(tmp_path / "c.yaml", model_name_or_path="somewhere")
    (model_args,) = parse_config((ModelArguments,), [str(config_file)])
    assert model_args.trust_remote_code is False  # the default when the config says nothing

    folder, marker = remote_code_folder(tmp_path / "known", "resnet")
    model, _ = load_classifier(str(folder), LABELS)  # a known architecture: transformers' own class, not custom.py
    assert type(model).__name__ == "ResNetForImageClassification"
    assert not marker.exists()

    folder, marker = remote_code_folder(tmp_path / "unknown", "customnet")
    with pytest.raises(DataError, match="needs its own Python code.*trust_remote_code: true") as error:
        load_classifier(str(folder), LABELS)
    assert "\n" not in str(error.value)
    assert not marker.exists()

    with pytest.raises(DataError):  # the custom class is not an image classifier transformers knows
        load_classifier(str(folder), LABELS, trust_remote_code=True)
    assert marker.read_text() == "ran"  # the switch, and only the switch, lets it run


def test_recorded_commands_mask_every_token_value() -> None:
    argv = ["run.yaml", "--hub_token", TOKEN, "--seed", "3", f"--hub_token={TOKEN}", "--push_to_hub"]
    masked = ["run.yaml", "--hub_token", "REDACTED", "--seed", "3", "--hub_token=REDACTED", "--push_to_hub"]
    assert recordable_argv(argv) == masked


def test_hub_token_moves_from_the_arguments_to_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import TrainingArguments

    monkeypatch.setenv("HF_TOKEN", "")
    args = TrainingArguments(output_dir="unused", hub_token=TOKEN, use_cpu=True, report_to="none")
    hide_hub_token(args)
    assert args.hub_token is None and os.environ["HF_TOKEN"] == TOKEN


@pytest.mark.slow
def test_hub_token_never_appears_in_outputs_or_logs(tmp_path: Path) -> None:
    """A distillation run given --hub_token, saving checkpoints, caching teacher logits, writing its card, then
    failing to publish (the Hub unreachable): no file it leaves and no line it prints holds the token."""
    make_medmnist_npz(tmp_path / "data" / "breastmnist.npz")
    teacher, _ = saved_model(tmp_path / "teacher")
    values = tiny_run_config(
        tmp_path,
        tmp_path / "data",
        output_dir=str(tmp_path / "student"),
        teacher_model_name_or_path=str(teacher),
        train_augmentation=False,
        train_baseline=False,
        latency_repeats=1,
        max_steps=2,
        save_strategy="steps",
        save_steps=1,
        push_to_hub=True,
        hub_model_id="someone/tiny-student",
    )
    config = write_config(tmp_path / "run.yaml", **values)
    log = tmp_path / "logs" / "run.log"
    log.parent.mkdir()
    # Online as far as the script can tell (so that it trains before pushing), with a Hub that refuses at once.
    unreachable_hub = {"HF_HUB_OFFLINE": "0", "HF_DATASETS_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"}
    result = faults.run(
        faults.command("distill", config, "--hub_token", TOKEN), log, faults.environment(**unreachable_hub)
    )
    assert result.returncode == 2, result.stdout[-3000:]  # everything written, then the push fails
    assert "error: Could not push" in result.stdout

    written = [path for path in tmp_path.rglob("*") if path.is_file() and path != config]
    names = {path.relative_to(tmp_path).as_posix() for path in written}
    for expected in (
        "student/checkpoint-1/training_args.bin",
        "student/training_args.bin",
        "student/metrics.json",
        "student/results.md",
        "student/README.md",
        "logs/run.log",
    ):
        assert expected in names
    assert any(name.startswith("student/teacher-logits/") for name in names)
    leaked = [path for path in written if TOKEN.encode() in path.read_bytes()]
    assert not leaked
    assert "--hub_token REDACTED" in json.loads((tmp_path / "student" / "metrics.json").read_text())["command"]
