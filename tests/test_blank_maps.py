"""Blank maps (one value throughout: Grad-CAM's all-zero map) in the randomisation check and the agreement numbers:
pairs with a blank map are left out of the means and counted, and a mean over no pair is NaN (null, n/a)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import explain.metrics.randomization as randomization_module
import explain.metrics.scores as scores_module
from explain.metrics.agreement import agreement, blank_maps
from explain.metrics.randomization import randomization
from explain.metrics.scores import ScoredImages, score_explanations
from trainers.report.markdown import write_report

from helpers.reports import model_entry, report_of

# 2x2 maps whose comparisons are worked out by hand (see test_evaluation_metrics): ranks of A are 0,1,2,3 and of B
# 0,2,1,3, so Spearman(A, B) = 1 - 6 * 2 / (4 * 15) = 0.8; the top half of A is {3, 4} and of B {3, 4} at other
# places, sharing one pixel of three: IoU 1/3. Spearman(A, -A) = -1 and their top halves share nothing: IoU 0.
A = [[1.0, 2.0], [3.0, 4.0]]
B = [[1.0, 3.0], [2.0, 4.0]]
MINUS_A = [[-1.0, -2.0], [-3.0, -4.0]]
ZERO = [[0.0, 0.0], [0.0, 0.0]]


def maps(*rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows)


def test_blank_maps_are_those_holding_one_value() -> None:
    barely = [[0.0, 0.0], [0.0, 1e-6]]  # a faint map still ranks one pixel first
    flags = blank_maps(maps(A, ZERO, [[3.0, 3.0], [3.0, 3.0]], barely))
    assert flags.tolist() == [False, True, True, False]


def test_agreement_means_leave_out_pairs_with_a_blank_map() -> None:
    reference = maps(A, A, ZERO, A)
    other = maps(B, A, A, ZERO)
    result = agreement(reference, other, torch.tensor([0, 1, 1, 0]), torch.tensor([0, 1, 0, 0]), top_fraction=0.5)
    numbers = result.numbers(top_fraction=0.5)
    # Only images 0 and 1 are compared; counting the blank pairs as 0 would give 0.45 and 1/3.
    assert numbers["rank_correlation_mean"] == pytest.approx((0.8 + 1.0) / 2)
    assert numbers["top50_iou_mean"] == pytest.approx((1 / 3 + 1.0) / 2)
    assert numbers["pairs"] == 2
    assert numbers["blank_maps"] == 1 and numbers["blank_reference_maps"] == 1
    assert numbers["images"] == 4
    assert numbers["prediction_agreement"] == 0.75  # predictions need no map: every image counts


def test_agreement_over_no_compared_pair_is_nan() -> None:
    result = agreement(maps(ZERO, ZERO), maps(A, ZERO), torch.tensor([0, 0]), torch.tensor([0, 1]), top_fraction=0.5)
    numbers = result.numbers(top_fraction=0.5)
    assert math.isnan(numbers["rank_correlation_mean"]) and math.isnan(numbers["top50_iou_mean"])
    assert (numbers["pairs"], numbers["blank_maps"], numbers["blank_reference_maps"]) == (0, 1, 2)
    assert numbers["prediction_agreement"] == 0.5


def fake_explainer(monkeypatch: pytest.MonkeyPatch, table: dict[tuple[str, str], torch.Tensor]) -> None:
    """Make explain_maps hand out the given maps: for (model, "own") its maps for its own prediction, (model,
    "reinitialised") those of its re-initialised copy, (model, "reference class") those for the reference's class.
    Faithfulness is left out: it has nothing to do with blank maps."""

    def explain_maps(model, method, pixel_values, targets, **options):  # noqa: ANN001, ANN003, ANN202
        if isinstance(model, tuple):
            key = (model[1], "reinitialised")
        else:
            key = (model, "own" if targets is None else "reference class")
        return table[key], torch.zeros(len(table[key]), dtype=torch.long)

    for module in (scores_module, randomization_module):
        monkeypatch.setattr(module, "explain_maps", explain_maps)
    monkeypatch.setattr(randomization_module, "randomized_copy", lambda model, seed: ("reinitialised", model))
    monkeypatch.setattr(scores_module, "random_parts", lambda *args: None)
    monkeypatch.setattr(scores_module, "faithfulness_parts", lambda *args: None)
    monkeypatch.setattr(scores_module, "aggregate_faithfulness", lambda *args: SimpleNamespace(numbers=lambda: {}))


def test_randomisation_mean_leaves_out_pairs_with_a_blank_map(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_explainer(monkeypatch, {("model", "reinitialised"): maps(B, A, ZERO, MINUS_A)})
    result = randomization("model", "gradcam", torch.zeros(4, 3, 2, 2), maps(A, ZERO, A, A), torch.zeros(4))
    # Images 0 and 3 are compared: (0.8 + -1) / 2. Counting the blank pairs as 0 would give -0.05.
    assert result.numbers() == {
        "rank_correlation_mean": pytest.approx(-0.1),
        "pairs": 2,
        "blank_maps": 1,
        "blank_reinitialised_maps": 1,
        "images": 4,
    }


def test_a_model_whose_maps_are_all_blank_gets_no_score(monkeypatch: pytest.MonkeyPatch) -> None:
    # The review's case: a student whose maps are all blank read randomisation 0 ("passes") and agreement 0.
    fake_explainer(
        monkeypatch,
        {
            ("teacher", "own"): maps(A, B, ZERO),
            ("teacher", "reinitialised"): maps(B, B, A),
            ("teacher", "reference class"): maps(A, B, ZERO),
            ("student", "own"): maps(ZERO, ZERO, ZERO),
            ("student", "reinitialised"): maps(A, ZERO, B),
            ("student", "reference class"): maps(ZERO, ZERO, ZERO),
        },
    )
    pixels = torch.zeros(3, 3, 2, 2)
    predictions = torch.tensor([0, 1, 0])
    images = ScoredImages(
        pixel_values={"teacher": pixels, "student": pixels},
        reference_targets={"teacher": predictions, "student": predictions},
        predictions={"teacher": predictions, "student": predictions},
    )
    scores = score_explanations({"teacher": "teacher", "student": "student"}, images, "gradcam")
    teacher, student = scores.numbers["teacher"]["randomization"], scores.numbers["student"]["randomization"]
    assert teacher["rank_correlation_mean"] == pytest.approx((0.8 + 1.0) / 2)  # image 2's blank map left out
    assert (teacher["pairs"], teacher["blank_maps"], teacher["blank_reinitialised_maps"]) == (2, 1, 0)
    assert math.isnan(student["rank_correlation_mean"])
    assert (student["pairs"], student["blank_maps"], student["blank_reinitialised_maps"]) == (0, 3, 1)
    together = scores.numbers["student"]["agreement"]
    assert math.isnan(together["rank_correlation_mean"]) and math.isnan(together["top10_iou_mean"])
    assert (together["pairs"], together["blank_maps"], together["blank_reference_maps"]) == (0, 3, 1)
    # The histograms get the compared pairs only: here none.
    assert {key: len(values) for key, values in scores.distributions["student"].items()} == {
        "rank_correlation": 0,
        "top_iou": 0,
    }


def teacher_and_student(randomization_numbers: dict, agreement_numbers: dict) -> dict:
    """A teacher and a student with one method's randomisation numbers, the student also with its agreement."""
    randomization = {"gradcam": randomization_numbers}
    return report_of(
        {
            "teacher": model_entry(randomization=randomization),
            "student": model_entry(randomization=randomization, agreement={"gradcam": agreement_numbers}),
        }
    )


def test_report_shows_counts_and_writes_a_mean_over_no_pair_as_null_and_n_a(tmp_path: Path) -> None:
    randomised = {
        "rank_correlation_mean": float("nan"),
        "pairs": 0,
        "blank_maps": 16,
        "blank_reinitialised_maps": 11,
        "images": 16,
    }
    agreed = {
        "rank_correlation_mean": float("nan"),
        "top10_iou_mean": float("nan"),
        "prediction_agreement": 0.25,
        "images": 16,
        "pairs": 0,
        "blank_maps": 16,
        "blank_reference_maps": 6,
    }
    index = write_report(tmp_path, teacher_and_student(randomised, agreed))
    written = json.loads((tmp_path / "metrics.json").read_text())["models"]["student"]
    assert written["randomization"]["gradcam"] == {**randomised, "rank_correlation_mean": None}
    assert written["agreement"]["gradcam"] == {**agreed, "rank_correlation_mean": None, "top10_iou_mean": None}
    lines = index.read_text().splitlines()
    assert "| student | gradcam | n/a | 0 | 16 / 11 |" in lines  # randomisation: mean, pairs, trained / re-init
    assert "| student | gradcam | n/a | n/a | 0.2500 | 0 | 6 / 16 |" in lines  # agreement: ..., reference / model


def test_a_report_written_before_the_counts_still_renders(tmp_path: Path) -> None:
    index = write_report(
        tmp_path,
        teacher_and_student(
            {"rank_correlation_mean": 0.125},
            {"rank_correlation_mean": 0.5, "top10_iou_mean": 0.25, "prediction_agreement": 1.0, "images": 4},
        ),
    )
    lines = index.read_text().splitlines()
    assert "| student | gradcam | 0.1250 | n/a | n/a / n/a |" in lines
    assert "| student | gradcam | 0.5000 | 0.2500 | 1.0000 | n/a | n/a / n/a |" in lines
