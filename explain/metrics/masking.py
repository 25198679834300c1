"""What deletion, insertion and ROAD share: the order in which a map ranks pixels, the explained class's probability
on perturbed images, and random maps and noise drawn per image (seeded by the image's row, so that a split scored in
chunks on any number of processes gets the same draws)."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext

import numpy as np
import torch
from torch import nn

from explain.base import forward_logits
from pipelines.errors import ConfigError
from pipelines.seeding import image_generator


def check_maps_fit(maps: torch.Tensor, pixel_values: torch.Tensor) -> None:
    """Refuse maps (N, H, W) that are not one per input image (N, C, H, W) at the inputs' resolution."""
    if maps.shape[0] != pixel_values.shape[0] or maps.shape[-2:] != pixel_values.shape[-2:]:
        raise ConfigError(
            f"maps {tuple(maps.shape)} do not match the inputs {tuple(pixel_values.shape)}; upsample them first."
        )


def pixel_ranks(maps: torch.Tensor) -> torch.Tensor:
    """(N, H, W) maps -> (N, H * W) rank of each pixel, 0 for the most important (ties: first pixel first)."""
    order = maps.flatten(1).argsort(dim=1, descending=True, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
    return ranks


def _needs_autocast(model: nn.Module, dtype: torch.dtype | None) -> bool:
    return dtype is not None and dtype != next(model.parameters()).dtype


def class_probability(
    model: nn.Module,
    pixel_values: torch.Tensor,
    targets: torch.Tensor,
    multi_label: bool = False,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """(B, C, H, W) inputs, (B,) classes -> (B,) each class's probability (sigmoid when `multi_label`), with
    the forward pass under autocast when `dtype` is lower than the parameters'."""
    with torch.autocast(pixel_values.device.type, dtype=dtype) if _needs_autocast(model, dtype) else nullcontext():
        logits = forward_logits(model, pixel_values).float()
    probabilities = logits.sigmoid() if multi_label else logits.softmax(dim=-1)
    return probabilities.gather(1, targets[:, None])[:, 0]


def image_rows(count: int, rows: Sequence[int] | torch.Tensor | np.ndarray | None) -> list[int]:
    """The images' rows in their split (what per-image seeds derive from); None: 0, 1, ..., `count` - 1."""
    rows = list(range(count)) if rows is None else [int(row) for row in rows]
    if len(rows) != count:
        raise ConfigError(f"{len(rows)} rows given for {count} images; give one row per image.")
    return rows


def random_maps(like: torch.Tensor, seed: int = 0, rows: Sequence[int] | None = None) -> torch.Tensor:
    """Uniform random maps shaped like `like` (N, H, W): the baseline that gives faithfulness numbers their meaning.

    Image i's map comes from its own generator, seeded by (`seed`, rows[i]) (default: row i), so an image gets the
    same random map alone, in any batch, or on any process of a distributed run.
    """
    rows = image_rows(like.shape[0], rows)
    maps = [torch.rand(like.shape[1:], generator=image_generator(seed, row)) for row in rows]
    return (torch.stack(maps) if maps else torch.empty(like.shape)).to(like.device)
