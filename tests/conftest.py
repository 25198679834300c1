"""Shared test set-up: offline Hugging Face libraries, an isolated cache, generated and real MedMNIST data."""

from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path

# Before any Hugging Face import: offline failures are immediate, and nothing is written to the user's cache.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="swys-test-cache-")
os.environ.pop("HF_HOME", None)

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import yaml  # noqa: E402
from medmnist import INFO  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED_MEDMNIST = ROOT.parent / "shared" / "data" / "medmnist"


def load_script(name: str):
    """Import scripts/<name>.py as a module (scripts/ is no package, and stays off sys.path)."""
    spec = importlib.util.spec_from_file_location(f"scripts_{name}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def real_medmnist_root() -> Path | None:
    """The folder holding the real MedMNIST test files, or None when this machine has none."""
    for candidate in (os.environ.get("MEDMNIST_ROOT"), SHARED_MEDMNIST):
        if candidate and (Path(candidate) / "breastmnist.npz").is_file():
            return Path(candidate)
    return None


requires_real_medmnist = pytest.mark.skipif(
    real_medmnist_root() is None,
    reason="real MedMNIST files not found (set MEDMNIST_ROOT or place them in ../shared/data/medmnist)",
)


def make_medmnist_npz(
    path: Path,
    flag: str = "breastmnist",
    size: int = 28,
    counts: tuple[int, int, int] = (40, 12, 16),
    seed: int = 0,
    **overrides: np.ndarray,
) -> Path:
    """Write an npz in MedMNIST's format for `flag` with learnable labels (brightness encodes the class).

    Keys in `overrides` (e.g. ``train_labels=...``) replace the generated arrays, or are dropped when None.
    """
    info = INFO[flag]
    rng = np.random.default_rng(seed)
    num_labels = len(info["label"])
    multi_label = info["task"].startswith("multi-label")
    arrays = {}
    for split, count in zip(("train", "val", "test"), counts):
        if multi_label:
            labels = rng.integers(0, 2, size=(count, num_labels))
            level = labels[:, 0] * 150 + 40
        else:
            labels = rng.integers(0, num_labels, size=(count, 1))
            level = labels[:, 0] * (200 // max(num_labels - 1, 1)) + 20
        shape = (count, size, size) if info["n_channels"] == 1 else (count, size, size, 3)
        noise = rng.integers(0, 40, size=shape)
        images = np.clip(level.reshape((-1,) + (1,) * (len(shape) - 1)) + noise, 0, 255).astype(np.uint8)
        arrays[f"{split}_images"] = images
        arrays[f"{split}_labels"] = labels.astype(np.uint8)
    for key, value in overrides.items():
        if value is None:
            arrays.pop(key, None)
        else:
            arrays[key] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    return path


@pytest.fixture
def npz_dir(tmp_path: Path) -> Path:
    """A folder with a generated BreastMNIST-format file (breastmnist.npz)."""
    make_medmnist_npz(tmp_path / "medmnist" / "breastmnist.npz")
    return tmp_path / "medmnist"


TINY_RESNET = {
    "model_type": "resnet",
    "embedding_size": 8,
    "hidden_sizes": [8, 16],
    "depths": [1, 1],
    "layer_type": "basic",
}
TINY_VIT = {
    "model_type": "vit",
    "image_size": 32,
    "patch_size": 8,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
}
PROCESSOR_32 = {"size": {"height": 32, "width": 32}, "image_mean": [0.5] * 3, "image_std": [0.5] * 3}
PROCESSOR_28 = {**PROCESSOR_32, "size": {"height": 28, "width": 28}}
BREAST_LABELS = ["malignant", "normal, benign"]  # BreastMNIST's


@pytest.fixture
def one_thread():
    """Compute with one thread, as each process of an `accelerate launch` does (accelerate gives each one), so that
    the numbers of a launched run and an in-process run can be compared to the bit."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def save_tiny_classifiers(root: Path, names: tuple[str, str]) -> dict[str, str]:
    """A tiny random ResNet (28 px) and ViT (32 px) for BreastMNIST's labels, saved as `root / names[i]`; seeded by
    each name's length. Returns name -> folder."""
    import torch

    from pipelines.models import build_classifier

    folders = {}
    for name, config, processor in zip(names, (TINY_RESNET, TINY_VIT), (PROCESSOR_28, PROCESSOR_32)):
        torch.manual_seed(len(name))
        model, image_processor = build_classifier(config, BREAST_LABELS, image_processor_config=processor)
        model.save_pretrained(root / name)
        image_processor.save_pretrained(root / name)
        folders[name] = str(root / name)
    return folders


def write_config(path: Path, **values: object) -> Path:
    path.write_text(yaml.safe_dump(values, sort_keys=False))
    return path


def tiny_run_config(tmp_path: Path, data_dir: Path, **overrides: object) -> dict:
    """Settings for a seconds-long fine-tuning run on a generated BreastMNIST-format file."""
    values = {
        "dataset_source": "medmnist",
        "dataset_name": "breastmnist",
        "data_dir": str(data_dir),
        "verify_md5": False,
        "model_config": TINY_RESNET,
        "image_processor_config": PROCESSOR_32,
        "output_dir": str(tmp_path / "run"),
        "do_train": True,
        "max_steps": 4,
        "per_device_train_batch_size": 8,
        "per_device_eval_batch_size": 8,
        "learning_rate": 1.0e-3,
        "eval_strategy": "no",
        "save_strategy": "no",
        "logging_steps": 1,
        "report_to": "none",
        "disable_tqdm": True,
        "use_cpu": True,
        "seed": 0,
    }
    values.update(overrides)
    return values


@pytest.fixture(scope="session")
def standin_hf_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Hugging Face home whose hub cache holds a stand-in of every checkpoint in ../shared/hub-standins/, laid
    out as a download (random weights; see tests/standins.py). Give it to subprocesses as HF_HOME."""
    import standins

    if not standins.HUB_STANDINS.is_dir():
        pytest.skip(f"no stand-in Hub checkpoints: {standins.HUB_STANDINS} is absent")
    home = tmp_path_factory.mktemp("hf-home")
    for repo_id in standins.standin_ids():
        standins.cache_checkpoint(home, repo_id)
    return home


@pytest.fixture(scope="session")
def rehearsals(standin_hf_home: Path, tmp_path_factory: pytest.TempPathFactory):
    """Every recipe in configs/ rehearsed at most once per session (a distill recipe's teacher recipe first)."""
    from rehearsal import Rehearsals

    return Rehearsals(tmp_path_factory.mktemp("rehearsals"), standin_hf_home, sorted((ROOT / "configs").glob("*.yaml")))
