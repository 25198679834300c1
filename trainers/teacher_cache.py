"""The teacher's outputs on an unaugmented training set, computed once and stored as safetensors: its logits (N, L)
and, with the explanation term on, its maps (N, h, w), added to the training rows as columns that the collator
batches, so that a distillation step runs no teacher forward pass.

The file is named by a fingerprint of everything the outputs depend on (the training rows, the teacher's weights,
its preprocessing, the compute dtype and the explanation term's method, target and teacher layer): a cache made for
other data, another teacher or other settings is never read.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from safetensors.torch import load_file
from safetensors.torch import save as save_tensors
from transformers import PreTrainedModel
from transformers.image_processing_utils import BaseImageProcessor

from pipelines.collate import ImageCollator
from pipelines.io import atomic_write_bytes
from pipelines.loading import with_uint8_format


def cache_key(
    dataset: Dataset,
    teacher: PreTrainedModel,
    processor: BaseImageProcessor,
    dtype: torch.dtype,
    explanation: str | None,
) -> str:
    """Fingerprint of (training rows, compute dtype, the explanation term's description when it is on, the
    teacher's preprocessing and weights)."""
    digest = hashlib.sha256()
    digest.update(f"{dataset._fingerprint}|{len(dataset)}|{dtype}".encode())
    if explanation is not None:
        digest.update(explanation.encode())
    digest.update(json.dumps(processor.to_dict(), sort_keys=True, default=str).encode())
    for name, tensor in sorted(teacher.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class TeacherCache:
    """One cache file: ``<folder>/teacher-logits-<key>.safetensors``."""

    folder: Path
    key: str

    @property
    def path(self) -> Path:
        return self.folder / f"teacher-logits-{self.key}.safetensors"

    def load(
        self, rows: int, num_labels: int, grid: tuple[int, int] | None
    ) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        """The stored logits (and maps, when `grid` asks for maps of that grid), or None when there is no file or
        its shapes do not fit."""
        if not self.path.is_file():
            return None
        stored = load_file(self.path)
        logits, maps = stored["logits"], stored.get("maps")
        fits = logits.shape == (rows, num_labels)
        if grid is not None:
            fits = fits and maps is not None and maps.shape == (rows, *grid)
        if not fits:
            return None
        return logits, maps if grid is not None else None

    def save(self, logits: torch.Tensor, maps: torch.Tensor | None, metadata: dict[str, str]) -> None:
        tensors = {"logits": logits.contiguous()}
        if maps is not None:
            tensors["maps"] = maps.contiguous()
        atomic_write_bytes(self.path, save_tensors(tensors, metadata=metadata))


def with_teacher_columns(dataset: Dataset, logits: torch.Tensor, maps: torch.Tensor | None) -> Dataset:
    """The training rows with ``teacher_logits`` (and ``teacher_maps``, flattened) columns."""
    dataset = dataset.add_column("teacher_logits", logits.tolist())
    if maps is not None:
        dataset = dataset.add_column("teacher_maps", maps.flatten(1).tolist())
    return with_uint8_format(dataset)


class TeacherLogitsCollator(ImageCollator):
    """`ImageCollator` that also stacks the cache's columns when the dataset has them: ``teacher_logits`` (B, L)
    and ``teacher_maps`` (B, h * w), the teacher's flattened CAMs."""

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = super().__call__(examples)
        for column in ("teacher_logits", "teacher_maps"):
            if column in examples[0]:
                batch[column] = torch.tensor([example[column] for example in examples], dtype=torch.float32)
        return batch
