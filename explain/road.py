"""ROAD: remove pixels and fill them by noisy linear imputation (Rong et al., ICML 2022, "A Consistent and
Efficient Evaluation Strategy for Attribution Methods").

Filling removed pixels with a constant or a blur leaves the removed region's shape in the image, and a model can
read the class from that shape alone. ROAD fills each removed pixel with the weighted mean of its 8 neighbours
(1/6 for the 4 direct ones, 1/12 for the diagonals, neighbours outside the image left out), kept pixels fixed,
plus a little Gaussian noise. That is one sparse linear system per image and channel:

    (D - W_rr) x = W_rk v,

D the sum of a removed pixel's in-image neighbour weights, W_rr the weights between removed pixels, W_rk the
weights from removed to kept pixels, v the kept values. The matrix is symmetric (each offset and its opposite
carry one weight) and positive definite whenever some pixel is kept (every connected group of removed pixels then
touches a kept one), so conjugate gradients solve it. The reference (pytorch-grad-cam's `NoisyLinearImputer`,
from the authors' code) builds the matrix per image on the CPU and calls a sparse direct solver; here every image,
channel and removal fraction of a batch is solved at once on the device, the matrix never formed: applying it is
one depthwise 3x3 convolution. On one CPU thread that was 2.25x faster than the reference at 64 px
(`scripts/benchmark.py faithfulness`): conjugate gradients need about 3 x 64 iterations for a large smooth removed
region, where a direct solve of a 4,096-unknown system is cheap; the batched solve is made for the GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from explain.faithfulness import check_maps_fit, class_probability, pixel_ranks
from pipelines.errors import ConfigError

# Rong et al.'s neighbour weights, as a 3x3 kernel centred on the pixel being filled.
NEIGHBOUR_WEIGHTS = torch.tensor([[1 / 12, 1 / 6, 1 / 12], [1 / 6, 0.0, 1 / 6], [1 / 12, 1 / 6, 1 / 12]])
ROAD_FRACTIONS = (0.1, 0.3, 0.5, 0.7, 0.9)
CHECK_EVERY = 8  # conjugate-gradient iterations between convergence checks (each check waits for the device)


def _neighbour_sum(values: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> the weighted sum of each pixel's in-image neighbours (zero padding drops the others)."""
    systems = values.shape[0] * values.shape[1]
    kernel = NEIGHBOUR_WEIGHTS.to(values).expand(systems, 1, 3, 3)
    # Depthwise, every (image, channel) system one channel of a single batch item: on a CPU this ran 25x faster
    # than the same convolution over (B, C) with C groups, and 15x faster than (B * C, 1) with one channel.
    flat = values.reshape(1, systems, *values.shape[-2:])
    return F.conv2d(flat, kernel, padding=1, groups=systems).view_as(values)


def _per_system_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) x 2 -> (B, C, 1, 1): one inner product per image and channel, i.e. per linear system."""
    return torch.linalg.vecdot(a.flatten(2), b.flatten(2))[..., None, None]


def linear_imputation(
    pixel_values: torch.Tensor,
    removed: torch.Tensor,
    max_iterations: int | None = None,
    tolerance: float = 1e-5,
) -> torch.Tensor:
    """Fill `removed` pixels with the solution of ROAD's linear system (no noise), by conjugate gradients.

    Args:
        pixel_values: (B, C, H, W) images, in the model's input space.
        removed: (B, H, W) or (B, 1, H, W) bool, True where a pixel is removed.
        max_iterations: At most this many iterations; default 4 * max(H, W). Conjugate gradients on this
            Laplacian-like system need about as many iterations as the widest removed region is wide.
        tolerance: Stop once every system's largest residual (the filled pixels' departure from the weighted mean
            of their neighbours) is below this; checked every 8 iterations. 0 runs `max_iterations` exactly.
            At 1e-5 the filled pixels of white-noise 64 px images were within 5e-4 of the exact solution (1e-6:
            1.5e-5; the hardest masks, large smooth removed regions, took about 3 * 64 iterations).

    Returns:
        (B, C, H, W) the images with removed pixels filled. Images with every pixel removed have no kept value
        to start from; they come back as zeros there.
    """
    if removed.dim() == 3:
        removed = removed[:, None]
    if removed.shape[0] != pixel_values.shape[0] or removed.shape[-2:] != pixel_values.shape[-2:]:
        raise ConfigError(f"removed {tuple(removed.shape)} does not match the images {tuple(pixel_values.shape)}.")
    if pixel_values.shape[1] > 1 and bool((pixel_values == pixel_values[:, :1]).all()):
        # Grayscale repeated to RGB (MedMNIST's 2D subsets, with equal per-channel normalisation): one system per
        # image instead of three identical ones.
        single = linear_imputation(pixel_values[:, :1], removed, max_iterations, tolerance)
        return single.expand_as(pixel_values).contiguous()
    values = pixel_values.float()
    inside = removed.to(values.dtype)  # (B, 1, H, W): 1 on the unknowns
    kept = values * (1 - inside)
    degree = _neighbour_sum(torch.ones_like(values[:1, :1]))  # (1, 1, H, W): 1 inside, less on the border

    def apply(direction: torch.Tensor) -> torch.Tensor:  # (D - W_rr) on the unknowns; zero on kept pixels
        return torch.addcmul(_neighbour_sum(direction), degree, direction, value=-1).mul_(-inside)

    residual = inside * _neighbour_sum(kept)  # the right-hand side W_rk v, as the start is x = 0
    solution = torch.zeros_like(values)
    direction = residual.clone()
    squared = _per_system_dot(residual, residual)
    limit = 4 * max(values.shape[-2:]) if max_iterations is None else max_iterations
    for iteration in range(limit):
        product = apply(direction)
        curvature = _per_system_dot(direction, product)
        # A system with nothing removed, or already solved, has no direction left: its step is 0, not 0 / 0.
        step = torch.where(curvature > 0, squared / curvature.clamp_min(1e-30), 0.0)
        solution.addcmul_(step, direction)
        residual.addcmul_(step, product, value=-1)
        updated = _per_system_dot(residual, residual)
        direction.mul_(torch.where(squared > 0, updated / squared.clamp_min(1e-30), 0.0)).add_(residual)
        squared = updated
        if tolerance > 0 and (iteration + 1) % CHECK_EVERY == 0 and residual.abs().max() < tolerance:
            break
    return (kept + solution).to(pixel_values.dtype)


def noisy_linear_imputation(
    pixel_values: torch.Tensor,
    removed: torch.Tensor,
    noise: float = 0.01,
    generator: torch.Generator | None = None,
    max_iterations: int | None = None,
    tolerance: float = 1e-5,
) -> torch.Tensor:
    """ROAD's imputation: `linear_imputation` plus Gaussian noise of standard deviation `noise` (absolute, in
    the input space, Rong et al.'s 0.01) on the removed pixels only.

    Args:
        pixel_values: (B, C, H, W) images.
        removed: (B, H, W) bool, True where a pixel is removed.
        noise: Standard deviation of the added noise; 0 for none.
        generator: A CPU generator for the noise, for repeatable results (the noise is drawn on the CPU).

    Returns:
        (B, C, H, W) the imputed images.
    """
    filled = linear_imputation(pixel_values, removed, max_iterations, tolerance)
    if noise == 0:
        return filled
    draw = torch.randn(filled.shape, generator=generator, dtype=filled.dtype).to(filled.device)
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


@torch.no_grad()
def road_curves(
    model: nn.Module,
    pixel_values: torch.Tensor,
    maps: torch.Tensor,
    targets: torch.Tensor,
    fractions: tuple[float, ...] = ROAD_FRACTIONS,
    batch_size: int = 64,
    multi_label: bool = False,
    noise: float = 0.01,
    seed: int = 0,
    dtype: torch.dtype | None = None,
    max_iterations: int | None = None,
) -> RoadCurves:
    """MoRF and LeRF ROAD curves of `maps`: remove each share of pixels in order of attribution, impute them, and
    score the explained class.

    Args:
        model: The classifier the maps explain.
        pixel_values: (N, C, H, W) the model's inputs.
        maps: (N, H, W) attributions at the input resolution.
        targets: (N,) the class each map explains.
        fractions: The shares of pixels removed, each in (0, 1).
        batch_size: Imputed images per forward pass (and per imputation).
        multi_label: Score with a sigmoid instead of a softmax.
        noise: The imputation's noise (`noisy_linear_imputation`).
        seed: Seed of that noise.
        dtype: Compute dtype of the forward passes (autocast when lower than the parameters').
        max_iterations: Passed to `linear_imputation`.

    Returns:
        `RoadCurves` with (N, F) curves.
    """
    if not fractions or not all(0 < fraction < 1 for fraction in fractions):
        raise ConfigError(f"ROAD fractions {fractions} must each lie strictly between 0 and 1.")
    check_maps_fit(maps, pixel_values)
    count, _, height, width = pixel_values.shape
    device = pixel_values.device
    ranks = pixel_ranks(maps.to(device)).view(count, height, width)  # 0: the most relevant pixel
    removed_counts = torch.tensor([round(fraction * height * width) for fraction in fractions], device=device)
    targets = targets.to(device)
    generator = torch.Generator().manual_seed(seed)
    # Tasks run fraction by fraction (then order, then image), so that a batch's systems are alike in size and
    # conjugate gradients stop for all of them at about the same iteration.
    tasks = len(fractions) * 2 * count
    scores = torch.empty(tasks, device=device)
    for first in range(0, tasks, batch_size):
        index = torch.arange(first, min(first + batch_size, tasks), device=device)
        fraction, least_first, image = index // (2 * count), (index // count) % 2, index % count
        order = torch.where(least_first[:, None, None].bool(), height * width - 1 - ranks[image], ranks[image])
        removed = order < removed_counts[fraction][:, None, None]  # (b, H, W)
        imputed = noisy_linear_imputation(pixel_values[image], removed, noise, generator, max_iterations)
        scores[index] = class_probability(model, imputed, targets[image], multi_label, dtype)
    curves = scores.view(len(fractions), 2, count).permute(1, 2, 0).cpu()  # (2, N, F)
    return RoadCurves(torch.tensor(fractions), curves[0], curves[1])
