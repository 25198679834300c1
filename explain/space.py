"""The explorer as a Hugging Face Space: a folder that runs it, and its push to the Hub.

The folder holds ``app.py`` (sets the explorer's command line, `explain.explorer.SPACE_ARGS`, and runs the page),
``explorer_app.py`` (the page: a copy of ``scripts/app.py``), this project's ``explain`` and ``pipelines`` packages,
the local model folders it shows (weights and configs only), ``requirements.txt`` pinned to the versions installed
here, and ``README.md`` with the Space's YAML header.

The Space gets this project's code as a copy of the two packages the page imports, not as a pip requirement on the
project's repository: it runs exactly the code the export ran with, needs no published repository or release, and
uploads nothing else (no trainers, scripts or tests). Hub models and datasets stay Hub ids, linked from the header;
a MedMNIST file is downloaded by the Space itself (official URL, MD5 checked), as on any machine without it.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import platform
import re
import shlex
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import HfApi
from huggingface_hub.utils import HFValidationError, validate_repo_id

import explain
import pipelines
from explain.explorer import SPACE_ARGS, AppArguments
from pipelines.arguments import DataArguments
from pipelines.errors import ConfigError
from pipelines.publishing import check_push_possible

PROJECT = "see-what-you-shrink"  # the distribution whose declared requirements the Space pins
EXTRA_PINS = ("numpy", "pillow")  # not declared by the project, but the page's pixels depend on their versions
PACKAGES = (explain, pipelines)
PAGE_FILE = "explorer_app.py"
MODEL_FILES = ("config.json", "preprocessor_config.json", "*.safetensors", "*.safetensors.index.json")
# Options of the page that the Space decides itself (its host and port) or that name this machine.
NOT_EXPORTED = {"host", "port", "device", "share_safe"}
# A MedMNIST file on this machine is not in the Space, which downloads the official one (always MD5 checked).
NOT_EXPORTED_MEDMNIST = {"data_dir", "download", "verify_md5"}


@dataclass
class SpaceArguments:
    """Write the explorer, with its models and dataset, as a Hugging Face Space folder, and push it."""

    export_space: str | None = field(
        default=None,
        metadata={
            "help": "Write a ready Hugging Face Space of the explorer (these models, this dataset) into this folder, "
            "then exit without serving."
        },
    )
    push_to_hub: str | None = field(
        default=None,
        metadata={"help": "Push the exported Space to this Hub repo (user/name); needs --export_space."},
    )
    hub_private_repo: bool = field(
        default=True, metadata={"help": "Make the pushed Space private (the default); false publishes it."}
    )

    def __post_init__(self) -> None:
        if self.push_to_hub and not self.export_space:
            raise ConfigError("--push_to_hub needs --export_space DIR, the folder to write and push.")
        if self.push_to_hub:  # the one check every push makes, before any work: online, with a token
            check_push_possible(self.push_to_hub, after="once the Space is exported")


def export_space(folder: str | Path, args: AppArguments, data_args: DataArguments, page: Path) -> Path:
    """Write the Space folder (see the module's docstring) for the explorer `args` and `data_args` describe.

    Args:
        folder: Where to write it: a new or empty folder, or an earlier export (whose parts are replaced).
        page: The page's script (``scripts/app.py``), copied as the Space's `PAGE_FILE`.

    Returns:
        The folder.

    Raises:
        ConfigError: a folder holding something else, a model that is neither a local folder nor a Hub id (or has
            no safetensors weights), or a dataset that lives only on this machine.
    """
    folder = Path(folder)
    check_target(folder)
    check_dataset(data_args)
    models = space_models(args.models)  # checked before anything is written
    for stale in ("models", *(Path(package.__file__).parent.name for package in PACKAGES)):
        shutil.rmtree(folder / stale, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    for name, inside in models.items():
        if inside != name:
            copy_model(Path(name), folder / inside)
    for package in PACKAGES:
        source = Path(package.__file__).parent
        shutil.copytree(source, folder / source.name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copyfile(page, folder / PAGE_FILE)
    exported = dataclasses.replace(args, models=list(models.values()))
    command = space_command_line(exported, data_args)
    (folder / "app.py").write_text(launcher(command))
    (folder / "requirements.txt").write_text(requirements())
    hub_models = [name for name, inside in models.items() if inside == name]
    hub_datasets = [data_args.dataset_name] if data_args.dataset_source == "hub" else []
    (folder / "README.md").write_text(readme(command, hub_models, hub_datasets))
    return folder


def check_target(folder: Path) -> None:
    """Refuse a folder that holds anything but an earlier export: its files would be mixed into the Space."""
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"--export_space {folder} is a file; give a folder to write the Space into.")
    if folder.is_dir() and any(folder.iterdir()) and not (folder / PAGE_FILE).is_file():
        raise ConfigError(
            f"--export_space {folder} holds other files; give a new or empty folder (or an earlier export)."
        )


def check_dataset(data_args: DataArguments) -> None:
    """Refuse a dataset the Space could not reach: an image folder, or a Hub dataset saved on this machine."""
    local = data_args.dataset_source == "folder" or (
        data_args.dataset_source == "hub" and Path(data_args.dataset_name or "").exists()
    )
    if local:
        raise ConfigError(
            "A Space cannot read a dataset on this machine; push it to the Hub (datasets' push_to_hub) and export "
            "with --dataset_source hub --dataset_name user/name."
        )


def space_models(names: Sequence[str]) -> dict[str, str]:
    """Each model's name in the Space: a local folder becomes ``models/<folder name>`` (copied there), a Hub id stays.

    Raises:
        ConfigError: a name that is neither a folder here nor a Hub id, a folder without safetensors weights, or two
            folders of one name.
    """
    inside: dict[str, str] = {}
    for name in names:
        path = Path(name)
        if path.is_dir():
            if not any(path.glob("*.safetensors")):
                raise ConfigError(f"Model {name} has no safetensors weights; save it with save_pretrained first.")
            inside[name] = f"models/{path.resolve().name}"
            continue
        try:
            validate_repo_id(name)
        except HFValidationError:
            raise ConfigError(f"Model {name} is neither a folder here nor a Hub id (user/name).") from None
        inside[name] = name
    if len(set(inside.values())) < len(inside):
        raise ConfigError("Two model folders have one name; the Space keeps each as models/<folder name>.")
    return inside


def copy_model(source: Path, target: Path) -> None:
    """The files `from_pretrained` reads (configs and safetensors weights), not checkpoints, logs or locks."""
    target.mkdir(parents=True, exist_ok=True)
    for pattern in MODEL_FILES:
        for path in source.glob(pattern):
            shutil.copyfile(path, target / path.name)


def space_command_line(args: AppArguments, data_args: DataArguments) -> list[str]:
    """The explorer's options that differ from their defaults, as a command line, less what the Space decides."""
    skip = NOT_EXPORTED | (NOT_EXPORTED_MEDMNIST if data_args.dataset_source == "medmnist" else set())
    return changed_flags(args, skip) + changed_flags(data_args, skip)


def changed_flags(instance: Any, skip: set[str]) -> list[str]:
    tokens = []
    for option in dataclasses.fields(instance):
        value = getattr(instance, option.name)
        if option.name in skip or value is None or value == default_of(option):
            continue
        values = value if isinstance(value, list) else [value]
        tokens += [f"--{option.name}", *(str(v).lower() if isinstance(v, bool) else str(v) for v in values)]
    return tokens


def default_of(option: dataclasses.Field) -> Any:
    if option.default is not dataclasses.MISSING:
        return option.default
    if option.default_factory is not dataclasses.MISSING:
        return option.default_factory()
    return dataclasses.MISSING


def launcher(command: list[str]) -> str:
    """The Space's app.py: the explorer's command line as `SPACE_ARGS` (a Space variable of that name wins), then
    the page, which a Space runs without arguments and serves on GRADIO_SERVER_NAME."""
    return (
        '"""The explorer as a Hugging Face Space, written by `python scripts/app.py --export_space`.\n\n'
        f"Another command line: set the Space variable {SPACE_ARGS}; run here: python app.py\n"
        '"""\n\n'
        "import os\n\n"
        f"os.environ.setdefault({SPACE_ARGS!r}, {shlex.join(command)!r})\n\n"
        "from explorer_app import main  # noqa: E402\n"
        "from pipelines import run_cli  # noqa: E402\n\n"
        'if __name__ == "__main__":\n'
        "    run_cli(main)\n"
    )


def requirements() -> str:
    """requirements.txt: the project's own requirements (not its extras) and `EXTRA_PINS`, each pinned to the
    version installed here. Not gradio: the header's sdk_version installs it.

    Raises:
        ConfigError: the project is not installed (its requirements are read from its installed metadata).
    """
    try:
        declared = importlib.metadata.requires(PROJECT) or []
    except importlib.metadata.PackageNotFoundError:
        raise ConfigError(
            f"{PROJECT} is not installed; pip install -e . so that its requirements can be pinned."
        ) from None
    names = [re.match(r"[A-Za-z0-9._-]+", text).group(0) for text in declared if "extra ==" not in text]
    names += list(EXTRA_PINS)
    pins = [f"{name}=={importlib.metadata.version(name)}" for name in dict.fromkeys(names)]
    return f"# Pinned to the versions the export ran with ({PROJECT}'s requirements).\n" + "\n".join(pins) + "\n"


def readme(command: list[str], hub_models: Sequence[str], hub_datasets: Sequence[str]) -> str:
    """README.md: the Space's YAML header (sdk, sdk_version, app_file, models and datasets on the Hub) and what the
    Space shows."""
    header: dict[str, Any] = {
        "title": "See What You Shrink explorer",
        "emoji": "🔍",
        "colorFrom": "blue",
        "colorTo": "red",
        "sdk": "gradio",
        "sdk_version": importlib.metadata.version("gradio"),
        "python_version": platform.python_version().rpartition(".")[0],
        "app_file": "app.py",
        "pinned": False,
        "license": "apache-2.0",
        "short_description": "Image classifiers' predictions and maps. Research use only.",  # at most 60 characters
    }
    if hub_models:
        header["models"] = list(hub_models)
    if hub_datasets:
        header["datasets"] = list(hub_datasets)
    front = yaml.safe_dump(header, sort_keys=False, allow_unicode=True)
    return (
        f"---\n{front}---\n\n"
        "# See What You Shrink: explorer\n\n"
        "Compare image classifiers (a teacher and its students) image by image: each model's prediction, its "
        "explanation map and how closely the maps agree, on clean or corrupted images, or on an image you upload.\n\n"
        "**Research use only, not for diagnosis.** A map shows where a model looked, not whether it is right.\n\n"
        "Visitors can load only the models this Space was made with (a Space serves publicly, so the explorer "
        "keeps them to those); what one visitor loads, no other sees.\n\n"
        f"Command line (the Space variable {SPACE_ARGS} replaces it):\n\n"
        f"```\n{shlex.join(command)}\n```\n\n"
        "Written by `python scripts/app.py --export_space`.\n"
    )


def push_space(folder: Path, repo_id: str, private: bool = True) -> str:
    """Create the Space repo (private unless `private` is False) if needed, upload the folder, return its URL."""
    api = HfApi()
    url = api.create_repo(repo_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
    api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="space", commit_message="Explorer export")
    return str(url)
