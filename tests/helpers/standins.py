"""Stand-ins for what the shipped recipes download: Hub checkpoints laid out as the Hugging Face cache lays out a
download, and small generated datasets of each recipe's shape.

The checkpoints come from the published configs in ``../shared/hub-standins/<org>--<name>/`` (read only), built
with random weights. With ``HF_HOME`` at the cache written here and ``HF_HUB_OFFLINE=1``, ``from_pretrained(
"<org>/<name>")`` and ``load_dataset("<name>")`` resolve through huggingface_hub's cache lookup as for a user who
downloaded them once.

Two caches are built from them (`StandinCaches`): one of the checkpoints at their published configs exactly, and one
where the checkpoints in `SMALLER_STANDINS` have those few config fields changed (every other field, the published
preprocessor, the Hub id and the cache layout as published), for the recipe rehearsals that do not need the
published size (tests/helpers/rehearsal.py says which rehearsals run the published configs). Each checkpoint is
built the first time a test asks for it, so a session that needs no published ViT-B/16 never builds one.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

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
# The published config fields that a smaller stand-in changes, and nothing else: fewer of the repeated blocks, and
# narrower ones. What a recipe exercises in a checkpoint stays as published: its model_type and architecture class
# (so the same head is replaced, or created where the published checkpoint has none), the kinds of layer it has and
# their order, its input (channels, patch and image size) and its published preprocessor. The head is rebuilt
# from the config's width and every layer's shape follows from it, so no rehearsal depends on the width; the blocks
# left out only repeat the ones kept. Both multiply the cost of every forward pass of every rehearsal that starts
# from the checkpoint: training, evaluation, explanation, and the latency figures' batches of 64 at 224 px.
# tests/helpers/rehearsal.py keeps one rehearsal per architecture family at the published configs.
SMALLER_STANDINS: dict[str, dict[str, Any]] = {
    # ViT-B/16 (12 blocks, 768 wide, about 17.5 GFLOPs per 224 px image): one block 192 wide, with the published 12
    # heads (of 16 dimensions) and 4x MLP, about 0.25 GFLOPs. The 16 px patch embedding of a 224 px image, the
    # position embeddings, the final layernorm, the in21k checkpoint's pooler and missing head and the other's
    # 1000-label head stay; Grad-CAM reads the last block's first layernorm, which one block still has.
    "google/vit-base-patch16-224-in21k": {
        "num_hidden_layers": 1,
        "hidden_size": 192,
        "intermediate_size": 768,
    },
    "google/vit-base-patch16-224": {
        "num_hidden_layers": 1,
        "hidden_size": 192,
        "intermediate_size": 768,
    },
    # ResNet-18 (1.8 GFLOPs per 224 px image): one basic block per stage instead of two, a quarter as wide (about
    # 0.06 GFLOPs). The stem with its max-pool, the four stages (so Grad-CAM's last stage is still 7x7 at 224 px),
    # the first stage's identity shortcut (the stem's width is still the first stage's) and the later stages'
    # strided projection shortcuts all stay; each stage's second block (stride 1, identity shortcut) is of the kind
    # the first stage's block already is.
    "microsoft/resnet-18": {"depths": [1, 1, 1, 1], "embedding_size": 16, "hidden_sizes": [16, 32, 64, 128]},
}


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


def cache_checkpoint(hf_home: Path, repo_id: str, seed: int = 0, changes: dict[str, Any] | None = None) -> Path:
    """Build `repo_id` from its published config (with `changes` to its fields, if any) with random weights and
    save it into the cache's snapshot, beside the published preprocessor config.

    Returns:
        The snapshot folder (``config.json``, ``model.safetensors``, ``preprocessor_config.json``).
    """
    published = HUB_STANDINS / repo_id.replace("/", "--")
    config = AutoConfig.from_pretrained(published, **(changes or {}))
    # The published architecture (ViTModel for the in21k checkpoint, which has no head), as the Hub serves it.
    model_class = getattr(transformers, config.architectures[0])
    transformers.set_seed(seed)
    snapshot = _snapshot(hf_home, "model", repo_id)
    model_class(config).save_pretrained(snapshot)
    shutil.copyfile(published / "preprocessor_config.json", snapshot / "preprocessor_config.json")
    return snapshot


class StandinCaches:
    """Two Hugging Face homes under `root`, ``published/`` (the stand-ins at their published configs) and
    ``smaller/`` (with `SMALLER_STANDINS`' changes where a checkpoint has some), each checkpoint built into its home
    the first time `home` is asked for it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.built: set[tuple[str, bool]] = set()

    def home(self, repo_ids: list[str], smaller: bool = False) -> Path:
        """The home holding (at least) `repo_ids`, smaller ones where `smaller`; give it to subprocesses as HF_HOME."""
        hf_home = self.root / ("smaller" if smaller else "published")
        hf_home.mkdir(parents=True, exist_ok=True)
        for repo_id in repo_ids:
            if (repo_id, smaller) not in self.built:
                cache_checkpoint(hf_home, repo_id, changes=SMALLER_STANDINS.get(repo_id) if smaller else None)
                self.built.add((repo_id, smaller))
        return hf_home


def config_differences(repo_id: str, config: Any) -> dict[str, Any]:
    """The fields of `config` (a stand-in's, as transformers reads it) whose values differ from the published
    config's, both with transformers' defaults filled in; {} for a stand-in at the published config."""
    published = AutoConfig.from_pretrained(HUB_STANDINS / repo_id.replace("/", "--")).to_dict()
    ours = config.to_dict()
    # The published files predate transformers recording the weights' dtype; their weights are float32, as the
    # stand-ins' are, and save_pretrained records that.
    if published.get("dtype") is None:
        published["dtype"] = "float32"
    ignored = {"_name_or_path", "transformers_version"}  # where it was read from, which library wrote it
    absent = "<absent>"  # a field only one of them has differs, whatever its value
    return {
        name: ours.get(name, absent)
        for name in sorted((set(published) | set(ours)) - ignored)
        if name not in ours or name not in published or ours[name] != published[name]
    }


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


def published_model_type(repo_id: str) -> str:
    """The architecture family of a Hub checkpoint: its published config's ``model_type``."""
    return json.loads((HUB_STANDINS / repo_id.replace("/", "--") / "config.json").read_text())["model_type"]


def describe_cache(hf_home: Path) -> dict[str, str]:
    """Each cached repo folder and the commit its ``refs/main`` names (for failure messages)."""
    hub = hf_home / "hub"
    return {repo.name: (repo / "refs" / "main").read_text() for repo in sorted(hub.iterdir())} if hub.is_dir() else {}


def published_preprocessor(repo_id: str) -> dict:
    return json.loads((HUB_STANDINS / repo_id.replace("/", "--") / "preprocessor_config.json").read_text())
