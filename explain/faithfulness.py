"""How faithful a map is to the model: deletion and insertion curves (Petsiuk et al., 2018, "RISE").

Deletion removes pixels in order of attribution, most important first, and follows the model's probability for
the explained class: a faithful map makes it fall fast (low area under the curve). Insertion starts from a
blurred image and puts the original pixels back in the same order: a faithful map makes the probability rise
fast (high area). Both are computed for all images at once on the device; the (image, step) pairs are run
through the model in chunks of `batch_size`, so memory does not grow with the number of steps.

Where the curves start and end is set by the baseline (what a deleted pixel becomes, what insertion starts from),
not by the map: every map of an image shares the intact image's probability and the baseline's. So each curve is
also given normalised by that dynamic range, and deletion is also run least relevant first (LeRF): the
LeRF - MoRF difference depends far less on the baseline than either curve (Bluecher et al., 2024, "Decoupling
pixel flipping and occlusion strategy").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
import torchvision.transforms.functional as TF
from torch import nn

from explain.base import forward_logits
from pipelines.errors import ConfigError


@dataclass
class FaithfulnessCurves:
    """Deletion and insertion curves for N maps.

    Attributes:
        fractions: (K + 1,) the fraction of pixels removed (deletion) or revealed (insertion) at each step.
        deletion: (N, K + 1) the explained class's probability at each step of deletion, most relevant first.
        insertion: (N, K + 1) the same for insertion.
        lerf_deletion: (N, K + 1) deletion least relevant first, when asked for (else None).
    """

    fractions: torch.Tensor
    deletion: torch.Tensor
    insertion: torch.Tensor
    lerf_deletion: torch.Tensor | None = None

    @property
    def deletion_auc(self) -> torch.Tensor:
        """(N,) area under each deletion curve (trapezoid rule over fractions in [0, 1]); lower is better."""
        return torch.trapezoid(self.deletion, self.fractions, dim=-1)

    @property
    def insertion_auc(self) -> torch.Tensor:
        """(N,) area under each insertion curve; higher is better."""
        return torch.trapezoid(self.insertion, self.fractions, dim=-1)

    @property
    def deletion_range(self) -> torch.Tensor:
        """(N,) the intact image's probability minus the deletion baseline's (every pixel deleted)."""
        return dynamic_range(self.deletion, start_is_intact=True)

    @property
    def insertion_range(self) -> torch.Tensor:
        """(N,) the intact image's probability minus insertion's start (a blurred image unless another is given)."""
        return dynamic_range(self.insertion, start_is_intact=False)

    @property
    def normalised_deletion_auc(self) -> torch.Tensor:
        """(N,) deletion area with each curve scaled to 1 at the intact image and 0 at the baseline; lower is
        better (0: the probability reaches the baseline's at the first step)."""
        return normalised_area(self.deletion, self.fractions, start_is_intact=True)

    @property
    def normalised_insertion_auc(self) -> torch.Tensor:
        """(N,) insertion area scaled the same way; higher is better."""
        return normalised_area(self.insertion, self.fractions, start_is_intact=False)

    @property
    def normalised_lerf_deletion_auc(self) -> torch.Tensor:
        """(N,) least-relevant-first deletion area, scaled like deletion's; higher is better."""
        if self.lerf_deletion is None:
            raise ConfigError("These curves were computed without lerf=True; there is no LeRF deletion curve.")
        return normalised_area(self.lerf_deletion, self.fractions, start_is_intact=True)

    @classmethod
    def concatenate(cls, parts: Sequence[FaithfulnessCurves]) -> FaithfulnessCurves:
        """The curves of several sets of maps (batches of images, in order) as one set; all share `fractions`."""
        lerf = None if parts[0].lerf_deletion is None else torch.cat([part.lerf_deletion for part in parts])
        deletion, insertion = (torch.cat([getattr(part, name) for part in parts]) for name in ("deletion", "insertion"))
        return cls(parts[0].fractions, deletion, insertion, lerf)


# A curve whose ends differ by less than this has no range to scale by: its normalised area is NaN.
FLAT = 1e-6


def dynamic_range(curves: torch.Tensor, start_is_intact: bool) -> torch.Tensor:
    """(N, K + 1) curves -> (N,) probability of the intact image minus the baseline's.

    Args:
        curves: Deletion curves (start at the intact image, end at the baseline) or insertion curves (the
            other way round).
        start_is_intact: True for deletion curves.
    """
    intact, baseline = (curves[:, 0], curves[:, -1]) if start_is_intact else (curves[:, -1], curves[:, 0])
    return intact - baseline


def normalised_area(curves: torch.Tensor, fractions: torch.Tensor, start_is_intact: bool) -> torch.Tensor:
    """(N, K + 1) curves -> (N,) area under (p - p_baseline) / (p_intact - p_baseline).

    An affine change of the probabilities (a * p + b, a != 0), as a baseline that lifts or squeezes the whole curve
    would make, leaves it unchanged. NaN where the curve's ends are closer than 1e-6: nothing to normalise by.
    """
    baseline = curves[:, -1:] if start_is_intact else curves[:, :1]
    spread = dynamic_range(curves, start_is_intact)[:, None]
    flat = spread.abs() < FLAT
    scaled = (curves - baseline) / torch.where(flat, 1.0, spread)
    return torch.where(flat[:, 0], float("nan"), torch.trapezoid(scaled, fractions, dim=-1))


def blurred(pixel_values: torch.Tensor) -> torch.Tensor:
    """The insertion start: a Gaussian blur with sigma 5 px at 224 px, scaled with the image (RISE's setting)."""
    sigma = 5.0 * pixel_values.shape[-1] / 224
    kernel = 2 * math.ceil(2 * sigma) + 1
    return TF.gaussian_blur(pixel_values, [kernel, kernel], [sigma, sigma])


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


@torch.no_grad()
def deletion_insertion(
    model: nn.Module,
    pixel_values: torch.Tensor,
    maps: torch.Tensor,
    targets: torch.Tensor,
    steps: int = 20,
    batch_size: int = 64,
    multi_label: bool = False,
    deletion_value: float = 0.0,
    insertion_start: torch.Tensor | None = None,
    dtype: torch.dtype | None = None,
    lerf: bool = False,
) -> FaithfulnessCurves:
    """Deletion and insertion curves of `maps` for `model`.

    Args:
        model: The classifier the maps explain (eval mode is the caller's business).
        pixel_values: (N, C, H, W) the model's inputs.
        maps: (N, H, W) attributions at the input resolution; larger means more important.
        targets: (N,) the class each map explains.
        steps: K, the number of steps: pixels change in K equal shares.
        batch_size: Images per forward pass (half of them deleted, half revealed).
        multi_label: Score with a sigmoid instead of a softmax.
        deletion_value: What a deleted pixel becomes, in the model's input space (0 is the normalised mean grey
            for mean/std normalisation; RISE uses black).
        insertion_start: (N, C, H, W) what insertion starts from; default a blurred copy of the inputs (RISE).
        dtype: Compute dtype; lower than the parameters' (bf16 for an fp32 model) runs the forward passes under
            autocast.
        lerf: Also delete least relevant pixels first (a third curve, a third more forward passes).

    Returns:
        `FaithfulnessCurves` with (N, K + 1) curves.
    """
    if steps < 2:
        raise ConfigError(f"steps is {steps}; deletion and insertion curves need at least 2 steps.")
    check_maps_fit(maps, pixel_values)
    count, channels, height, width = pixel_values.shape
    device = pixel_values.device
    ranks = pixel_ranks(maps.to(device))  # (N, H * W)
    reversed_ranks = height * width - 1 - ranks  # 0 for the least important pixel
    thresholds = torch.round(torch.linspace(0, height * width, steps + 1, device=device)).long()  # (K + 1,)
    start = blurred(pixel_values) if insertion_start is None else insertion_start.to(pixel_values)
    targets = targets.to(device)
    pairs = count * (steps + 1)
    names = ("deletion", "insertion", "lerf_deletion") if lerf else ("deletion", "insertion")
    curves = {name: torch.empty(pairs, device=device) for name in names}
    chunk = max(1, batch_size // len(names))
    for first in range(0, pairs, chunk):
        index = torch.arange(first, min(first + chunk, pairs), device=device)
        image, step = index // (steps + 1), index % (steps + 1)
        changed = (ranks[image] < thresholds[step][:, None]).view(-1, 1, height, width)  # (b, 1, H, W)
        original = pixel_values[image]
        batch = [
            torch.where(changed, torch.full_like(original, deletion_value), original),
            torch.where(changed, original, start[image]),
        ]
        if lerf:
            least = (reversed_ranks[image] < thresholds[step][:, None]).view(-1, 1, height, width)
            batch.append(torch.where(least, torch.full_like(original, deletion_value), original))
        scores = class_probability(model, torch.cat(batch), targets[image].repeat(len(batch)), multi_label, dtype)
        for name, values in zip(names, scores.chunk(len(batch))):
            curves[name][index] = values
    fractions = thresholds.float() / (height * width)
    shaped = {name: values.view(count, steps + 1).cpu() for name, values in curves.items()}
    return FaithfulnessCurves(fractions.cpu(), **shaped)


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


def image_generator(seed: int, *key: int) -> torch.Generator:
    """A CPU generator of its own for one image (and whatever else `key` names: a ROAD fraction, an order), seeded
    from (seed, *key) by numpy's `SeedSequence`, so that what is drawn for an image does not depend on the batch
    or the process it is scored in, and nearby seeds and rows give unrelated streams."""
    state = np.random.SeedSequence(seed, spawn_key=tuple(int(value) for value in key)).generate_state(1, np.uint64)
    return torch.Generator().manual_seed(int(state[0]))


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
