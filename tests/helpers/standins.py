"""Stand-ins for what the shipped recipes download: Hub checkpoints laid out as the Hugging Face cache lays out a
download, and small generated datasets of each recipe's shape.

The checkpoints come from the published configs in ``../shared/hub-standins/<org>--<name>/`` (read only), built
with random weights. With ``HF_HOME`` at the cache written here and ``HF_HUB_OFFLINE=1``, ``from_pretrained(
"<org>/<name>")`` and ``load_dataset("<name>")`` resolve through huggingface_hub's cache lookup as for a user who
downloaded them once.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import transformers
from PIL import Image as PILImage
from transformers import AutoConfig

HUB_STANDINS = Path(__file__).resolve().parents[3] / "shared" / "hub-standins"

# A stand-in cifar10 has CIFAR-10's columns and class names; the rehearsal only needs its shape.
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
# Images per split: a handful, so that a 224 px ViT-B step stays around a second on a 2-core CPU, and two
# steps of batch 2 make one epoch (the recipes evaluate, save and reload the best checkpoint at epoch ends).
SPLIT_COUNTS = {"train": 4, "val": 4, "test": 4}


def standin_ids() -> list[str]:
    """The Hub ids there are stand-ins for, e.g. ``facebook/deit-tiny-patch16-224``."""
    if not HUB_STANDINS.is_dir():
        return []
    return sorted(folder.name.replace("--", "/", 1) for folder in HUB_STANDINS.iterdir() if folder.is_dir())


def _commit(repo_id: str) -> str:
    """A 40-hex commit id, fixed per repo, as the cache names its snapshot folders."""
    return hashlib.sha1(repo_id.encode()).hexdigest()


def _snapshot(hf_home: Path, kind: str, repo_id: str) -> Path:
    """Create ``hub/<kind>s--<org>--<name>/refs/main`` and return the empty snapshot folder it points at."""
    repo = hf_home / "hub" / f"{kind}s--{repo_id.replace('/', '--')}"
    commit = _commit(repo_id)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    return snapshot


def cache_checkpoint(hf_home: Path, repo_id: str, seed: int = 0) -> Path:
    """Build `repo_id` from its published config with random weights and save it into the cache's snapshot.

    Returns:
        The snapshot folder (``config.json``, ``model.safetensors``, ``preprocessor_config.json``).
    """
    published = HUB_STANDINS / repo_id.replace("/", "--")
    config = AutoConfig.from_pretrained(published)
    # The published architecture (ViTModel for the in21k checkpoint, which has no head), as the Hub serves it.
    model_class = getattr(transformers, config.architectures[0])
    transformers.set_seed(seed)
    snapshot = _snapshot(hf_home, "model", repo_id)
    model_class(config).save_pretrained(snapshot)
    shutil.copyfile(published / "preprocessor_config.json", snapshot / "preprocessor_config.json")
    return snapshot


def labelled_images(count: int, size: int, num_labels: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """uint8 RGB images (count, size, size, 3) whose brightness encodes their label, and the labels (count,)."""
    labels = np.arange(count) % num_labels  # every class early on, so small splits still hold several
    rng.shuffle(labels)
    level = labels * (200 // max(num_labels - 1, 1)) + 20
    noise = rng.integers(0, 40, size=(count, size, size, 3))
    images = np.clip(level[:, None, None, None] + noise, 0, 255).astype(np.uint8)
    return images, labels


def cache_cifar10_like(
    hf_home: Path,
    name: str = "cifar10",
    image_column: str = "img",
    label_column: str = "label",
    size: int = 32,
    seed: int = 0,
) -> Path:
    """A dataset shaped like the Hub's cifar10 (``img`` images, ``label`` ClassLabel of its 10 names, or the
    columns given; train and test splits, no validation), in the datasets cache under ``$HF_HOME/datasets/<name>/``, where a first online
    ``load_dataset(name)`` leaves it and where an offline ``load_dataset(name)`` finds it.

    Returns:
        The folder of parquet files the cache was built from (a dataset repo's layout, named like the repo).
    """
    import datasets

    features = datasets.Features(
        {image_column: datasets.Image(), label_column: datasets.ClassLabel(names=CIFAR10_CLASSES)}
    )
    rng = np.random.default_rng(seed)
    repo = hf_home / "dataset-repos" / name / "plain_text"
    repo.mkdir(parents=True, exist_ok=True)
    # cifar10 has no validation split: the recipe carves it off train (validation_split_fraction).
    for split, count in (("train", SPLIT_COUNTS["train"] + 1), ("test", SPLIT_COUNTS["test"])):
        images, labels = labelled_images(count, size, len(CIFAR10_CLASSES), rng)
        rows = {image_column: [PILImage.fromarray(image) for image in images], label_column: labels.tolist()}
        datasets.Dataset.from_dict(rows, features=features).to_parquet(str(repo / f"{split}-00000-of-00001.parquet"))
    datasets.load_dataset(str(repo.parent), cache_dir=str(hf_home / "datasets"))
    return repo.parent


def write_plants_folder(root: Path, class_names: list[str], size: int = 48, seed: int = 0) -> Path:
    """``train/ val/ test/`` folders of ``{label}_{id}.jpg`` photos, the integer label naming the class."""
    rng = np.random.default_rng(seed)
    for split, count in SPLIT_COUNTS.items():
        (root / split).mkdir(parents=True, exist_ok=True)
        images, labels = labelled_images(count, size, len(class_names), rng)
        for index, (image, label) in enumerate(zip(images, labels)):
            PILImage.fromarray(image).save(root / split / f"{label}_{index:04d}.jpg", quality=95)
    return root


def describe_cache(hf_home: Path) -> dict[str, str]:
    """Each cached repo folder and the commit its ``refs/main`` names (for failure messages)."""
    hub = hf_home / "hub"
    return {repo.name: (repo / "refs" / "main").read_text() for repo in sorted(hub.iterdir())} if hub.is_dir() else {}


def published_preprocessor(repo_id: str) -> dict:
    return json.loads((HUB_STANDINS / repo_id.replace("/", "--") / "preprocessor_config.json").read_text())
