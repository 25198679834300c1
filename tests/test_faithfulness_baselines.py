"""Insertion from the removed image, images too flat to normalise, and the random draws' spread in the report."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from explain.metrics.faithfulness import (
    MIN_RANGE,
    CurveSettings,
    FaithfulnessSettings,
    deletion_insertion,
    faithfulness,
    paired_measures,
)
from explain.metrics.road import RoadSettings, road_curves
from pipelines import ConfigError
from trainers.report.arguments import ReportArguments
from trainers.report.markdown import render_markdown

from helpers.explain_models import CheckerRegion, checker_images
from helpers.reports import report_with


def test_insertion_from_the_removed_image_starts_where_deletion_ends() -> None:
    images, truthful = checker_images(count=6)
    targets = torch.zeros(6, dtype=torch.long)
    settings = FaithfulnessSettings(2, 4, road_fractions=(0.5,), insertion_start="removed", deletion_value=0.0, steps=4)
    result = faithfulness(CheckerRegion(), images, truthful, targets, settings)
    by_hand = deletion_insertion(
        CheckerRegion(), images, truthful, targets, CurveSettings(steps=4, insertion_start=0 * images)
    )
    np.testing.assert_allclose(result.insertion_curve, by_hand.insertion.mean(0).numpy(), rtol=1e-6)
    # Its first point is the fully deleted image: the last point of deletion.
    assert result.insertion_curve[0] == pytest.approx(result.deletion_curve[-1])
    assert result.insertion_curve[-1] == pytest.approx(result.deletion_curve[0])
    assert "every pixel removed" in result.numbers()["baselines"]["insertion"]
    blurred = faithfulness(CheckerRegion(), images, truthful, targets, FaithfulnessSettings(2, 4, steps=4))
    assert blurred.insertion_curve[0] != pytest.approx(result.insertion_curve[0])  # the default start is the blur


def test_an_unknown_insertion_start_is_one_sentence() -> None:
    with pytest.raises(ConfigError, match="insertion_start is 'grey'; use 'blurred', 'removed' or images"):
        FaithfulnessSettings(insertion_start="grey")
    with pytest.raises(ConfigError, match="insertion_start is 'grey'; use one of blurred, removed"):
        ReportArguments(models=["a"], insertion_start="grey")


def test_images_whose_probability_barely_moves_are_left_out_of_the_normalised_measures() -> None:
    images, truthful = checker_images(count=8)
    targets = torch.zeros(8, dtype=torch.long)
    # Half of the images carry a weak pattern: deleting it moves their probability by less than MIN_RANGE.
    images[4:] *= 0.01
    curves = deletion_insertion(CheckerRegion(), images, truthful, targets, CurveSettings(steps=4, lerf=True))
    road = road_curves(CheckerRegion(), images, truthful, targets, RoadSettings(fractions=(0.5,)))
    flat = curves.deletion_range.abs() < MIN_RANGE
    assert flat[4:].all() and not flat[:4].any()
    measures = paired_measures(curves, road)
    for name in ("deletion", "lerf_minus_morf"):
        assert np.isnan(measures[name][4:]).all() and np.isfinite(measures[name][:4]).all(), name
    assert np.isfinite(measures["road_lerf_minus_morf"]).all()  # ROAD is not normalised: every image counts
    # A blur leaves these 16 px images' prediction unchanged: no image has an insertion range to normalise by, and
    # the paired test says so instead of deciding on noise divided by 0.004.
    assert (curves.insertion_range.abs() < MIN_RANGE).all() and np.isnan(measures["insertion"]).all()
    result = faithfulness(CheckerRegion(), images, truthful, targets, FaithfulnessSettings(2, 4, steps=4))
    insertion = result.numbers()["against_random"]["insertion"]
    assert insertion["images"] == 0 and np.isnan(insertion["p_value"])
    assert result.comparisons["insertion"].verdict == "unclear"
    # The figure plots the mean over the table's images: none here, so no insertion curve either.
    assert np.isnan(result.paired_curves["insertion"]).all() and np.isnan(result.random_curves["insertion"]).all()


def test_the_report_shows_how_far_random_draws_differ() -> None:
    images, truthful = checker_images(count=12)
    targets = torch.zeros(12, dtype=torch.long)
    # Insertion from the removed image: a blur leaves these 16 px images' prediction where it was (no image to
    # compare, every insertion number NaN).
    settings = FaithfulnessSettings(4, 4, steps=4, insertion_start="removed")
    result = faithfulness(CheckerRegion(), images, truthful, targets, settings)
    draws = result.numbers()["random_draws"]
    against_random = result.numbers()["against_random"]
    for curve in ("deletion", "insertion"):
        # The normalised areas the paired test compares, the same images: the maps' and the random maps' means.
        assert draws[curve]["map"] == pytest.approx(against_random[curve]["map"], abs=1e-9)
        assert draws[curve]["mean"] == pytest.approx(against_random[curve]["random"], abs=1e-9)
        by_hand = [float(np.trapezoid(mean, result.random_fractions)) for mean in result.random_curves[curve]]
        assert draws[curve]["draws"] == pytest.approx(by_hand)
        assert draws[curve]["sd"] == pytest.approx(np.std(by_hand, ddof=1))
        assert draws[curve]["mean"] == pytest.approx(np.mean(by_hand))
        assert (draws[curve]["min"], draws[curve]["max"]) == (min(by_hand), max(by_hand))
        assert draws[curve]["map"] == pytest.approx(
            float(np.trapezoid(result.paired_curves[curve], result.random_fractions))
        )
    # The map of the deciding region is further from the random draws than they are from each other.
    assert draws["deletion"]["map"] < draws["deletion"]["min"] - 2 * draws["deletion"]["sd"]
    markdown = render_markdown(report_with({"gradcam": result.numbers()}))
    deletion = draws["deletion"]
    assert f"| model | gradcam | deletion | {deletion['map']:.4f} |" in markdown
    assert f"{deletion['min']:.4f}–{deletion['max']:.4f} | {deletion['sd']:.4f} |" in markdown
