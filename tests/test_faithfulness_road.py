"""ROAD's imputation against a sparse direct solve, and the faithfulness numbers that tell a map from random maps:
normalised areas, MoRF vs LeRF, the paired test, the dynamic-range warning."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.sparse import lil_matrix
from scipy.sparse.linalg import spsolve
from scipy.stats import wilcoxon

from explain.metrics.faithfulness import (
    CurveSettings,
    FaithfulnessSettings,
    deletion_insertion,
    faithfulness,
    normalised_area,
)
from explain.metrics.masking import random_maps
from explain.metrics.road import noisy_linear_imputation
from explain.metrics.road_solver import Multigrid, as_images, as_systems, linear_imputation, prolong
from explain.metrics.statistics import MEASURES, PairedComparison
from pipelines.errors import ConfigError
from trainers.benchmark.faithfulness import benchmark_road, road_masks
from trainers.report.arguments import ReportArguments
from trainers.report.markdown import render_markdown

from helpers.explain_models import CheckerRegion, checker_images
from helpers.reports import report_with

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
    # Grayscale repeated to three channels is solved once per image, with the same result.
    grey = images[:, :1].expand(-1, 3, -1, -1)
    torch.testing.assert_close(linear_imputation(grey, removed), filled[:, :1].expand(-1, 3, -1, -1))
    # Kept pixels stay exactly what they were.
    assert torch.equal(filled.permute(1, 0, 2, 3)[:, ~removed], images.permute(1, 0, 2, 3)[:, ~removed])


def hard_masks(height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """(4, H, W): isolated kept pixels in a removed sea, every pixel removed, none removed, and a large smooth
    removed region along the image border (an upsampled 3 x 3 map's top 80%, the slow case for plain CG)."""
    removed = torch.zeros(4, height, width, dtype=torch.bool)
    removed[0] = torch.rand(height, width, generator=generator) < 0.97
    removed[1] = True
    smooth = F.interpolate(torch.rand(1, 1, 3, 3, generator=generator), size=(height, width), mode="bilinear")
    removed[3] = smooth[0, 0] > smooth.quantile(0.2)
    return removed


def test_the_multigrid_preconditioned_solve_equals_a_direct_solve_on_hard_masks() -> None:
    generator = torch.Generator().manual_seed(2)
    images = torch.randn(4, 3, 45, 38, generator=generator)  # odd and even sides: 45 x 38 -> 23 x 19 -> ...
    removed = hard_masks(45, 38, generator)
    filled = linear_imputation(images, removed, tolerance=1e-5)
    for index in (0, 3):
        expected = sparse_imputation(images[index].double().numpy(), removed[index].numpy())
        assert np.abs(filled[index].double().numpy() - expected).max() < IMPUTATION_TOLERANCE
    assert torch.count_nonzero(filled[1]) == 0  # nothing kept, nothing to fill from (the documented zeros)
    assert torch.equal(filled[2], images[2])  # nothing removed
    # An image of at most 64 pixels is its own coarsest grid, solved directly.
    small = linear_imputation(images[:, :, :7, :9], removed[:, :7, :9])
    for index in (0, 3):
        expected = sparse_imputation(images[index, :, :7, :9].double().numpy(), removed[index, :7, :9].numpy())
        assert np.abs(small[index].double().numpy() - expected).max() < IMPUTATION_TOLERANCE
    assert torch.count_nonzero(small[1]) == 0
    # A 1 x 7 strip with every pixel removed: an exactly singular coarsest matrix, still zeros, not an error.
    assert torch.count_nonzero(linear_imputation(images[1:2, :, :1, :7], removed[1:2, :1, :7])) == 0
    # The preconditioner's point: 6 iterations reach 1e-3 on the smooth region (plain conjugate gradients needed
    # about 3 x 45 on such masks).
    capped = linear_imputation(images[3:], removed[3:], max_iterations=6, tolerance=0)
    expected = sparse_imputation(images[3].double().numpy(), removed[3].numpy())
    assert np.abs(capped[0].double().numpy() - expected).max() < 1e-3


def test_the_v_cycle_is_a_symmetric_positive_definite_matrix() -> None:
    # What conjugate gradients need of a preconditioner: written out column by column on small hard masks.
    generator = torch.Generator().manual_seed(3)
    height, width = 20, 17
    removed = hard_masks(height, width, generator)[[0, 3]]
    removed[1, 2:9, 0:6] = False  # a kept block on the border inside the removed region
    pixels = height * width
    preconditioner = Multigrid(removed[:, None])
    basis = torch.eye(pixels).view(1, pixels, height, width) * removed[:, None].float()  # (2, n, H, W)
    columns = as_images(preconditioner(as_systems(basis))).reshape(2, pixels, pixels)  # [m, j] = M_m e_j
    for mask, matrix in zip(removed, columns):
        unknowns = mask.flatten()
        block = matrix[unknowns][:, unknowns].double()
        assert (block - block.T).abs().max() < 1e-5 * block.abs().max()
        eigenvalues = torch.linalg.eigvalsh((block + block.T) / 2)
        assert eigenvalues.min() > 1e-3 * eigenvalues.max()
        assert matrix[~unknowns].abs().max() == 0  # kept pixels get no correction


def test_the_closed_form_coarse_operator_is_r_a_p_written_out() -> None:
    # R A P from the fine operator and the prolongation applied to unit vectors, against the coarse level's
    # stencil applied to unit vectors, on hard masks with an odd and an even side (the doubled last column).
    generator = torch.Generator().manual_seed(4)
    height, width = 11, 10
    removed = hard_masks(height, width, generator)[[0, 3]]
    removed[1, 4:7, 0:3] = False  # a kept block on the border inside the removed region
    fine, coarse = Multigrid(removed[:, None]).levels[:2]
    coarse_height, coarse_width = coarse.size
    points, coarse_points, masks = height * width, coarse_height * coarse_width, len(removed)

    def dense(columns: torch.Tensor) -> torch.Tensor:  # (n, M, h, w) [j, m] -> (M, h * w, n) [m, :, j]
        return columns.permute(1, 2, 3, 0).reshape(masks, -1, columns.shape[0])

    fine_basis = torch.eye(points).view(points, 1, height, width) * fine.active
    coarse_basis = torch.eye(coarse_points).view(coarse_points, 1, coarse_height, coarse_width) * coarse.active
    matrix = dense(fine.apply(fine_basis.contiguous(memory_format=torch.channels_last)) * fine.active)
    prolongation = dense(prolong(coarse_basis.contiguous(memory_format=torch.channels_last), fine.size) * fine.weight)
    expected = prolongation.mT @ matrix @ prolongation
    assert expected.abs().max() > 0.1  # the masks leave coarse points to solve for
    got = dense(coarse.apply(coarse_basis.contiguous(memory_format=torch.channels_last)) * coarse.active)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)


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


def test_a_map_of_the_deciding_region_beats_random_maps_on_every_measure_and_its_reverse_loses() -> None:
    images, truthful = checker_images()
    targets = torch.zeros(len(images), dtype=torch.long)
    # Insertion from the removed image: a blur of these 16 px images leaves the prediction where it was (a range
    # of about 0.01), too little to normalise by (explain.metrics.faithfulness.MIN_RANGE).
    settings = FaithfulnessSettings(
        random_maps=8, random_steps=8, road_fractions=(0.2, 0.5, 0.8), insertion_start="removed", steps=8
    )
    good = faithfulness(CheckerRegion(), images, truthful, targets, settings)
    bad = faithfulness(CheckerRegion(), images, -truthful, targets, settings)
    assert set(good.comparisons) == set(MEASURES)
    for name, comparison in good.comparisons.items():
        numbers = comparison.numbers()
        assert numbers["p_value"] < 0.01 and numbers["advantage_mean"] > 0 and comparison.verdict == "better", name
        assert numbers["wins"] > 0.9 and numbers["images"] == 24, name
    for name, comparison in bad.comparisons.items():
        numbers = comparison.numbers()
        assert numbers["p_value"] < 0.01 and numbers["advantage_mean"] < 0 and comparison.verdict == "worse", name
    assert good.numbers()["verdict"] == "beats random maps"
    assert bad.numbers()["verdict"] == "is worse than random maps"
    assert good.numbers()["deciding_measure"] == "road_lerf_minus_morf"
    # The long-standing keys are still there, with the meaning they had (one random map, seed 0, K steps).
    legacy = deletion_insertion(
        CheckerRegion(),
        images,
        random_maps(truthful, seed=0),
        targets,
        CurveSettings(steps=8, insertion_start=0 * images),
    )
    assert good.numbers()["random_deletion_auc"] == pytest.approx(float(legacy.deletion_auc.mean()))
    assert good.numbers()["random_insertion_auc"] == pytest.approx(float(legacy.insertion_auc.mean()))


def test_paired_test_by_hand() -> None:
    # Advantages (lower is better): random mean - map = [1, 2, 3, -0.5]; scipy's exact two-sided test on those.
    comparison = PairedComparison(
        np.array([0.0, 0.0, 0.0, 1.0]), np.array([[1.0, 2.0, 3.0, 0.0], [1.0, 2.0, 3.0, 1.0]]), False
    )
    np.testing.assert_allclose(comparison.advantage, [1, 2, 3, -0.5])
    numbers = comparison.numbers()
    assert numbers["wins"] == 0.75 and numbers["advantage_mean"] == pytest.approx(1.375)
    assert numbers["p_value"] == pytest.approx(wilcoxon([1, 2, 3, -0.5]).pvalue)
    assert comparison.verdict == "unclear"  # four images cannot reach p < 0.01
    tie = PairedComparison(np.ones(5), np.ones((2, 5)), True)
    assert tie.p_value == 1.0 and tie.verdict == "unclear"


def test_normalised_areas_by_hand_and_invariant_to_an_affine_change_of_the_probabilities() -> None:
    fractions = torch.tensor([0.0, 0.5, 1.0])
    # Deletion from 0.9 to a baseline of 0.1: scaled 1, 0.5, 0 -> area 0.5. Insertion 0.3 -> 0.7: 0, 0.75, 1.
    # (float32 probabilities, normalised in float64: 0.9 and 0.1 are not exact in float32.)
    assert normalised_area(torch.tensor([[0.9, 0.5, 0.1]]), fractions, start_is_intact=True).item() == (
        pytest.approx(0.5, abs=1e-7)
    )
    assert normalised_area(torch.tensor([[0.3, 0.6, 0.7]]), fractions, start_is_intact=False).item() == (
        pytest.approx(0.625)
    )
    curves = torch.rand(6, 9, generator=torch.Generator().manual_seed(3))
    steps = torch.linspace(0, 1, 9)
    for start_is_intact in (True, False):
        plain = normalised_area(curves, steps, start_is_intact)
        for scale, shift in ((0.2, 0.75), (3.0, -1.0), (-0.5, 0.6)):
            moved = normalised_area(scale * curves + shift, steps, start_is_intact)
            torch.testing.assert_close(moved, plain, rtol=1e-4, atol=1e-5)
    flat = normalised_area(torch.full((1, 9), 0.4), steps, start_is_intact=True)
    assert torch.isnan(flat).all()  # no range to scale by


def test_the_report_warns_when_the_baseline_leaves_the_prediction_unchanged() -> None:
    images, truthful = checker_images(count=8)
    targets = torch.zeros(8, dtype=torch.long)
    # Insertion from zeros: the 16 px blur is too light to remove the checkerboard.
    settings = FaithfulnessSettings(2, 4, paired_images=5, road_fractions=(0.5,), insertion_start=0 * images, steps=4)
    # A bias of 20 saturates the class: deleting, blurring or imputing any pixel leaves its probability at 1.
    saturated = faithfulness(CheckerRegion(bias=20.0), images, truthful, targets, settings)
    reading = faithfulness(CheckerRegion(), images, truthful, targets, settings)
    assert saturated.median_dynamic_range["deletion"] < 1e-6 and reading.median_dynamic_range["deletion"] > 0.1
    assert (saturated.images, saturated.numbers()["paired_images"]) == (8, 5)  # the paired test on 5 of the 8
    warned = render_markdown(report_with({"gradcam": saturated.numbers()}))
    assert "these curves measure the baseline, not the maps" in warned
    assert "these curves measure the baseline" not in render_markdown(report_with({"gradcam": reading.numbers()}))


def test_road_benchmark_imputes_the_same_masks_as_pytorch_grad_cam_to_1e_3() -> None:
    pytest.importorskip("pytorch_grad_cam")
    fractions = (0.25, 0.75)
    maps = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0))
    masks = road_masks(maps, fractions)  # per fraction: MoRF then LeRF, image by image
    assert masks.flatten(1).sum(1).tolist() == [64] * 6 + [192] * 6
    assert torch.equal(masks[0], maps[0] >= maps[0].flatten().sort(descending=True).values[63])  # the top quarter
    timing = benchmark_road(image_size=16, images=2, fractions=fractions, use_cpu=True)
    assert timing.masks == 2 * 2 * 2 and timing.ours_seconds > 0 and timing.reference_seconds > 0
    assert timing.max_difference < 1e-3


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"road_fractions": "0.5,1.2"}, "road_fractions is '0.5,1.2'"),
        ({"road_fractions": "half"}, "road_fractions is 'half'"),
        ({"random_maps": 0}, "random_maps is 0"),
        ({"random_steps": 1}, "random_steps is 1"),
        ({"paired_images": 0}, "paired_images is 0"),
    ],
)
def test_bad_faithfulness_settings_are_one_sentence(values: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        ReportArguments(models=["teacher"], **values)


def test_evaluate_arguments_give_the_road_fractions_as_numbers() -> None:
    assert ReportArguments(models=["teacher"], road_fractions="0.1, 0.9").road_fraction_values() == (0.1, 0.9)
