"""Repeating a distillation recipe over seeds: the aggregate table's numbers are the per-seed rows' statistics."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pytest

from pipelines import ConfigError
from trainers.distill_results import seed_summary, seed_summary_markdown

from helpers.distill import distill_config
from helpers.project import load_script

main = load_script("distill").main


def rows(teacher_auc: float, distilled_auc: float, alone_auc: float, agreement: float | None = None) -> list[dict]:
    def row(role: str, auc: float, parameters: int, correlation: float | None = None) -> dict:
        numbers = {
            "role": role,
            "cost": {"parameters": parameters},
            "test_metrics": {"accuracy": auc - 0.1, "auc": auc},
        }
        if correlation is not None:  # a student's agreement with the teacher, as teacher_agreement reports it
            numbers["agreement"] = {"rank_correlation_mean": correlation, "top10_iou_mean": None, "pairs": 0}
        return numbers

    return [
        row("teacher", teacher_auc, 1000),
        row("student (distilled)", distilled_auc, 100, agreement),
        row("student (no teacher)", alone_auc, 100, None if agreement is None else agreement / 2),
    ]


def test_seed_summary_is_mean_sd_and_paired_difference() -> None:
    runs = {0: rows(0.9, 0.80, 0.75, 0.6), 1: rows(0.9, 0.84, 0.80, 0.4), 2: rows(0.9, 0.82, 0.81, 0.5)}
    summary = seed_summary(runs)
    assert summary["seeds"] == [0, 1, 2]
    distilled = summary["roles"]["student (distilled)"]["auc"]
    assert distilled["mean"] == pytest.approx(0.82) and distilled["sd"] == pytest.approx(0.02)
    assert distilled["values"] == [0.80, 0.84, 0.82]
    assert summary["roles"]["teacher"]["auc"]["sd"] == pytest.approx(0.0)
    assert "f1" not in summary["roles"]["teacher"]  # not measured in these rows: not invented
    agreement = summary["roles"]["student (distilled)"]["rank_correlation"]
    assert agreement["mean"] == pytest.approx(0.5) and agreement["sd"] == pytest.approx(0.1)
    assert "rank_correlation" not in summary["roles"]["teacher"]  # the teacher is not compared with itself
    assert "top_iou" not in summary["roles"]["student (distilled)"]  # None (no pair compared) is not a 0
    assert summary["difference"]["rank_correlation"]["mean"] == pytest.approx(0.25)
    gain = summary["difference"]["auc"]
    assert gain["values"] == pytest.approx([0.05, 0.04, 0.01])
    assert gain["mean"] == pytest.approx(0.1 / 3)
    assert gain["sd"] == pytest.approx(statistics.stdev([0.05, 0.04, 0.01]))
    assert gain["standard_error"] == pytest.approx(gain["sd"] / math.sqrt(3))
    markdown = seed_summary_markdown(summary)
    assert "| student (distilled) | 0.000M | 0.7200 ± 0.0200 | 0.8200 ± 0.0200 | 0.5000 ± 0.1000 |" in markdown
    assert "| teacher | 0.001M | 0.8000 ± 0.0000 | 0.9000 ± 0.0000 | n/a |" in markdown
    assert f"| test AUC | +0.0333 | {gain['sd']:.4f} | {gain['standard_error']:.4f} | +0.0500, +0.0400, +0.0100 |" in (
        markdown
    )


def test_a_single_seed_has_no_spread_to_report() -> None:
    summary = seed_summary({7: rows(0.9, 0.8, 0.7)})
    assert math.isnan(summary["roles"]["teacher"]["auc"]["sd"])
    assert "| teacher | 0.001M | 0.8000 | 0.9000 |" in seed_summary_markdown(summary)


def test_distill_over_seeds_writes_each_run_and_their_summary(tmp_path: Path) -> None:
    config = distill_config(tmp_path, max_steps=2, latency_repeats=1)
    result = main([str(config), "--seeds", "[3, 5]"])
    summary = json.loads((tmp_path / "student" / "results.json").read_text())
    assert summary["seeds"] == [3, 5] and set(result["runs"]) == {3, 5}
    for seed in (3, 5):
        run = json.loads((tmp_path / "student" / f"seed-{seed}" / "results.json").read_text())
        assert run["rows"] == summary["runs"][str(seed)]
        assert f"--seed {seed}" in run["command"]
        assert (tmp_path / "baseline" / f"seed-{seed}" / "metrics.json").is_file()
    aucs = [summary["runs"][str(seed)][1]["test_metrics"]["auc"] for seed in (3, 5)]
    assert summary["roles"]["student (distilled)"]["auc"]["mean"] == pytest.approx(sum(aucs) / 2)
    # Different seeds train different students (a seed that was not applied would give equal rows).
    weights = [(tmp_path / "student" / f"seed-{seed}" / "model.safetensors").read_bytes() for seed in (3, 5)]
    assert weights[0] != weights[1]
    assert (
        "Distilled minus no-teacher student, paired by seed (n = 2)"
        in (tmp_path / "student" / "results.md").read_text()
    )


def test_repeated_seeds_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="give each seed once"):
        main([str(distill_config(tmp_path)), "--seeds", "[1, 1]"])
