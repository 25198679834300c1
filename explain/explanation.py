"""What an attribution method returns (`Explanation`: maps, targets, scores), what a subclass computes for one batch
before post-processing (`Attribution`), and the post-processing every method shares: upsampling to the input and
min-max scaling of each map to [0, 1]."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class Explanation:
    """Maps for N (image, class) pairs: N = B by default, B * L when every label is explained.

    Attributes:
        maps: float32 (N, H, W) in [0, 1] at the input resolution (at the method's own grid (N, h, w) when the
            method's `upsample` is False); 1 marks each map's strongest evidence.
        target: int64 (N,), the class each map explains.
        score: float32 (N,), the model's probability for that class (softmax, or sigmoid for multi-label).
        image_index: int64 (N,), the input image each map belongs to.
        method: The method's name.
        attributions: For input-gradient methods, float32 (N, C, H, W) signed attributions; None otherwise.
    """

    maps: torch.Tensor
    target: torch.Tensor
    score: torch.Tensor
    image_index: torch.Tensor
    method: str
    attributions: torch.Tensor | None = None

    def cpu(self) -> Explanation:
        return self.map_tensors(torch.Tensor.cpu)

    def clone(self) -> Explanation:
        return self.map_tensors(torch.Tensor.clone)

    def map_tensors(self, function: Callable[[torch.Tensor], torch.Tensor]) -> Explanation:
        attributions = None if self.attributions is None else function(self.attributions)
        return Explanation(
            function(self.maps),
            function(self.target),
            function(self.score),
            function(self.image_index),
            self.method,
            attributions,
        )

    @staticmethod
    def concat(parts: list[Explanation]) -> Explanation:
        """Join the explanations of consecutive batches (whose image indices already count from the first batch)."""
        attributions = None
        if all(part.attributions is not None for part in parts):
            attributions = torch.cat([part.attributions for part in parts])
        return Explanation(
            torch.cat([part.maps for part in parts]),
            torch.cat([part.target for part in parts]),
            torch.cat([part.score for part in parts]),
            torch.cat([part.image_index for part in parts]),
            parts[0].method,
            attributions,
        )


@dataclass
class Attribution:
    """What a subclass computes for one batch, before upsampling and scaling.

    Attributes:
        raw: float (B, K, h, w), non-negative evidence at the method's own resolution.
        targets: int64 (B, K).
        scores: float32 (B, K).
        attributions: float (B, K, C, H, W) input-space attributions, or None.
    """

    raw: torch.Tensor
    targets: torch.Tensor
    scores: torch.Tensor
    attributions: torch.Tensor | None = None


def upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling (half-pixel centres, as `LayerAttribution.interpolate` and OpenCV's resize).

    Args:
        maps: (..., h, w).
        size: (H, W).

    Returns:
        float32 (..., H, W).
    """
    maps = maps.float()
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    leading = maps.shape[:-2]
    flat = maps.reshape(-1, 1, *maps.shape[-2:])
    return F.interpolate(flat, size=size, mode="bilinear", align_corners=False).reshape(*leading, *size)


def scale_to_unit(maps: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Min-max scale each map to [0, 1] (pytorch-grad-cam's scaling); a flat map becomes all zeros.

    Args:
        maps: (N, H, W).

    Returns:
        (N, H, W) in [0, 1].
    """
    flat = maps.flatten(1)
    low = flat.min(dim=1).values[:, None, None]
    span = flat.max(dim=1).values[:, None, None] - low
    return torch.where(span > eps, (maps - low) / span.clamp_min(eps), torch.zeros_like(maps))
