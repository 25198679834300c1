"""`scripts/app.py --export_space DIR`: the explorer written as a ready Hugging Face Space folder, and its push."""

from __future__ import annotations

import importlib.metadata
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytest.importorskip("gradio", reason="the explorer needs the app extra: pip install -e '.[app]'")

from pipelines.errors import ConfigError, OfflineError  # noqa: E402

from helpers.models import TINY_RESNET, save_classifier
from helpers.project import ROOT, load_script


@pytest.fixture(scope="module")
def teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved tiny model in a run folder, with what a run leaves beside the model (not for a Space)."""
    folder = Path(save_classifier(tmp_path_factory.mktemp("runs") / "teacher", TINY_RESNET))
    (folder / "checkpoint-10").mkdir()
    (folder / "checkpoint-10" / "model.safetensors").write_bytes(b"old")
    (folder / "_run.lock").write_text("pid 1")
    (folder / "training_args.bin").write_bytes(b"pickle")
    return folder


def _export(teacher: Path, data_dir: Path, out: Path, *extra: str) -> None:
    load_script("app").main(
        [
            *("--models", str(teacher), "someone/student", "--max_images", "16", "--dataset_name", "breastmnist"),
            *("--data_dir", str(data_dir), "--verify_md5", "false", "--export_space", str(out), *extra),
        ]
    )


def _header(readme: str) -> dict:
    match = re.match(r"---\n(.*?)\n---\n", readme, re.DOTALL)
    assert match, "README.md starts with a YAML header between --- lines"
    return yaml.safe_load(match.group(1))


def test_the_exported_space_folder_runs_the_explorer_on_its_models(teacher: Path, tmp_path: Path) -> None:
    out = tmp_path / "space"
    _export(teacher, tmp_path / "medmnist", out)

    readme = (out / "README.md").read_text()
    header = _header(readme)
    assert header["sdk"] == "gradio" and header["sdk_version"] == importlib.metadata.version("gradio")
    assert header["app_file"] == "app.py" and (out / header["app_file"]).is_file()
    assert header["models"] == ["someone/student"]  # the Hub id is a link; a local folder is not
    assert "datasets" not in header  # MedMNIST is no Hub dataset
    assert len(header["short_description"]) <= 60  # the Hub refuses a longer one
    assert "Research use only, not for diagnosis" in readme

    # The page, this project's two packages it imports, and the local model's weights and configs: nothing else.
    assert (out / "explorer_app.py").read_bytes() == (ROOT / "scripts" / "app.py").read_bytes()
    assert (out / "explain" / "explorer.py").is_file() and (out / "pipelines" / "collate.py").is_file()
    assert not (out / "trainers").exists() and not list(out.rglob("__pycache__"))
    assert sorted(path.name for path in (out / "models" / "teacher").iterdir()) == [
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
    ]

    command = re.search(r"os.environ.setdefault\('EXPLORER_ARGS', '(.*)'\)", (out / "app.py").read_text()).group(1)
    assert shlex.split(command) == [
        *("--models", "models/teacher", "someone/student", "--explain_images", "16"),
        *("--dataset_name", "breastmnist"),  # no data_dir of this machine: the Space downloads MedMNIST's file
    ]
    for text in (readme, (out / "app.py").read_text()):
        assert str(tmp_path) not in text and str(teacher) not in text

    pins = dict(line.split("==") for line in (out / "requirements.txt").read_text().splitlines() if "==" in line)
    declared = [re.split(r"[<>=!;\[ ]", text)[0] for text in importlib.metadata.requires("see-what-you-shrink")]
    needed = {
        name for name, text in zip(declared, importlib.metadata.requires("see-what-you-shrink")) if "extra" not in text
    }
    assert needed | {"numpy", "pillow"} == set(pins)
    assert all(importlib.metadata.version(name) == version for name, version in pins.items())
    assert "gradio" not in pins  # sdk_version installs it


@pytest.mark.slow
def test_the_exported_app_imports_the_copied_packages(teacher: Path, tmp_path: Path) -> None:
    out = tmp_path / "space"
    _export(teacher, tmp_path / "medmnist", out)
    # From its own folder, as a Space runs it: this checkout's packages are not on the path.
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    run = subprocess.run(
        [sys.executable, "-c", "import explain, explorer_app; print(explain.__file__)"],
        cwd=out,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert Path(run.stdout.strip()) == out / "explain" / "__init__.py"


def test_a_hub_dataset_is_linked_from_the_header(teacher: Path, tmp_path: Path) -> None:
    out = tmp_path / "space"
    load_script("app").main(
        ["--models", str(teacher), "--dataset_source", "hub", "--dataset_name", "someone/xrays"]
        + ["--export_space", str(out)]
    )
    header = _header((out / "README.md").read_text())
    assert header["datasets"] == ["someone/xrays"] and "models" not in header  # the only model is a local folder
    assert "--dataset_source hub --dataset_name someone/xrays" in (out / "app.py").read_text()


def test_an_export_refuses_what_a_space_cannot_reach_before_writing(teacher: Path, tmp_path: Path) -> None:
    script = load_script("app")
    out = tmp_path / "space"
    with pytest.raises(ConfigError, match="A Space cannot read a dataset on this machine"):
        script.main(
            ["--models", str(teacher), "--dataset_source", "folder", "--data_dir", str(tmp_path)]
            + ["--export_space", str(out)]
        )
    with pytest.raises(ConfigError, match="Model runs/x/teacher is neither a folder here nor a Hub id"):
        script.main(["--models", "runs/x/teacher", "--dataset_name", "breastmnist", "--export_space", str(out)])
    assert not out.exists()
    (out / "notes").mkdir(parents=True)
    with pytest.raises(ConfigError, match="holds other files; give a new or empty folder"):
        script.main(["--models", str(teacher), "--dataset_name", "breastmnist", "--export_space", str(out)])


def test_a_push_is_refused_offline_before_any_work(teacher: Path, tmp_path: Path) -> None:
    assert os.environ.get("HF_HUB_OFFLINE") == "1"  # as every test runs
    out = tmp_path / "space"
    with pytest.raises(
        OfflineError, match=r"^push_to_hub is set, but me/explorer could not be published once the Space"
    ):
        _export(teacher, tmp_path, out, "--push_to_hub", "me/explorer")
    assert not out.exists()


class RecordingApi:
    calls: list[tuple[str, dict]] = []

    def create_repo(self, repo_id: str, **options: object) -> str:
        self.calls.append(("create_repo", {"repo_id": repo_id, **options}))
        return f"https://huggingface.co/spaces/{repo_id}"

    def upload_folder(self, **options: object) -> None:
        self.calls.append(("upload_folder", options))


@pytest.mark.parametrize("flags, private", [((), True), (("--hub_private_repo", "false"), False)])
def test_a_pushed_space_is_private_unless_said(
    teacher: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flags: tuple[str, ...], private: bool
) -> None:
    import explain.space

    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")  # the check before any push asks for one
    monkeypatch.setattr(explain.space, "HfApi", RecordingApi)
    RecordingApi.calls = []
    out = tmp_path / "space"
    _export(teacher, tmp_path, out, "--push_to_hub", "me/explorer", *flags)
    (create, created), (upload, uploaded) = RecordingApi.calls
    assert create == "create_repo" and created["repo_type"] == "space" and created["space_sdk"] == "gradio"
    assert created["private"] is private and created["repo_id"] == "me/explorer"
    assert upload == "upload_folder" and uploaded["folder_path"] == str(out) and uploaded["repo_type"] == "space"
