"""The split a report works on and the models it compares (`ReportSplit`), shared by the report's run, its audit and
its robustness evaluation; and how the processes of a launched run share the split (`fixed_chunks`, `my_chunks`,
`in_order`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from accelerate import PartialState
from accelerate.utils import gather_object
from huggingface_hub import metadata_load

from explain.explainer import Explainer
from explain.maps_dataset import examples
from pipelines import ImageCollator
from pipelines.errors import ConfigError
from trainers.report.classification import LabelSpace


@dataclass
class ReportSplit:
    """The split every process of a report works on, and the models it compares.

    Attributes:
        rows: The split's images whose label every model has (`LabelSpace.keep`).
        kept: (N,) each kept image's row in the whole split, which a maps dataset knows it by.
        labels: (N,) or (N, L) their labels, in the shared label order.
        collator: Batches the rows as uint8 images.
        space: The labels the models are compared on.
        multi_label: Whether each image has a set of labels.
        explainers: The models by display name, the first the reference.
        state: accelerate's process state (one process unless launched).
    """

    rows: Any
    kept: np.ndarray
    labels: np.ndarray
    collator: ImageCollator
    space: LabelSpace
    multi_label: bool
    explainers: dict[str, Explainer]
    state: PartialState

    def images(self, positions: np.ndarray) -> torch.Tensor | list[torch.Tensor]:
        """uint8 images at `positions` of the kept rows."""
        return self.collator(examples_at(self.rows, positions))["pixel_values"]


def examples_at(split: Any, positions: np.ndarray) -> list[dict[str, Any]]:
    """The split's rows at `positions` as the collator takes them, read in one slice."""
    positions = np.asarray(positions)
    if len(positions) and np.array_equal(positions, np.arange(positions[0], positions[0] + len(positions))):
        return examples(split, int(positions[0]), int(positions[0]) + len(positions))
    return examples(split.select(positions), 0, len(positions))


SEED_FOLDER = re.compile(r"seed-(\d+)")


def seed_group(path: str) -> list[str]:
    """The models a `--models` entry stands for: a folder of `seed-N` model folders (what `distill.py --seeds`
    writes) is a seed group, its members in seed order; anything else (a model folder, a Hub id) is itself."""
    folder = Path(path)
    if not folder.is_dir() or (folder / "config.json").exists():
        return [path]
    members = [
        child for child in folder.iterdir() if SEED_FOLDER.fullmatch(child.name) and (child / "config.json").exists()
    ]
    if not members:
        return [path]
    members.sort(key=lambda child: int(SEED_FOLDER.fullmatch(child.name).group(1)))
    return [str(member) for member in members]


def trained_on(path: str) -> str | None:
    """The dataset a local model's card says it was evaluated on (its model-index, written by distill.py and
    finetune.py's cards), or None where the folder has no card or the card names none."""
    card = Path(path) / "README.md"
    if not card.exists():
        return None
    try:
        return metadata_load(card)["model-index"][0]["results"][0]["dataset"]["type"]
    except (KeyError, IndexError, TypeError, ValueError, yaml.YAMLError):  # no card data, or none of this shape
        return None


def check_seed_group(group: str, members: list[str]) -> None:
    """Refuse a seed group whose members' model cards name different datasets: seeds of one recipe differ in their
    seed alone.

    Raises:
        ConfigError: naming the members and their datasets.
    """
    datasets = {Path(member).name: trained_on(member) for member in members}
    named = {member: dataset for member, dataset in datasets.items() if dataset}
    if len(set(named.values())) > 1:
        listed = ", ".join(f"{member} on {dataset}" for member, dataset in named.items())
        raise ConfigError(
            f"Seed group {group} mixes datasets ({listed}); a seed group holds one recipe trained with different seeds."
        )


def check_seed_labels(group: str, first: tuple[str, list[str]], member: tuple[str, list[str]]) -> None:
    """Refuse a seed group member that predicts other labels than the group's first seed.

    Args:
        group: The group's folder.
        first, member: (folder, label names) of the first seed and of the member.

    Raises:
        ConfigError: naming both members and their labels.
    """
    if member[1] != first[1]:
        raise ConfigError(
            f"Seed group {group}: {Path(member[0]).name} has labels {member[1]} but {Path(first[0]).name} has "
            f"{first[1]}; a seed group holds one recipe trained with different seeds."
        )


def fixed_chunks(count: int, size: int) -> list[np.ndarray]:
    """Positions 0 to `count` - 1 cut into consecutive chunks of `size` (the last one shorter). The cut depends on
    nothing else, so every chunk is computed alike whichever process takes it and however many there are."""
    return [np.arange(start, min(start + size, count)) for start in range(0, count, size)]


def in_order(state: PartialState, done: list[tuple[int, Any]]) -> list[Any]:
    """Every process's (chunk number, result) pairs, gathered on every process, as the results in chunk order."""
    everyone = gather_object(done) if state.num_processes > 1 else done
    return [result for _, result in sorted(everyone, key=lambda pair: pair[0])]


def my_chunks(state: PartialState, count: int, size: int) -> list[tuple[int, np.ndarray]]:
    """This process's share of `fixed_chunks(count, size)`, numbered: process r takes chunks r, r + W, ..."""
    return list(enumerate(fixed_chunks(count, size)))[state.process_index :: state.num_processes]
