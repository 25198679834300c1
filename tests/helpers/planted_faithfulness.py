"""Faithfulness parts written by hand, no model: each image's curves follow a planted shape, so a test can make the
paired test's measures disagree with each other, or the raw and the normalised curves disagree, on purpose."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from explain.metrics.faithfulness import FaithfulnessCurves, FaithfulnessParts
from explain.metrics.road import RoadCurves

# The paired test's steps (K' = 4) and ROAD's removal fractions.
FRACTIONS = torch.linspace(0, 1, 5)
ROAD_FRACTIONS = torch.tensor([0.2, 0.5, 0.8])


@dataclass
class Planted:
    """What to plant, per image.

    Attributes:
        ranges: (N,) each image's dynamic range: intact probability minus the baseline's (deletion and insertion).
        quality: (N,) the maps' curve shape: 1 is a random map's on average, 2 better (deletion falls, insertion
            rises and LeRF deletion holds faster), 0.5 worse (`shaped_curves`).
        road_morf_shift, road_lerf_shift: what the maps add to the random maps' mean ROAD probability, per image or
            one for all (MoRF: negative is better; LeRF: positive is better).
        random_maps: R.
        seed: Of the noise that makes the random draws (and the maps' ROAD values) differ image by image.
    """

    ranges: np.ndarray
    quality: np.ndarray
    road_morf_shift: float | np.ndarray = 0.0
    road_lerf_shift: float | np.ndarray = 0.0
    random_maps: int = 4
    seed: int = 0


BASELINE = 0.05  # the probability every deletion ends at and every insertion starts from


def shaped_curves(ranges: np.ndarray, quality: np.ndarray) -> FaithfulnessCurves:
    """(N, 5) float32 curves of power shapes on `FRACTIONS`, 1 at the intact image and 0 at the baseline once
    normalised: deletion (1 - f)^q (area 1 / (q + 1)), LeRF deletion 1 - f^q and insertion 1 - (1 - f)^q (area
    q / (q + 1)); a higher q is better on all three. Raw, each is the baseline plus the image's range times that."""
    fractions = FRACTIONS.double()[None]
    quality = torch.as_tensor(quality, dtype=torch.float64)[:, None]
    scale = torch.as_tensor(ranges, dtype=torch.float64)[:, None]
    raw = lambda shape: (BASELINE + scale * shape).float()  # noqa: E731
    return FaithfulnessCurves(
        FRACTIONS,
        deletion=raw((1 - fractions) ** quality),
        insertion=raw(1 - (1 - fractions) ** quality),
        lerf_deletion=raw(1 - fractions**quality),
    )


def planted_parts(plan: Planted) -> FaithfulnessParts:
    """Parts of N paired images (every image paired): the maps' curves of `plan.quality`, R random draws of quality
    about 1 (log-normal, sd 0.1), and ROAD probabilities around 0.4 (MoRF) and 0.6 (LeRF) for the random maps,
    shifted by the plan for the maps; ROAD noise sd 0.01."""
    generator = np.random.default_rng(plan.seed)
    count = len(plan.ranges)
    maps = shaped_curves(plan.ranges, plan.quality)
    random = [shaped_curves(plan.ranges, np.exp(generator.normal(0, 0.1, count))) for _ in range(plan.random_maps)]
    noise = lambda: generator.normal(0, 0.01, (count, len(ROAD_FRACTIONS)))  # noqa: E731
    road_tensor = lambda values: torch.as_tensor(values, dtype=torch.float32)  # noqa: E731
    random_road = [RoadCurves(ROAD_FRACTIONS, road_tensor(0.4 + noise()), road_tensor(0.6 + noise())) for _ in random]
    shift = lambda value: np.broadcast_to(np.asarray(value, dtype=np.float64), (count,))[:, None]  # noqa: E731
    road = RoadCurves(
        ROAD_FRACTIONS,
        road_tensor(0.4 + shift(plan.road_morf_shift) + noise()),
        road_tensor(0.6 + shift(plan.road_lerf_shift) + noise()),
    )
    return FaithfulnessParts(
        curves=maps,
        baseline=random[0],
        rows=np.arange(count),
        paired=maps,
        random=random,
        road=road,
        random_road=random_road,
    )
