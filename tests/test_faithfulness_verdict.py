"""One verdict per question (issue 26): whether a method's maps beat random maps is decided by ROAD LeRF - MoRF
alone, the other measures are shown as supporting numbers, and the report's figure plots exactly what its table
tests, on planted curves (no model) where the measures, or the raw and the normalised curves, disagree."""

from __future__ import annotations

import numpy as np
import pytest

from explain.metrics.faithfulness import MIN_RANGE, Faithfulness, FaithfulnessParts, FaithfulnessSettings
from explain.metrics.statistics import DECIDING_MEASURE, MEASURES, VERDICT_TEXT
from trainers.report.figures import faithfulness_figure
from trainers.report.markdown import render_markdown

from helpers.planted_faithfulness import FRACTIONS, Planted, planted_parts
from helpers.reports import report_with

SETTINGS = FaithfulnessSettings(random_maps=4, random_steps=4, road_fractions=(0.2, 0.5, 0.8), steps=4)
WORSE_SHAPE, BETTER_SHAPE = 0.5, 2.0
# Each case: the maps' deletion and insertion shape, the ROAD shifts (MoRF, LeRF), each measure's own test as
# planted, and the verdict. A ROAD LeRF - MoRF advantage needs a better LeRF or a better MoRF, so no case can have
# all five other measures against it; across the cases each of them disagrees with the verdict at least once.
CASES = {
    "beats, though four measures say worse": (
        WORSE_SHAPE,
        (0.1, 0.3),
        dict(deletion="worse", insertion="worse", lerf_minus_morf="worse", road_morf="worse", road_lerf="better"),
        "better",
    ),
    "worse, though four measures say better": (
        BETTER_SHAPE,
        (-0.1, -0.3),
        dict(deletion="better", insertion="better", lerf_minus_morf="better", road_morf="better", road_lerf="worse"),
        "worse",
    ),
    "beats, though ROAD LeRF says worse": (
        WORSE_SHAPE,
        (-0.3, -0.1),
        dict(deletion="worse", insertion="worse", lerf_minus_morf="worse", road_morf="better", road_lerf="worse"),
        "better",
    ),
    "worse, though ROAD LeRF says better": (
        BETTER_SHAPE,
        (0.3, 0.1),
        dict(deletion="better", insertion="better", lerf_minus_morf="better", road_morf="worse", road_lerf="better"),
        "worse",
    ),
    "cannot be told, though five measures say better or worse": (
        BETTER_SHAPE,
        (0.2, 0.2),
        dict(deletion="better", insertion="better", lerf_minus_morf="better", road_morf="worse", road_lerf="better"),
        "unclear",
    ),
}


def planted_result(shape: float, road_shifts: tuple[float, float], images: int = 30) -> Faithfulness:
    ranges, quality = np.full(images, 0.5), np.full(images, shape)
    plan = Planted(ranges, quality, road_morf_shift=road_shifts[0], road_lerf_shift=road_shifts[1])
    return Faithfulness.from_parts(planted_parts(plan), SETTINGS)


def test_every_other_measure_disagrees_with_the_verdict_in_some_case() -> None:
    # The cases below can only pass if the verdict comes from ROAD LeRF - MoRF: any other measure would give a
    # different verdict in at least one of them.
    for measure in set(MEASURES) - {DECIDING_MEASURE}:
        assert any(planted[measure] != verdict for _, _, planted, verdict in CASES.values()), measure


@pytest.mark.parametrize("case", CASES)
def test_the_verdict_is_the_deciding_measures_alone(case: str) -> None:
    shape, road_shifts, planted, verdict = CASES[case]
    result = planted_result(shape, road_shifts)
    measured = {name: comparison.verdict for name, comparison in result.comparisons.items()}
    assert measured == {**planted, DECIDING_MEASURE: verdict}  # the planted disagreement is really there
    numbers = result.numbers()
    assert numbers["verdict"] == VERDICT_TEXT[verdict] and numbers["deciding_measure"] == DECIDING_MEASURE
    # The other measures keep their numbers, without a verdict word of their own.
    assert all("verdict" not in values for values in numbers["against_random"].values())
    markdown = render_markdown(report_with({"gradcam": numbers}))
    deciding = numbers["against_random"][DECIDING_MEASURE]
    assert f"- **model**: gradcam {VERDICT_TEXT[verdict]} (ROAD LeRF - MoRF: median advantage" in markdown
    assert f"of {deciding['images']} images" in markdown
    table = [line for line in markdown.splitlines() if line.startswith("| model | gradcam | ")]
    verdict_cells = [line.rstrip(" |").rsplit("| ", 1)[1] for line in table if "normalised" in line or "ROAD" in line]
    assert verdict_cells == ["(supporting)"] * 5 + [VERDICT_TEXT[verdict]]
    assert "One measure decides the verdict: ROAD LeRF - MoRF" in markdown


def test_a_report_written_before_one_verdict_gets_the_deciding_measures_verdict() -> None:
    # metrics.json of an older report: a verdict word per measure and a sentence counting them; NaN as null.
    supporting = {"map": 0.4, "random": 0.5, "advantage_mean": -0.1, "advantage_median": -0.1, "wins": 0.2}
    older = {
        "against_random": {
            **{name: {**supporting, "p_value": 1e-4, "images": 30, "verdict": "worse"} for name in MEASURES},
            "insertion": {**supporting, "p_value": None, "images": 0, "verdict": "unclear"},
            DECIDING_MEASURE: {**supporting, "advantage_median": 0.02, "p_value": 0.003, "images": 30, "verdict": "x"},
        },
        "verdict": "beats random maps on 1 of 6 measures and is worse on 4",
        **{key: 0.5 for key in ("deletion_auc", "insertion_auc", "random_deletion_auc", "random_insertion_auc")},
        "baselines": {"deletion": "zeros", "insertion": "a blur", "road": "ROAD"},
        "median_dynamic_range": {"deletion": 0.5, "insertion": 0.5},
        "random_maps": 4,
        "random_steps": 4,
        "paired_images": 30,
        "road_fractions": [0.5],
    }
    markdown = render_markdown(report_with({"gradcam": older}))
    assert "- **model**: gradcam beats random maps (ROAD LeRF - MoRF: median advantage 0.0200" in markdown
    assert "1 of 6 measures" not in markdown


def wide_and_narrow_parts() -> FaithfulnessParts:
    """Six images of range 0.9 where the maps are better than random, 24 of range 0.1 where they are worse (each by
    more than a wide image gains, so that the signed-rank test is sure of it), and ten of range 0.02 (below
    MIN_RANGE, left out of the table) where they are far better: raw mean curves weight each image by its range and
    call the maps better; the table, image by image, calls them worse (as a user found of Grad-CAM's insertion,
    issue 26)."""
    ranges = np.repeat([0.9, 0.1, 0.02], [6, 24, 10])
    quality = np.repeat([BETTER_SHAPE, 1 / 3, 4.0], [6, 24, 10])
    return planted_parts(Planted(ranges, quality, road_morf_shift=-0.05, road_lerf_shift=np.linspace(-0.1, 0.2, 40)))


def wide_and_narrow_images() -> Faithfulness:
    return Faithfulness.from_parts(wide_and_narrow_parts(), SETTINGS)


def area(curve: np.ndarray) -> float:
    return float(np.trapezoid(curve, FRACTIONS.numpy()))


def test_the_figures_curves_have_the_tables_numbers_as_their_areas() -> None:
    result = wide_and_narrow_images()
    assert MIN_RANGE > 0.02  # the 0.02 images are the ones left out
    table = result.numbers()["against_random"]
    assert table["deletion"]["images"] == table["insertion"]["images"] == 30
    for name in ("deletion", "insertion"):
        assert area(result.paired_curves[name]) == pytest.approx(table[name]["map"], abs=1e-6)
        random_areas = [area(curve) for curve in result.random_curves[name]]
        assert np.mean(random_areas) == pytest.approx(table[name]["random"], abs=1e-6)
    lerf_minus_morf = lambda curves: area(curves["lerf_deletion"]) - area(curves["deletion"])  # noqa: E731
    assert lerf_minus_morf(result.paired_curves) == pytest.approx(table["lerf_minus_morf"]["map"], abs=1e-6)
    random_differences = [
        lerf_minus_morf({name: draws[draw] for name, draws in result.random_curves.items()}) for draw in range(4)
    ]
    assert np.mean(random_differences) == pytest.approx(table["lerf_minus_morf"]["random"], abs=1e-6)
    # ROAD's panel: the mean LeRF minus the mean MoRF probability of what is plotted is the deciding row's numbers.
    road, random_road = result.road_curves, result.random_road_curves
    deciding = table[DECIDING_MEASURE]
    assert road["lerf"].mean() - road["morf"].mean() == pytest.approx(deciding["map"], abs=1e-6)
    random_road_means = random_road["lerf"].mean(axis=1) - random_road["morf"].mean(axis=1)
    assert random_road_means.mean() == pytest.approx(deciding["random"], abs=1e-6)


def test_raw_mean_curves_would_have_told_the_other_story_on_these_images() -> None:
    # Why the figure plots normalised curves: on these images the raw means say the maps beat random maps on
    # deletion and insertion, while the table's test (and now the figure) says they lose.
    parts = wide_and_narrow_parts()
    result = Faithfulness.from_parts(parts, SETTINGS)
    raw = lambda curves, name: area(getattr(curves, name).double().mean(0).numpy())  # noqa: E731
    table = result.numbers()["against_random"]
    assert raw(parts.paired, "deletion") < np.mean([raw(draw, "deletion") for draw in parts.random])  # raw: better
    assert table["deletion"]["map"] > table["deletion"]["random"] and result.comparisons["deletion"].verdict == "worse"
    assert raw(parts.paired, "insertion") > np.mean([raw(draw, "insertion") for draw in parts.random])  # raw: better
    assert table["insertion"]["map"] < table["insertion"]["random"]
    assert result.comparisons["insertion"].verdict == "worse"
    assert area(result.paired_curves["insertion"]) < min(area(curve) for curve in result.random_curves["insertion"])


def test_the_figure_draws_the_curves_whose_areas_the_table_tests() -> None:
    result = wide_and_narrow_images()
    figure = faithfulness_figure({"student": result}, "gradcam")
    deletion, insertion, road = figure.axes[:3]
    drawn = lambda axis: [line.get_ydata() for line in axis.get_lines()]  # noqa: E731
    np.testing.assert_array_equal(drawn(deletion)[0], result.paired_curves["deletion"])
    np.testing.assert_array_equal(drawn(deletion)[1], result.paired_curves["lerf_deletion"])
    np.testing.assert_array_equal(drawn(insertion)[0], result.paired_curves["insertion"])
    np.testing.assert_array_equal(drawn(road)[0], result.road_curves["morf"])
    np.testing.assert_array_equal(drawn(road)[1], result.road_curves["lerf"])
    assert "normalised class probability" in deletion.get_ylabel() and "1 intact, 0 baseline" in insertion.get_ylabel()
    assert "30 images" in deletion.get_title()  # the table's images: the ten flat ones are left out
    assert road.get_title() == f"student\nROAD, deciding: {result.numbers()['verdict']}"
    assert "ROAD LeRF - MoRF (right) decides the verdict" in figure.get_suptitle()
