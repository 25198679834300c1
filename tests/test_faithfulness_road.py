"""ROAD's imputation against a sparse direct solve, and the faithfulness numbers that tell a map from random maps:
normalised areas, MoRF vs LeRF, the paired test, the dynamic-range warning."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.sparse import lil_matrix
from scipy.sparse.linalg import spsolve

from explain.road import linear_imputation, noisy_linear_imputation
from pipelines.errors import ConfigError

# float32 conjugate gradients against scipy's float64 direct solve, on inputs of size about 1.
IMPUTATION_TOLERANCE = 1e-4


def sparse_imputation(image: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """Rong et al.'s system written out pixel by pixel and solved by scipy: each removed pixel is the weighted
    mean of its in-image neighbours (1/6 direct, 1/12 diagonal), kept pixels fixed. image (C, H, W)."""
    channels, height, width = image.shape
    unknowns = np.flatnonzero(removed.ravel())
    position = {pixel: row for row, pixel in enumerate(unknowns)}
    matrix = lil_matrix((len(unknowns), len(unknowns)))
    right = np.zeros((len(unknowns), channels))
    for row, pixel in enumerate(unknowns):
        y, x = divmod(int(pixel), width)
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                if (dy, dx) == (0, 0) or not (0 <= y + dy < height and 0 <= x + dx < width):
                    continue
                weight = 1 / 12 if dy and dx else 1 / 6
                matrix[row, row] += weight
                neighbour = (y + dy) * width + x + dx
                if neighbour in position:
                    matrix[row, position[neighbour]] -= weight
                else:
                    right[row] += weight * image[:, y + dy, x + dx]
    filled = image.reshape(channels, -1).astype(np.float64).copy()
    filled[:, unknowns] = spsolve(matrix.tocsc(), right).reshape(len(unknowns), channels).T
    return filled.reshape(image.shape)


def test_imputation_equals_a_sparse_direct_solve_on_small_images() -> None:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(4, 3, 14, 11, generator=generator)
    removed = torch.zeros(4, 14, 11, dtype=torch.bool)
    removed[0, 2:9, 3:10] = True  # one block, touching nothing
    removed[1, :, :6] = True  # a block along three edges
    removed[2] = torch.rand(14, 11, generator=generator) < 0.6  # scattered
    removed[3] = True
    removed[3, 13, 10] = False  # all but one corner pixel: the hardest system
    filled = linear_imputation(images, removed)
    for image, mask, result in zip(images, removed, filled):
        expected = sparse_imputation(image.double().numpy(), mask.numpy())
        assert np.abs(result.double().numpy() - expected).max() < IMPUTATION_TOLERANCE
    # Kept pixels stay exactly what they were.
    assert torch.equal(filled.permute(1, 0, 2, 3)[:, ~removed], images.permute(1, 0, 2, 3)[:, ~removed])


def test_noise_lands_on_removed_pixels_only_with_the_asked_spread() -> None:
    images = torch.zeros(2, 3, 40, 40)  # the noiseless fill of a zero image is zero
    removed = torch.zeros(2, 40, 40, dtype=torch.bool)
    removed[:, 10:30, 5:35] = True
    noisy = noisy_linear_imputation(images, removed, noise=0.05, generator=torch.Generator().manual_seed(1))
    inside = noisy.permute(1, 0, 2, 3)[:, removed]
    assert inside.std().item() == pytest.approx(0.05, rel=0.05)
    assert torch.count_nonzero(noisy.permute(1, 0, 2, 3)[:, ~removed]) == 0


def test_a_mask_that_does_not_fit_the_images_is_refused_in_one_sentence() -> None:
    with pytest.raises(ConfigError, match="does not match"):
        linear_imputation(torch.zeros(2, 3, 8, 8), torch.zeros(2, 7, 8, dtype=torch.bool))
