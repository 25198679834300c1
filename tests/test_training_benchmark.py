"""`scripts/benchmark.py train`, `distill` and `faithfulness` time every path they name and print consistent ratios."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import ViTImageProcessor

import trainers.benchmark.corruptions as corruptions_benchmark
import trainers.benchmark.faithfulness as faithfulness_benchmark
from pipelines import run_cli
from pipelines.config import parse_flags
from pipelines.errors import ConfigError
from pipelines.preprocess import DevicePreprocess
from trainers.benchmark.corruptions import CorruptionBenchmark
from trainers.benchmark.distillation import DistillationBenchmark, benchmark_distillation
from trainers.benchmark.faithfulness import FaithfulnessBenchmark, benchmark_faithfulness
from trainers.benchmark.models import NUM_LABELS, synthetic_images
from trainers.benchmark.training import ThroughputRow, TrainingBenchmark, benchmark_training, usual_transform

from helpers.project import ROOT, load_script

pytestmark = pytest.mark.usefixtures("one_thread")  # the models are tiny: one thread is faster

TINY = {"image_size": 32, "source_size": 28, "batch_size": 2, "steps": 3, "warmup": 1, "cpu": True}


def table_rows(stdout: str) -> list[tuple[str, float, float]]:
    """(path, images/s, speed-up) from the printed markdown table."""
    rows = re.findall(r"^\| (.+?) \| ([\d,.]+) \| ([\d.]+)x \|$", stdout, flags=re.MULTILINE)
    return [(path, float(rate.replace(",", "")), float(ratio)) for path, rate, ratio in rows]


def fits_printed_rates(ratio: float, numerator: float, denominator: float) -> bool:
    """Whether a ratio printed to 2 decimals is the quotient of two rates printed to 1 decimal (each off by up to
    0.05): on a busy machine the rates are small, and their rounding alone moves the quotient by more than 0.01."""
    low = (numerator - 0.05) / (denominator + 0.05)
    high = (numerator + 0.05) / max(denominator - 0.05, 1e-9)
    return low - 0.005 <= ratio <= high + 0.005


def test_training_paths_are_each_timed_over_the_same_steps() -> None:
    rows = benchmark_training(TrainingBenchmark(model="vit-micro", **TINY))
    assert [row.path.split(":")[0].split(" (")[0] for row in rows] == ["this project", "usual", "reference"]
    assert all(row.steps == 2 and row.seconds > 0 for row in rows)
    assert all(row.images_per_second == pytest.approx(2 * 2 / row.seconds) for row in rows)


def test_warmup_must_leave_timed_steps() -> None:
    with pytest.raises(ConfigError, match="warmup"):
        TrainingBenchmark(model="vit-micro", **{**TINY, "warmup": 3})
    with pytest.raises(ConfigError, match="warmup"):
        DistillationBenchmark(teacher="vit-micro", student="vit-micro", **{**TINY, "warmup": 3})


def test_usual_path_feeds_the_model_what_the_project_path_does() -> None:
    # A fair comparison: both paths turn the same uint8 images into the same pixel_values (before augmentation).
    processor = ViTImageProcessor(size={"height": 32, "width": 32})
    images, labels = synthetic_images(3, 28)
    usual = usual_transform(processor)({"image": [Image.fromarray(image) for image in images], "label": list(labels)})
    ours = DevicePreprocess(processor, augment=False)(torch.from_numpy(images).permute(0, 3, 1, 2))
    # The same torchvision-backed processor either way: from PIL images in the loader, or uint8 tensors here.
    torch.testing.assert_close(usual["pixel_values"], ours)
    assert usual["labels"].tolist() == labels.tolist() and int(np.max(labels)) < NUM_LABELS


def test_distillation_rows_share_the_student_and_the_steps() -> None:
    rows = benchmark_distillation(DistillationBenchmark(teacher="vit-micro", student="vit-micro", **TINY))
    assert [row.path for row in rows] == [
        "student fine-tuning alone",
        "distillation, teacher logits cached",
        "distillation, teacher run on every batch",
        "distillation + explanation term, teacher logits and maps cached",
        "distillation + explanation term, teacher run on every batch",
    ]
    assert all(row.steps == 2 and row.seconds > 0 for row in rows)


def test_distill_command_prints_the_explanation_terms_ratio_from_its_own_rows(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    # The rows' order is benchmark_distillation's (checked above); here the printed ratios must be theirs.
    benchmark = load_script("benchmark")
    seconds = [1.0, 1.2, 1.5, 1.74, 2.55]
    paths = ["alone", "cached", "every batch", "term, cached", "term, every batch"]
    rows = [ThroughputRow(path, 2 / time, time, 2) for path, time in zip(paths, seconds)]
    received = []
    monkeypatch.setattr(benchmark, "benchmark_distillation", lambda settings: received.append(settings) or rows)
    benchmark.main(
        ["distill", "--teacher", "vit-micro", "--student", "vit-micro", "--image_size", "32"]
        + ["--batch_size", "2", "--steps", "3", "--warmup", "1", "--cpu", "--student_image_size", "16"]
    )
    printed = capsys.readouterr().out
    assert "term over the plain distillation step: 1.45x with the teacher's logits and maps cached, 1.70x" in printed
    # The student's own input size reaches the benchmark.
    assert received == [
        DistillationBenchmark(teacher="vit-micro", student="vit-micro", student_image_size=16, **{**TINY, "steps": 3})
    ]
    assert "at 32 px (student 16 px)" in printed


def test_faithfulness_times_curves_against_twice_k_forward_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    # Count the images each timed path pushes through the model: the comparison is only fair if the curves make
    # K + 1 steps of deletion and of insertion over every image, and the reference 2 K plain passes.
    seen: dict[str, list[int]] = {}
    build_model, interleaved_spans = faithfulness_benchmark.build_model, faithfulness_benchmark.interleaved_spans

    def counted_model(*args, **kwargs):
        model = build_model(*args, **kwargs)
        model.register_forward_pre_hook(
            lambda _, inputs, kw: counter.append(kw["pixel_values"].shape[0]), with_kwargs=True
        )
        return model

    def counted_runs(runs, *args):
        def counted(key, run):
            def wrapped():
                counter.clear()
                run()
                seen.setdefault(key, []).append(sum(counter))

            return wrapped

        return interleaved_spans({key: counted(key, run) for key, run in runs.items()}, *args)

    counter: list[int] = []
    monkeypatch.setattr(faithfulness_benchmark, "build_model", counted_model)
    monkeypatch.setattr(faithfulness_benchmark, "interleaved_spans", counted_runs)
    images, steps = 4, 3
    settings = FaithfulnessBenchmark(
        model="deit-tiny", image_size=32, images=images, steps=steps, batch_size=2, repeats=2, warmup=1, cpu=True
    )
    timing = benchmark_faithfulness(settings)
    assert (timing.images, timing.steps) == (images, steps)
    assert timing.curves_seconds > 0 and timing.forwards_seconds > 0
    assert seen == {"curves": [2 * (steps + 1) * images] * 3, "forwards": [2 * steps * images] * 3}  # warm-up + 2


@pytest.mark.slow
def test_benchmark_train_prints_each_path_and_the_ratios_of_one_run() -> None:
    result = subprocess.run(
        [sys.executable, "scripts/benchmark.py", "train", "--model", "vit-micro", "--image_size", "32"]
        + ["--batch_size", "2", "--steps", "3", "--warmup", "1", "--cpu"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rows = table_rows(result.stdout)
    assert [path.split(" (")[0].split(":")[0] for path, _, _ in rows] == ["this project", "usual", "reference"]
    project_rate = rows[0][1]
    for _, rate, ratio in rows:
        assert fits_printed_rates(ratio, project_rate, rate)  # the ratio column is from the same run
    bare_over_usual = float(re.search(r"The bare loop runs at ([\d.]+)x", result.stdout).group(1))
    assert fits_printed_rates(bare_over_usual, rows[2][1], rows[1][1])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (
            ["train", "--steps", "3", "--warmup", "3"],
            "--warmup (3) must be smaller than --steps (3), or nothing is timed.",
        ),
        (["train", "--batch_size", "0"], "--batch_size is 0; it must be at least 1."),
        (["train", "--batch-size", "0"], "--batch_size is 0; it must be at least 1."),  # dashes read as underscores
        (["distill", "--student_image_size", "0"], "--student_image_size is 0; it must be at least 1."),
        (["faithfulness", "--road_image_size", "8"], "--road_image_size is 8; it must be at least 16."),
        (["shrink", "--ratio", "1"], "--ratio is 1.0; it must lie strictly between 0 and 1."),  # always on the CPU
        (["distill", "--warmup", "-1"], "--warmup is -1; it must be 0 or more."),
        (["explain", "--model", "vit-huge"], "--model is 'vit-huge'; use one of vit-base, deit-tiny."),
        (
            ["trian"],
            "Unknown benchmark 'trian'; choose one of train, distill, explain, attention, faithfulness, maps, shrink, "
            "corruptions.",
        ),
        (["maps", "--batch_sise", "2"], "Unknown option --batch_sise (did you mean --batch_size?); --help lists"),
        (["corruptions", "--image_size", "16"], "--image_size is 16; it must be at least 32."),
        (["corruptions", "--severity", "6"], "--severity is 6; it must lie in 1-5."),
        (["corruptions", "--families", "fog,pixelate"], "--families has fog; choose among gaussian_noise, shot_noise"),
    ],
)
def test_bad_benchmark_options_end_in_one_line(options: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    benchmark = load_script("benchmark")
    with pytest.raises(SystemExit) as exit_:
        run_cli(lambda: benchmark.main(options if options[0] == "shrink" else [*options, "--cpu"]))
    error = capsys.readouterr().err
    assert exit_.value.code == 2 and error.count("\n") == 1
    assert error.startswith(f"error: {message}")


def test_the_benchmark_names_its_commands_when_given_none(capsys: pytest.CaptureFixture) -> None:
    benchmark = load_script("benchmark")
    with pytest.raises(SystemExit) as exit_:
        run_cli(lambda: benchmark.main([]))
    assert exit_.value.code == 2
    assert capsys.readouterr().err == (
        "error: Name a benchmark: train, distill, explain, attention, faithfulness, maps, shrink or corruptions (--help "
        "describes them).\n"
    )
    benchmark.main(["--help"])
    assert "python scripts/benchmark.py train" in capsys.readouterr().out


def test_the_benchmark_spells_its_options_as_every_script_does() -> None:
    benchmark = load_script("benchmark")
    (dashed,) = parse_flags((TrainingBenchmark,), ["--batch-size", "4", "--image-size", "32"])
    (underscored,) = parse_flags((TrainingBenchmark,), ["--batch_size", "4", "--image_size", "32"])
    assert dashed == underscored == TrainingBenchmark(batch_size=4, image_size=32)
    assert set(benchmark.COMMANDS) == {
        "train",
        "distill",
        "explain",
        "attention",
        "faithfulness",
        "maps",
        "shrink",
        "corruptions",
    }


def test_the_corruptions_benchmark_times_both_sides_on_the_same_families(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    # imagecorruptions' side stood in for by a worker that reports fixed times: the rows, rates and ratios printed
    # must be the ones those times and this side's make, family by family.
    asked: list[tuple[str, int]] = []

    class Worker:
        def __init__(self, python: str, images: Path, threads: int) -> None:
            assert np.load(images).shape == (3, 32, 32, 3)  # the same images, as uint8 (N, H, W, 3)

        def seconds(self, family: str, severity: int) -> float:
            asked.append((family, severity))
            return 0.3  # 3 images in 0.3 s: 10 images/s

        def close(self) -> None:
            pass

    monkeypatch.setattr(corruptions_benchmark, "ReferenceWorker", Worker)
    settings = CorruptionBenchmark(
        images=3, image_size=32, families="pixelate,brightness_up", repeats=2, warmup=1, cpu=True, reference_python="x"
    )
    rows = corruptions_benchmark.benchmark_corruptions(settings)
    assert asked == [("pixelate", 3), ("brightness", 3)] * 3  # interleaved: warm-up round, then 2 timed rounds
    assert [row.family for row in rows] == ["pixelate", "brightness_up"] and all(row.reference == 10 for row in rows)
    assert all(row.ours > 0 and row.ratio == row.ours / 10 for row in rows)
    benchmark = load_script("benchmark")
    monkeypatch.setattr(benchmark, "benchmark_corruptions", lambda settings: rows)
    benchmark.main(["corruptions", "--images", "3", "--image_size", "32", "--cpu", "--reference_python", "x"])
    printed = capsys.readouterr().out
    ours, reference = corruptions_benchmark.overall_rates(rows)
    assert f"| pixelate | 0.4 | {rows[0].ours:,.1f} | 10.0 | {rows[0].ratio:.1f}x |" in printed
    assert "| brightness_up (brightness) | 1.3 |" in printed  # DermaMNIST's severity 3
    assert f"{ours:,.1f} images/s here, {reference:,.1f} with imagecorruptions: {ours / reference:.1f}x" in printed


def test_a_python_without_imagecorruptions_is_one_sentence() -> None:
    settings = CorruptionBenchmark(
        images=1, image_size=32, families="pixelate", cpu=True, reference_python=sys.executable
    )
    with pytest.raises(
        ConfigError, match=r"imagecorruptions could not be run by .*: ModuleNotFoundError: No module named"
    ):
        corruptions_benchmark.benchmark_corruptions(settings)


@pytest.mark.skipif(
    not (corruptions_benchmark.REFERENCE_VENV / "bin" / "python").exists(),
    reason="no .venv-imagecorruptions (make imagecorruptions-env)",
)
def test_imagecorruptions_runs_in_its_own_environment() -> None:
    settings = CorruptionBenchmark(
        images=2, image_size=32, families="pixelate,gaussian_blur", repeats=1, warmup=0, cpu=True
    )
    rows = corruptions_benchmark.benchmark_corruptions(settings)
    assert [row.reference_family for row in rows] == [
        "pixelate",
        "gaussian_blur",
    ]  # its removed skimage argument mapped
    assert all(row.ours > 0 and row.reference > 0 for row in rows)
