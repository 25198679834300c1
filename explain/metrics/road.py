"""ROAD: remove pixels and fill them by noisy linear imputation (Rong et al., ICML 2022, "A Consistent and
Efficient Evaluation Strategy for Attribution Methods"), then read the explained class's probability.

Filling removed pixels with a constant or a blur leaves the removed region's shape in the image, and a model can
read the class from that shape alone. ROAD fills each removed pixel with the weighted mean of its neighbours, kept
pixels fixed, plus a little Gaussian noise; `explain.metrics.road_solver` solves those systems for a whole batch at
once on the device. Removing most relevant pixels first (MoRF) should make a faithful map's class probability fall,
least relevant first (LeRF) should keep it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from explain.metrics.masking import check_maps_fit, class_probability, image_rows, pixel_ranks
from explain.metrics.road_solver import linear_imputation
from pipelines.errors import ConfigError
from pipelines.seeding import image_generator

ROAD_FRACTIONS = (0.1, 0.3, 0.5, 0.7, 0.9)


def noisy_linear_imputation(
    pixel_values: torch.Tensor,
    removed: torch.Tensor,
    noise: float = 0.01,
    generator: torch.Generator | None = None,
    max_iterations: int | None = None,
    tolerance: float = 3e-3,
    draw: torch.Tensor | None = None,
) -> torch.Tensor:
    """ROAD's imputation: `linear_imputation` plus Gaussian noise of standard deviation `noise` (absolute, in
    the input space, Rong et al.'s 0.01) on the removed pixels only.

    Args:
        pixel_values: (B, C, H, W) images.
        removed: (B, H, W) bool, True where a pixel is removed.
        noise: Standard deviation of the added noise; 0 for none.
        generator: A CPU generator for the noise, for repeatable results (the noise is drawn on the CPU).
        draw: (B, C, H, W) standard normal values to use as the noise instead of drawing them from `generator`
            (`road_curves` draws each image's from a generator of its own).

    Returns:
        (B, C, H, W) the imputed images.
    """
    filled = linear_imputation(pixel_values, removed, max_iterations, tolerance)
    if noise == 0:
        return filled
    if draw is None:
        draw = torch.randn(filled.shape, generator=generator, dtype=filled.dtype)
    draw = draw.to(device=filled.device, dtype=filled.dtype)
    mask = removed[:, None] if removed.dim() == 3 else removed
    return filled + noise * draw * mask


@dataclass
class RoadCurves:
    """The explained class's probability after ROAD removal of a share of pixels, for N maps.

    Attributes:
        fractions: (F,) the shares of pixels removed.
        morf: (N, F) most relevant first: a faithful map makes the probability fall (lower is better).
        lerf: (N, F) least relevant first: a faithful map keeps it (higher is better).
    """

    fractions: torch.Tensor
    morf: torch.Tensor
    lerf: torch.Tensor

    @property
    def morf_mean(self) -> torch.Tensor:
        """(N,) mean MoRF probability over the fractions (what pytorch-grad-cam's averagers report)."""
        return self.morf.mean(dim=-1)

    @property
    def lerf_mean(self) -> torch.Tensor:
        """(N,) mean LeRF probability over the fractions."""
        return self.lerf.mean(dim=-1)

    @classmethod
    def concatenate(cls, parts: Sequence[RoadCurves]) -> RoadCurves:
        """The curves of several sets of maps (batches of images, in order) as one set; all share `fractions`."""
        return cls(
            parts[0].fractions, torch.cat([part.morf for part in parts]), torch.cat([part.lerf for part in parts])
        )


@dataclass(frozen=True)
class RoadSettings:
    """How `road_curves` removes pixels and scores the imputed images.

    Attributes:
        fractions: The shares of pixels removed, each in (0, 1).
        batch_size: Imputed images per forward pass (and per imputation).
        multi_label: Score with a sigmoid instead of a softmax.
        noise: The imputation's noise (`noisy_linear_imputation`).
        seed: Seed of that noise. Each image's noise at each fraction and order comes from a generator of its own,
            seeded by (seed, its row, the fraction's position, 0 for MoRF or 1 for LeRF), so an image's curves do not
            depend on the batch or the process it is scored in.
        dtype: Compute dtype of the forward passes (autocast when lower than the parameters').
        max_iterations: Passed to `linear_imputation`.
    """

    fractions: tuple[float, ...] = ROAD_FRACTIONS
    batch_size: int = 64
    multi_label: bool = False
    noise: float = 0.01
    seed: int = 0
    dtype: torch.dtype | None = None
    max_iterations: int | None = None


@torch.no_grad()
def road_curves(
    model: nn.Module,
    pixel_values: torch.Tensor,
    maps: torch.Tensor,
    targets: torch.Tensor,
    settings: RoadSettings | None = None,
    rows: Sequence[int] | None = None,
) -> RoadCurves:
    """MoRF and LeRF ROAD curves of `maps`: remove each share of pixels in order of attribution, impute them, and
    score the explained class.

    Args:
        model: The classifier the maps explain.
        pixel_values: (N, C, H, W) the model's inputs.
        maps: (N, H, W) attributions at the input resolution.
        targets: (N,) the class each map explains.
        settings: Fractions, batching, noise (`RoadSettings`); None: its defaults.
        rows: (N,) the images' rows in their split, for the noise's seeds; None: 0, 1, ..., N - 1.

    Returns:
        `RoadCurves` with (N, F) curves.
    """
    settings = settings or RoadSettings()
    fractions, batch_size, multi_label = settings.fractions, settings.batch_size, settings.multi_label
    noise, seed, dtype, max_iterations = settings.noise, settings.seed, settings.dtype, settings.max_iterations
    if not fractions or not all(0 < fraction < 1 for fraction in fractions):
        raise ConfigError(f"ROAD fractions {fractions} must each lie strictly between 0 and 1.")
    check_maps_fit(maps, pixel_values)
    count, _, height, width = pixel_values.shape
    device = pixel_values.device
    ranks = pixel_ranks(maps.to(device)).view(count, height, width)  # 0: the most relevant pixel
    removed_counts = torch.tensor([round(fraction * height * width) for fraction in fractions], device=device)
    targets = targets.to(device)
    rows = image_rows(count, rows)
    channels = pixel_values.shape[1]
    # Tasks run fraction by fraction (then order, then image), so that a batch's systems are alike in size and
    # conjugate gradients stop for all of them at about the same iteration.
    tasks = len(fractions) * 2 * count
    scores = torch.empty(tasks, device=device)
    for first in range(0, tasks, batch_size):
        index = torch.arange(first, min(first + batch_size, tasks), device=device)
        fraction, least_first, image = index // (2 * count), (index // count) % 2, index % count
        order = torch.where(least_first[:, None, None].bool(), height * width - 1 - ranks[image], ranks[image])
        removed = order < removed_counts[fraction][:, None, None]  # (b, H, W)
        draw = None
        if noise:
            draw = torch.stack(
                [
                    torch.randn(channels, height, width, generator=image_generator(seed, rows[i], f, o))
                    for i, f, o in zip(image.tolist(), fraction.tolist(), least_first.tolist())
                ]
            )
        imputed = noisy_linear_imputation(pixel_values[image], removed, noise, None, max_iterations, draw=draw)
        scores[index] = class_probability(model, imputed, targets[image], multi_label, dtype)
    curves = scores.view(len(fractions), 2, count).permute(1, 2, 0).cpu()  # (2, N, F)
    return RoadCurves(torch.tensor(fractions), curves[0], curves[1])
