"""Latency figures: the median of the timed repeats with their quartiles, warm-up left out."""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pytest
import torch

import trainers.report.cost as model_cost
from trainers.report.cost import batch_timings, latency_text, measure_cost, per_image_ms


class ScriptedModel(torch.nn.Module):
    """Each forward pass advances a fake clock by the next of `durations` (seconds), whatever the batch size."""

    def __init__(self, durations: list[float]) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(5))
        self.config = types.SimpleNamespace(num_channels=3)
        self.durations = list(durations)
        self.now = 0.0

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        assert pixel_values.shape[1:] == (3, 8, 8)
        self.now += self.durations.pop(0)
        return pixel_values


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch):
    def make(durations: list[float]) -> ScriptedModel:
        model = ScriptedModel(durations)
        monkeypatch.setattr(model_cost.time, "perf_counter", lambda: model.now)
        return model

    return make


def test_per_image_ms_is_the_median_and_quartiles_over_the_batch_size() -> None:
    timings = [0.010, 0.040, 0.020, 0.100, 0.030]
    median, (lower, upper) = per_image_ms(timings, 4)
    assert median == pytest.approx(np.median(timings) * 1000 / 4)
    assert lower == pytest.approx(np.percentile(timings, 25) * 1000 / 4)  # 20 ms / 4
    assert upper == pytest.approx(np.percentile(timings, 75) * 1000 / 4)  # 40 ms / 4
    assert per_image_ms([0.002], 1) == (pytest.approx(2.0), [pytest.approx(2.0), pytest.approx(2.0)])


def test_batch_timings_leave_out_the_warm_up(scripted) -> None:
    model = scripted([9.0, 8.0, 0.1, 0.3, 0.2])
    timings = batch_timings(model, (3, 8, 8), 2, torch.device("cpu"), warmup=2, repeats=3)
    assert timings == pytest.approx([0.1, 0.3, 0.2])


def test_measure_cost_reports_medians_quartiles_and_throughput_of_the_timed_passes(tmp_path: Path, scripted) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"x" * 123)
    single = [0.004, 0.002, 0.003, 0.005, 0.001]  # batch 1, after 3 warm-up passes
    large = [0.64, 1.28, 0.32]  # batch 64: max(3, repeats // 4) passes after 3 warm-up passes
    model = scripted([1.0] * 3 + single + [1.0] * 3 + large)
    cost = measure_cost(model, tmp_path, (8, 8), torch.device("cpu"), repeats=5, large_batch=64)
    assert cost.parameters == 5 and cost.size_on_disk_bytes == 123
    assert cost.latency_ms_batch_1 == pytest.approx(3.0)
    assert cost.latency_ms_batch_1_quartiles == pytest.approx([2.0, 4.0])
    assert cost.latency_ms_batch_64 == pytest.approx(640 / 64)
    assert cost.latency_ms_batch_64_quartiles == pytest.approx([np.percentile(large, 25) * 1000 / 64, 960 / 64])
    assert cost.throughput_images_per_s == pytest.approx(64 / 0.64)
    assert model.durations == []  # every scripted pass was run, none more


def test_one_repeat_runs_one_warm_up_and_one_timed_pass_per_batch_size(tmp_path: Path, scripted) -> None:
    (tmp_path / "model.safetensors").write_bytes(b"x")
    model = scripted([1.0, 0.002, 1.0, 0.64])  # warm-up, timed (batch 1); warm-up, timed (batch 64)
    cost = measure_cost(model, tmp_path, (8, 8), torch.device("cpu"), repeats=1, large_batch=64)
    assert cost.latency_ms_batch_1 == pytest.approx(2.0)
    assert cost.latency_ms_batch_64 == pytest.approx(10.0)
    assert cost.latency_ms_batch_64_quartiles == pytest.approx([10.0, 10.0])
    assert model.durations == []  # no pass more than asked for


def test_latency_text_shows_the_median_then_the_quartiles() -> None:
    assert latency_text(0.5234, [0.5012, 0.5519], 2) == "0.52 (0.50–0.55)"
    assert latency_text(1.0, [0.95, 1.25], 3) == "1.000 (0.950–1.250)"
