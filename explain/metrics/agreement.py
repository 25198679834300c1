"""How alike two sets of maps are: rank correlation and top-k overlap, per image, in batch.

Used twice: to say how closely a student's explanations follow its teacher's, and for the model-parameter
randomisation sanity check (Adebayo et al., 2018, "Sanity Checks for Saliency Maps"): a method whose maps
barely change when the model's weights are re-initialised is not explaining the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from explain.metrics.statistics import mean_over
from pipelines.errors import ConfigError


def common_resolution(maps_a: torch.Tensor, maps_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Bring two (N, H, W) map sets to the smaller of their two sizes (bilinear, area-averaging when shrinking)."""
    size = min(maps_a.shape[-2:], maps_b.shape[-2:], key=lambda s: s[0] * s[1])
    return _resize(maps_a, size), _resize(maps_b, size)


def _resize(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps[:, None].float(), size=tuple(size), mode="bilinear", antialias=True, align_corners=False)[
        :, 0
    ]


def _ranks(values: torch.Tensor) -> torch.Tensor:
    """(N, P) -> (N, P) ranks 0..P-1 (ties broken by position; maps of real models have few)."""
    return values.argsort(dim=1, stable=True).argsort(dim=1, stable=True).double()


def rank_correlation(maps_a: torch.Tensor, maps_b: torch.Tensor) -> torch.Tensor:
    """Spearman's rank correlation between matching maps: (N, H, W) x (N, H, W) -> (N,) in [-1, 1].

    A constant map (Grad-CAM's all-zero map when no region supports the class) ranks nothing and shares no
    ordering with any map: its correlation is taken as 0. Callers that average over images should leave such
    pairs out (see `blank_maps`) rather than count them as 0.
    """
    _check_pairs(maps_a, maps_b)
    maps_a, maps_b = common_resolution(maps_a, maps_b)
    ranks_a, ranks_b = _ranks(maps_a.flatten(1)), _ranks(maps_b.flatten(1))
    constant = blank_maps(maps_a) | blank_maps(maps_b)
    centred_a = ranks_a - ranks_a.mean(dim=1, keepdim=True)
    centred_b = ranks_b - ranks_b.mean(dim=1, keepdim=True)
    correlation = ((centred_a * centred_b).sum(1) / (centred_a.norm(dim=1) * centred_b.norm(dim=1))).clamp(-1, 1)
    return torch.where(constant, torch.zeros_like(correlation), correlation).float()


def blank_maps(maps: torch.Tensor) -> torch.Tensor:
    """(N, H, W) -> (N,) True where a map holds one value throughout, such as Grad-CAM's all-zero map when no
    region supports the class (it keeps positive evidence only). A blank map ranks no pixel above another, so its
    rank correlation is undefined and its top pixels are whatever the tie-breaking picks."""
    flat = maps.flatten(1)
    return flat.amax(1) == flat.amin(1)


def top_fraction_iou(maps_a: torch.Tensor, maps_b: torch.Tensor, fraction: float = 0.1) -> torch.Tensor:
    """Intersection over union of the top `fraction` of pixels of matching maps: (N, H, W) x2 -> (N,) in [0, 1]."""
    _check_pairs(maps_a, maps_b)
    if not 0.0 < fraction <= 1.0:
        raise ConfigError(f"fraction is {fraction}; it must lie in (0, 1].")
    maps_a, maps_b = common_resolution(maps_a, maps_b)
    flat_a, flat_b = maps_a.flatten(1), maps_b.flatten(1)
    keep = max(1, round(fraction * flat_a.shape[1]))
    top_a = torch.zeros_like(flat_a, dtype=torch.bool).scatter_(1, flat_a.topk(keep, dim=1).indices, True)
    top_b = torch.zeros_like(flat_b, dtype=torch.bool).scatter_(1, flat_b.topk(keep, dim=1).indices, True)
    return (top_a & top_b).sum(1).float() / (top_a | top_b).sum(1).float()


def _check_pairs(maps_a: torch.Tensor, maps_b: torch.Tensor) -> None:
    if maps_a.ndim != 3 or maps_b.ndim != 3 or maps_a.shape[0] != maps_b.shape[0]:
        raise ConfigError(
            f"Expected two (N, H, W) map sets of equal N, got {tuple(maps_a.shape)} and {tuple(maps_b.shape)}."
        )


@dataclass
class Agreement:
    """Per-image similarity of two models' maps for the same class, which of those maps are blank (pairs with a
    blank map are left out of the means), and how often the two models predict alike."""

    rank_correlation: np.ndarray  # (N,)
    top_iou: np.ndarray  # (N,)
    same_prediction: float
    reference_blank: np.ndarray  # (N,) bool
    other_blank: np.ndarray  # (N,) bool

    @property
    def compared(self) -> np.ndarray:
        return ~(self.reference_blank | self.other_blank)

    def numbers(self, top_fraction: float) -> dict[str, float | int]:
        return {
            "rank_correlation_mean": mean_over(self.rank_correlation, self.compared),
            f"top{round(top_fraction * 100)}_iou_mean": mean_over(self.top_iou, self.compared),
            "prediction_agreement": self.same_prediction,  # over every image: predictions need no map
            "images": int(len(self.top_iou)),
            "pairs": int(self.compared.sum()),
            "blank_maps": int(self.other_blank.sum()),
            "blank_reference_maps": int(self.reference_blank.sum()),
        }

    @classmethod
    def concatenate(cls, parts: Sequence[Agreement]) -> Agreement:
        """The agreement over several batches of images, in order, as one (`same_prediction` weighted by images)."""
        joined = lambda name: np.concatenate([getattr(part, name) for part in parts])  # noqa: E731
        counts = [len(part.top_iou) for part in parts]
        same = float(np.average([part.same_prediction for part in parts], weights=counts)) if sum(counts) else 0.0
        return cls(
            joined("rank_correlation"), joined("top_iou"), same, joined("reference_blank"), joined("other_blank")
        )


def agreement(
    reference_maps: torch.Tensor,
    other_maps: torch.Tensor,
    reference_predictions: torch.Tensor,
    other_predictions: torch.Tensor,
    top_fraction: float = 0.1,
) -> Agreement:
    """Compare maps of two models explaining the same class of the same images (any two resolutions)."""
    return Agreement(
        rank_correlation=rank_correlation(reference_maps, other_maps).cpu().numpy(),
        top_iou=top_fraction_iou(reference_maps, other_maps, top_fraction).cpu().numpy(),
        same_prediction=float((reference_predictions == other_predictions).float().mean()),
        reference_blank=blank_maps(reference_maps).cpu().numpy(),
        other_blank=blank_maps(other_maps).cpu().numpy(),
    )
