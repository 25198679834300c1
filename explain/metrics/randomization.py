"""The model-parameter randomisation check (Adebayo et al., NeurIPS 2018, "Sanity Checks for Saliency Maps"): how
much a trained model's maps resemble those of the same architecture with re-initialised weights."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from transformers import PreTrainedModel

from explain.metrics.agreement import blank_maps, rank_correlation
from explain.metrics.statistics import mean_over
from explain.registry import explain_maps


@dataclass
class Randomization:
    """Per-image rank correlation between a trained model's maps and a re-initialised copy's, and which of the
    two maps of each image are blank (pairs with a blank map are left out of the mean)."""

    rank_correlation: np.ndarray  # (N,)
    blank: np.ndarray  # (N,) bool: the trained model's map is blank
    reinitialised_blank: np.ndarray  # (N,) bool: the re-initialised model's map is blank

    @property
    def compared(self) -> np.ndarray:
        return ~(self.blank | self.reinitialised_blank)

    def numbers(self) -> dict[str, float | int]:
        return {
            "rank_correlation_mean": mean_over(self.rank_correlation, self.compared),
            "pairs": int(self.compared.sum()),
            "blank_maps": int(self.blank.sum()),
            "blank_reinitialised_maps": int(self.reinitialised_blank.sum()),
            "images": int(len(self.rank_correlation)),
        }

    @classmethod
    def concatenate(cls, parts: Sequence[Randomization]) -> Randomization:
        """The checks of several batches of images, in order, as one."""
        joined = lambda name: np.concatenate([getattr(part, name) for part in parts])  # noqa: E731
        return cls(joined("rank_correlation"), joined("blank"), joined("reinitialised_blank"))


def randomization(
    model: nn.Module,
    method: str,
    pixel_values: torch.Tensor,
    maps: torch.Tensor,
    targets: torch.Tensor,
    seed: int = 0,
    reinitialised: nn.Module | None = None,
    **options: object,
) -> Randomization:
    """Compare `maps` of the trained model with the same method's maps of the same architecture with
    re-initialised weights, for the same targets. Low correlation means the maps depend on what was learnt.

    Args:
        reinitialised: `randomized_copy(model, seed)` made once by a caller that scores many batches; None: made
            here.
    """
    reinitialised = randomized_copy(model, seed) if reinitialised is None else reinitialised
    reinitialised_maps, _ = explain_maps(reinitialised, method, pixel_values, targets, **options)
    return Randomization(
        rank_correlation=rank_correlation(maps, reinitialised_maps).cpu().numpy(),
        blank=blank_maps(maps).cpu().numpy(),
        reinitialised_blank=blank_maps(reinitialised_maps).cpu().numpy(),
    )


def randomized_copy(model: PreTrainedModel, seed: int = 0) -> PreTrainedModel:
    """The same architecture with freshly initialised weights, on the model's device and in its dtype."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = type(model)(model.config)
    parameter = next(model.parameters())
    return fresh.to(device=parameter.device, dtype=parameter.dtype).eval()
