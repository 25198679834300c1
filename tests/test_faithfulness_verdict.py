"""One verdict per question (issue 26): whether a method's maps beat random maps is decided by ROAD LeRF - MoRF
alone, and the other measures are shown as supporting numbers, on planted curves (no model) where the measures
disagree."""

from __future__ import annotations

import numpy as np
import pytest

from explain.metrics.faithfulness import Faithfulness, FaithfulnessSettings
from explain.metrics.statistics import DECIDING_MEASURE, MEASURES, VERDICT_TEXT
from trainers.report.markdown import render_markdown

from helpers.planted_faithfulness import Planted, planted_parts
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
