"""Progress on long work (#29, finding 3): the report's and `python -m explain`'s steps show a bar with images/s on
the main process, none on the others, also where stderr is no terminal (a log), redrawn there only now and then."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import explain.cli
import trainers.report.run
from pipelines.progress import LOG_INTERVAL_S, chunks_with_progress, progress_bar

from helpers.data import make_medmnist_npz
from helpers.models import save_tiny_classifiers
from helpers.project import load_script

report = load_script("report").main
pytestmark = pytest.mark.usefixtures("one_thread")  # the models are tiny: one thread is faster


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("progress")
    make_medmnist_npz(root / "data" / "breastmnist.npz", counts=(8, 6, 11))
    save_tiny_classifiers(root, ("resnet", "vit"))
    return root


def report_arguments(root: Path, out: str) -> list[str]:
    return [
        *("--models", str(root / "resnet"), str(root / "vit"), "--output_dir", str(root / out)),
        *("--dataset_name", "breastmnist", "--data_dir", str(root / "data"), "--verify_md5", "false"),
        *("--device", "cpu"),
        *("--explain_images", "4", "--steps", "3", "--latency_repeats", "2", "--sample_images", "2"),
        *("--corruptions", "gaussian_noise", "--corruption_images", "4", "--corruption_map_images", "2"),
    ]


def final_counts(stderr: str) -> dict[str, str]:
    """Each bar's last state, by name: '11/11 ... img/s' (a bar redraws itself after carriage returns)."""
    states = re.findall(r"([\w ,()-]+): +100%\|[^|]*\| (\d+/\d+ \[[^\]]*img/s\])", stderr)
    return {name.strip(): state for name, state in states}


def test_report_shows_each_step_with_images_per_second_on_the_main_process_only(
    tiny: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    report(report_arguments(tiny, "report"))
    bars = final_counts(capsys.readouterr().err)  # captured: stderr is no terminal here
    for step in ("predictions (resnet)", "predictions (vit)", "latency (vit)", "corruptions", "corrupted maps"):
        assert step in bars, (step, bars)
    assert bars["predictions (vit)"].startswith("11/11 ")  # every test image
    assert bars["explanations and faithfulness"].startswith("4/4 ")

    # Another process of a launched run: it does its share of the same work, silently.
    other = SimpleNamespace(process_index=0, num_processes=1, is_main_process=False, device=torch.device("cpu"))
    monkeypatch.setattr(trainers.report.run, "process_state", lambda cpu=False: other)
    assert report(report_arguments(tiny, "report-other")) == {}
    assert "img/s" not in capsys.readouterr().err


def test_explain_shows_its_maps_and_the_split_prediction(tiny: Path, capsys) -> None:
    explain.cli.main(
        [
            *("--model_name_or_path", str(tiny / "vit"), "--output_dir", str(tiny / "explain")),
            *("--dataset_name", "breastmnist", "--data_dir", str(tiny / "data"), "--verify_md5", "false"),
            *("--explain_images", "2", "--methods", "gradcam,eigencam", "--misclassified", "true", "--device", "cpu"),
        ]
    )
    bars = final_counts(capsys.readouterr().err)
    assert bars["maps (vit)"].startswith("4/4 ")  # 2 images by 2 methods
    assert bars["predictions (vit)"].startswith("11/11 ")  # the split searched for misclassified images


def test_bars_redraw_rarely_where_stderr_is_no_terminal_and_never_off_the_main_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("sys.stderr.isatty", lambda: False, raising=False)
    with progress_bar(10, "x") as bar:
        assert bar.mininterval == LOG_INTERVAL_S and not bar.disable
    monkeypatch.setenv("RANK", "1")  # the second process of a torchrun/accelerate launch
    with progress_bar(10, "x") as bar:
        assert bar.disable
    with progress_bar(10, "x", main_process=True) as bar:
        assert not bar.disable


def test_chunks_with_progress_yields_every_chunk_and_counts_its_images(capsys) -> None:
    chunks = [(0, [0, 1, 2]), (1, [3, 4])]
    assert list(chunks_with_progress(chunks, "x", main_process=True)) == chunks
    assert final_counts(capsys.readouterr().err)["x"].startswith("5/5 ")
