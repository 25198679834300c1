"""Partial outputs are marked (#29, finding 3): a report or `python -m explain --out` that dies part-way leaves a
PARTIAL file in its folder beside the figures it wrote (and no index); the next run removes it when it is done."""

from __future__ import annotations

from pathlib import Path

import pytest

import explain.cli
import explain.figures
import trainers.report.run
from pipelines.io import PARTIAL_NAME

from helpers.data import make_medmnist_npz
from helpers.models import save_tiny_classifiers
from helpers.project import load_script

report = load_script("report").main
pytestmark = pytest.mark.usefixtures("one_thread")  # the models are tiny: one thread is faster


class Killed(Exception):
    """Stands for the run dying part-way (Ctrl-C, an out-of-memory kill, a bug)."""


def die(*args: object, **kwargs: object) -> None:
    raise Killed


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("partial")
    make_medmnist_npz(root / "data" / "breastmnist.npz", counts=(8, 6, 11))
    save_tiny_classifiers(root, ("resnet", "vit"))
    return root


def data(root: Path) -> list[str]:
    return ["--dataset_name", "breastmnist", "--data_dir", str(root / "data"), "--verify_md5", "false"]


def test_a_report_that_dies_part_way_is_marked_and_a_rerun_finishes_it(
    tiny: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tiny / "report"
    arguments = [
        *("--models", str(tiny / "resnet"), str(tiny / "vit"), "--output_dir", str(out), *data(tiny)),
        *("--device", "cpu"),
        *("--explain_images", "4", "--steps", "3", "--latency_repeats", "2", "--sample_images", "2"),
    ]
    with monkeypatch.context() as patch:
        patch.setattr(trainers.report.run, "method_figures", die)  # after the classification figures
        with pytest.raises(Killed):
            report(arguments)
    assert (out / "roc.png").is_file() and (out / "probabilities.png").is_file()  # the dead run's figures ...
    assert not (out / "index.md").exists() and not (out / "metrics.json").exists()  # ... with no index ...
    assert (out / PARTIAL_NAME).read_text().startswith("Incomplete: `")  # ... and marked, naming the command

    report(arguments)
    assert (out / "index.md").is_file() and not (out / PARTIAL_NAME).exists()


def test_explain_that_dies_part_way_is_marked_and_a_rerun_finishes_it(
    tiny: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tiny / "explain"
    arguments = [
        *("--model_name_or_path", str(tiny / "resnet"), "--compare_with", str(tiny / "vit"), *data(tiny)),
        *("--explain_images", "2", "--methods", "gradcam", "--output_dir", str(out), "--device", "cpu"),
    ]
    with monkeypatch.context() as patch:
        patch.setattr(explain.figures.Figures, "models", die)  # after overlay.png and methods.png
        with pytest.raises(Killed):
            explain.cli.main(arguments)
    assert (out / "overlay.png").is_file() and (out / "methods.png").is_file()
    assert (out / PARTIAL_NAME).is_file() and not (out / "index.json").exists()

    index = explain.cli.main(arguments)
    assert [entry["file"] for entry in index["files"]] == ["overlay.png", "methods.png", "models.png"]
    assert (out / "index.json").is_file() and not (out / PARTIAL_NAME).exists()
