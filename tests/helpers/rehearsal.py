"""Rehearse a shipped recipe as a user runs it: its own script on the unchanged recipe file, offline, against
stand-in checkpoints and stand-in data of the recipe's shape (see tests/helpers/standins.py).

What a recipe needs is read from the file's content (where its data comes from, which checkpoints it starts from,
whether it distils and from which other recipe's output), never from its name. A recipe whose needs cannot be
derived raises `RecipeNeedsUnknown`, so a new recipe that the rehearsal cannot stage fails loudly.

Which stand-ins a rehearsal starts from is the one choice made by name: one rehearsal per architecture family (the
published config's model_type) starts from the published configs, `PUBLISHED_CONFIG_REHEARSALS`:

- ViT: ``deit_tiny_pathmnist`` (facebook/deit-tiny-patch16-224, a plain ViT: 12 blocks, 192 wide);
- DeiT: ``distill_vit_base_to_deit_tiny``, whose student and student without a teacher both start from
  facebook/deit-tiny-distilled-patch16-224;
- ResNet: ``resnet18_pathmnist`` (microsoft/resnet-18).

Every other rehearsal starts from the smaller stand-ins (`standins.SMALLER_STANDINS`, fewer and narrower blocks of
the published configs): ViT-B/16 with one encoder block 192 wide for ``vit_base_pathmnist``, whose output is also
the distillation's teacher, and ``vit_base_cifar10``; ResNet-18 with one block per stage, a quarter as wide, for
``plants_folder``. The quickstart and CIFAR ResNet recipes build their models from their own configs and start from
no checkpoint.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from pipelines.arguments import DataArguments
from pipelines.medmnist_npz import medmnist_file_name, medmnist_info

from helpers.data import make_medmnist_npz
from helpers.project import ROOT
from helpers.standins import (
    CIFAR10_CLASSES,
    SPLIT_COUNTS,
    StandinCaches,
    cache_cifar10_like,
    published_model_type,
    standin_ids,
    write_plants_folder,
)

# Data fields that `python -m explain` and scripts/report.py take as the recipe's script does.
DATA_FIELDS = tuple(DataArguments.__dataclass_fields__)
# Small enough that a ViT-B step at 224 px stays around a second on a 2-core CPU.
FAST_TRAINING = {
    "max_steps": 2,
    "per_device_train_batch_size": 2,
    "per_device_eval_batch_size": 2,
    "dataloader_num_workers": 0,
    "precision": "fp32",
    "disable_tqdm": True,
    "logging_steps": 1,  # training_curves.png needs a logged loss
}
# The report's paired test against random maps and ROAD cost (1 + R) x (curves + ROAD fractions) passes per image,
# several minutes of ViT-B at 224 px on this CPU with their defaults: one random map, two steps, one fraction.
FAST_EVALUATE = [
    *("--explain_images", "4", "--latency_repeats", "1", "--steps", "2", "--batch_size", "4"),
    *("--random_maps", "1", "--random_steps", "2", "--paired_images", "2", "--road_fractions", "0.5"),
]
# Grad-CAM only: the other nine methods each cost a ViT-B forward and backward pass per image at 224 px, and the
# rehearsal shows that the recipe's outputs can be explained, not every method (tests/test_explain_*.py do that).
FAST_EXPLAIN = ["--n", "2", "--batch_size", "4", "--precision", "fp32", "--methods", "gradcam"]
SCRIPT_TIMEOUT_S = 1800  # a stuck run fails the test rather than the whole suite
# Architecture family -> the recipe whose rehearsal starts from that family's published configs (see the module
# docstring): the cheapest checkpoint of each family, so the published size is rehearsed once and paid once.
PUBLISHED_CONFIG_REHEARSALS = {
    "vit": "deit_tiny_pathmnist",
    "deit": "distill_vit_base_to_deit_tiny",
    "resnet": "resnet18_pathmnist",
}


class RecipeNeedsUnknown(AssertionError):
    """The rehearsal cannot tell what this recipe needs (a new data source, an unknown checkpoint, ...)."""


def published_config_rehearsals(recipes: list[Path]) -> dict[str, Path]:
    """Family -> the recipe rehearsed at that family's published configs, checked against the recipes' content:
    every family that a recipe's Hub checkpoint belongs to has one, and that recipe starts from a checkpoint of it.

    Raises:
        RecipeNeedsUnknown: a family has no such recipe (a new family, or the named recipe was renamed or changed).
    """
    families: dict[str, set[str]] = {}
    by_stem = {recipe.stem: recipe for recipe in recipes}
    for recipe in recipes:
        for name in hub_checkpoints(read_recipe(recipe)):
            if name in standin_ids():
                families.setdefault(published_model_type(name), set()).add(recipe.stem)
    chosen = {}
    for family, users in sorted(families.items()):
        stem = PUBLISHED_CONFIG_REHEARSALS.get(family)
        if stem not in users:
            raise RecipeNeedsUnknown(
                f"No rehearsal starts from the published config of a '{family}' checkpoint: "
                f"PUBLISHED_CONFIG_REHEARSALS names {stem!r}, and the recipes starting from one are "
                f"{', '.join(sorted(users))}; name the cheapest of them."
            )
        chosen[family] = by_stem[stem]
    return chosen


@dataclass
class Rehearsed:
    """What one rehearsal ran and wrote."""

    recipe: Path
    values: dict[str, Any]  # the recipe file's own content
    overrides: dict[str, Any]
    data_cli: list[str]  # the data arguments for python -m explain / report.py
    label_names: list[str]
    folders: dict[str, Path]  # role -> saved model folder: "model", or "student"/"baseline" (and "teacher")
    hf_home: Path  # the stand-in Hugging Face home it ran against
    published_configs: bool  # its Hub checkpoints were at their published configs, else the smaller stand-ins
    logs: dict[str, str] = field(default_factory=dict)


def read_recipe(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text()) or {}


def is_distill_recipe(values: dict[str, Any]) -> bool:
    return "teacher_model_name_or_path" in values


def hub_checkpoints(values: dict[str, Any]) -> list[str]:
    """The Hub ids the recipe starts from (student and, for a distill recipe, a Hub teacher)."""
    names = [values.get("model_name_or_path"), values.get("teacher_model_name_or_path")]
    return [name for name in names if name and not Path(name).exists() and name.count("/") == 1]


def cli(values: dict[str, Any]) -> list[str]:
    """``--key value`` arguments (lists as space-separated items, as HfArgumentParser's --help shows them)."""
    args: list[str] = []
    for key, value in values.items():
        if isinstance(value, list):
            args += [f"--{key}", *map(str, value)]
        elif isinstance(value, dict):
            args += [f"--{key}", yaml.safe_dump(value, default_flow_style=True).strip()]
        else:
            args += [
                f"--{key}",
                "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value),
            ]
    return args


def run_script(script: str, args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / script), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=SCRIPT_TIMEOUT_S,
    )


def check_ran(result: subprocess.CompletedProcess, what: str) -> str:
    if result.returncode != 0:
        raise AssertionError(f"{what} exited {result.returncode}:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return result.stdout


class Rehearsals:
    """Rehearse recipes once per session, each in its own folder under `root`; a distill recipe's teacher is the
    rehearsal of the recipe whose ``output_dir`` the distill recipe names as its teacher.

    The recipes of `published_config_rehearsals` run against the stand-ins at their published configs, the others
    against the smaller stand-ins (`StandinCaches`).
    """

    def __init__(self, root: Path, caches: StandinCaches, recipes: list[Path]) -> None:
        self.root = root
        self.caches = caches
        self.recipes = recipes
        self.published = set(published_config_rehearsals(recipes).values())
        self.done: dict[Path, Rehearsed] = {}

    def home(self, recipe: Path, values: dict[str, Any]) -> Path:
        """The Hugging Face home that `recipe` is rehearsed against, holding the checkpoints it starts from."""
        wanted = [name for name in hub_checkpoints(values) if name in standin_ids()]
        return self.caches.home(wanted, smaller=recipe not in self.published)

    def env(self, hf_home: Path) -> dict[str, str]:
        env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
        env.pop("HF_DATASETS_CACHE", None)  # the stand-in datasets sit in $HF_HOME/datasets
        return env

    def get(self, recipe: Path) -> Rehearsed:
        if recipe not in self.done:
            self.done[recipe] = self._rehearse(recipe)
        return self.done[recipe]

    def _rehearse(self, recipe: Path) -> Rehearsed:
        values = read_recipe(recipe)
        folder = self.root / recipe.stem
        hf_home = self.home(recipe, values)
        data_overrides, label_names = self.stage_data(values, folder / "data", hf_home)
        self.check_checkpoints(values, recipe)
        outputs = {"output_dir": folder / "out" / "model"}
        if is_distill_recipe(values):
            teacher = self.teacher_rehearsal(values, recipe)
            if teacher is not None:  # else a Hub teacher, whose stand-in is in the cache
                outputs["teacher_model_name_or_path"] = teacher.folders["model"]
            if values.get("train_baseline", True) and not values.get("baseline_model_name_or_path"):
                outputs["baseline_output_dir"] = folder / "out" / "baseline"
        overrides = {**data_overrides, **FAST_TRAINING, **{key: str(path) for key, path in outputs.items()}}
        if values.get("dataloader_persistent_workers"):
            overrides["dataloader_persistent_workers"] = False  # torch refuses it without workers
        if values.get("dataloader_prefetch_factor") is not None:
            overrides["dataloader_prefetch_factor"] = None  # likewise
        if is_distill_recipe(values):
            overrides["latency_repeats"] = 1
        script = "distill.py" if is_distill_recipe(values) else "finetune.py"
        log = check_ran(
            run_script(script, [str(recipe), *cli(overrides)], self.env(hf_home), ROOT), f"{script} {recipe.name}"
        )
        data_values = {key: value for key, value in {**values, **data_overrides}.items() if key in DATA_FIELDS}
        folders = {"model": outputs["output_dir"]}
        if is_distill_recipe(values):
            folders = {"student": outputs["output_dir"]}
            if "teacher_model_name_or_path" in outputs:
                folders["teacher"] = outputs["teacher_model_name_or_path"]
            if "baseline_output_dir" in outputs:
                folders["baseline"] = outputs["baseline_output_dir"]
            folders["model"] = outputs["output_dir"]
        published = recipe in self.published
        return Rehearsed(
            recipe, values, overrides, cli(data_values), label_names, folders, hf_home, published, {script: log}
        )

    def teacher_rehearsal(self, values: dict[str, Any], recipe: Path) -> Rehearsed | None:
        """The rehearsal of the recipe whose output_dir is this recipe's teacher; None for a Hub teacher."""
        teacher = str(Path(values["teacher_model_name_or_path"]))
        makers = [path for path in self.recipes if str(Path(str(read_recipe(path).get("output_dir", "")))) == teacher]
        if len(makers) == 1:
            return self.get(makers[0])
        if not makers and teacher in standin_ids():
            return None
        raise RecipeNeedsUnknown(
            f"{recipe.name}: its teacher {teacher} is the output_dir of {len(makers)} recipes in configs/ and no "
            "stand-in Hub checkpoint (exactly one recipe must make it, so that the rehearsal can run it first)."
        )

    def check_checkpoints(self, values: dict[str, Any], recipe: Path) -> None:
        known = standin_ids()
        made_here = {str(Path(str(read_recipe(path).get("output_dir", "")))) for path in self.recipes}
        for name in hub_checkpoints(values):
            if name in made_here:
                continue  # another recipe's output (a teacher), rehearsed first
            if name not in known:
                raise RecipeNeedsUnknown(
                    f"{recipe.name} starts from {name}, which has no stand-in in ../shared/hub-standins/ "
                    f"(there are: {', '.join(known)})."
                )
        if "model_name_or_path" not in values and "model_config" not in values:
            raise RecipeNeedsUnknown(f"{recipe.name} names neither model_name_or_path nor model_config.")

    def stage_data(self, values: dict[str, Any], folder: Path, hf_home: Path) -> tuple[dict[str, Any], list[str]]:
        """Generate stand-in data of the recipe's shape (a Hub dataset in `hf_home`'s datasets cache); returns the
        overrides pointing at it and its label names."""
        source = values.get("dataset_source", DataArguments.dataset_source)
        if source == "medmnist":
            flag = values.get("dataset_name")
            size = values.get("medmnist_size", DataArguments.medmnist_size)
            try:
                info = medmnist_info(flag)
            except Exception as error:
                raise RecipeNeedsUnknown(f"MedMNIST flag {flag!r} is unknown: {error}") from None
            counts = tuple(SPLIT_COUNTS[split] for split in ("train", "val", "test"))
            # Several classes in every split, however few images (one class only is refused, rightly).
            labels = {
                f"{split}_labels": (np.arange(count) % len(info["label"]))[:, None].astype(np.uint8)
                for split, count in zip(("train", "val", "test"), counts)
                if not info["task"].startswith("multi-label")
            }
            make_medmnist_npz(folder / medmnist_file_name(flag, size), flag, size, counts, **labels)
            names = [info["label"][key] for key in sorted(info["label"], key=int)]
            return {"data_dir": str(folder), "verify_md5": False}, names
        if source == "hub":
            name = values.get("dataset_name")
            columns = (values.get("image_column", "image"), values.get("label_column", "label"))
            if not name or "/" in name or values.get("class_names"):
                raise RecipeNeedsUnknown(
                    f"Hub dataset {name!r}: the stand-in is a cifar10-like dataset (a plain id, ClassLabel labels); "
                    "add one of this shape to tests/helpers/standins.py."
                )
            if not (hf_home / "datasets" / name).is_dir():
                cache_cifar10_like(hf_home, name, *columns)
            # Found where the recipe looks, by its Hub id: the datasets cache under $HF_HOME.
            return {}, list(CIFAR10_CLASSES)
        if source == "folder":
            class_names = values.get("class_names")
            if not class_names:
                raise RecipeNeedsUnknown("A folder recipe without class_names: the stand-in folder needs its labels.")
            write_plants_folder(folder, class_names)
            return {"data_dir": str(folder)}, list(class_names)
        raise RecipeNeedsUnknown(f"dataset_source {source!r} has no stand-in data.")
