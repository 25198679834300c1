"""The Grad-CAM benchmark runs, measures every path, and the paths compute the same maps."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from trainers.benchmark.attention import AttentionBenchmark, attention_ratio_lines, benchmark_attention
from trainers.benchmark.gradcam import GradCAMBenchmark, benchmark_gradcam, ratio_lines

from helpers.project import ROOT

pytestmark = pytest.mark.usefixtures("one_thread")  # the models are tiny: one thread is faster


def test_every_path_is_timed_and_agrees() -> None:
    pytest.importorskip("pytorch_grad_cam")
    settings = GradCAMBenchmark(
        model="deit-tiny", image_size=32, batch_size=2, batches=1, repeats=1, warmup=0, bf16=True, cpu=True
    )
    rows, agreement = benchmark_gradcam(settings)
    assert [row.key for row in rows] == [
        "project-bf16",
        "project-fp32",
        "captum",
        "pytorch-grad-cam",
        "forward-bf16",
        "forward-fp32",
    ]
    assert all(row.maps_per_second > 0 and row.peak_memory_mib is None for row in rows)  # no memory figure on CPU
    assert all(row.best_maps_per_second >= row.maps_per_second for row in rows)
    assert agreement["max |project fp32 - Captum|"] < 1e-5
    assert agreement["correlation(project fp32, pytorch-grad-cam)"] > 0.99
    assert agreement["correlation(project bf16, project fp32)"] > 0.9
    lines = ratio_lines(rows)
    assert lines[0].startswith("project-bf16 / Captum fp32: ") and "(GPU goal >= 8x)" in lines[0]
    assert any(line.startswith("project-fp32 / Captum fp32: ") for line in lines)


@pytest.mark.slow
def test_benchmark_script_prints_the_table() -> None:
    pytest.importorskip("pytorch_grad_cam")
    result = subprocess.run(
        [sys.executable, "scripts/benchmark.py", "explain", "--model", "deit-tiny", "--image_size", "32"]
        + ["--batch_size", "2", "--batches", "1", "--repeats", "1", "--warmup", "0", "--cpu"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| Captum LayerGradCam on a token-reshaping tap, fp32 |" in result.stdout
    assert "| pytorch-grad-cam 1.5 GradCAM with reshape_transform, fp32 |" in result.stdout
    assert "project-fp32 / Captum fp32: " in result.stdout
    assert torch.cuda.is_available() or "peak memory per batch (n/a on CPU)" in result.stdout


def test_attention_benchmark_times_every_method_and_states_the_ratios() -> None:
    settings = AttentionBenchmark(
        model="deit-tiny", image_size=32, batch_size=2, batches=1, repeats=1, warmup=0, bf16=True, cpu=True
    )
    rows = benchmark_attention(settings)
    methods = ("gradient_rollout", "legrad", "gradcam", "attention_rollout", "forward")
    assert [row.key for row in rows] == [f"{name}-{precision}" for precision in ("fp32", "bf16") for name in methods]
    assert all(row.maps_per_second > 0 and row.best_maps_per_second >= row.maps_per_second for row in rows)
    lines = attention_ratio_lines(rows)
    assert len(lines) == 4 and lines[0].startswith("gradient_rollout fp32: ") and "x Grad-CAM's rate, " in lines[0]
    rate = {row.key: row.maps_per_second for row in rows}
    assert f"{rate['legrad-bf16'] / rate['gradcam-bf16']:.2f}x" in lines[3]
