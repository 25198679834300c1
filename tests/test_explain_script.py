"""scripts/explain.py end to end on tiny saved models and generated data: figures, index, bad input."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import PROCESSOR_32, ROOT, TINY_RESNET, TINY_VIT, make_medmnist_npz
from matplotlib.figure import Figure
from medmnist import INFO
from PIL import Image as PILImage
from test_explain_support import one_thread  # noqa: F401

import explain.workflow
from explain.registry import METHODS
from pipelines.errors import ConfigError, DataError, OfflineError, UserFacingError
from pipelines.models import build_classifier

LABELS = ["malignant", "normal, benign"]  # BreastMNIST's


def _load_script():
    # Loaded under another name: `import explain` must keep meaning the package.
    spec = importlib.util.spec_from_file_location("explain_script", ROOT / "scripts" / "explain.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


script = _load_script()


def _save_model(folder: Path, model_config: dict, labels: list[str] = LABELS) -> str:
    model, processor = build_classifier(model_config, labels, image_processor_config=PROCESSOR_32)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("explain_script")
    # Test labels drawn apart from the images' brightness, so that any model misclassifies some of them.
    test_labels = np.random.default_rng(1).integers(0, 2, (24, 1)).astype(np.uint8)
    make_medmnist_npz(root / "data" / "breastmnist.npz", counts=(20, 8, 24), test_labels=test_labels)
    torch.manual_seed(0)
    return {
        "root": root,
        "data": ["--dataset_name", "breastmnist", "--data_dir", str(root / "data"), "--verify_md5", "false"],
        "resnet": _save_model(root / "resnet", TINY_RESNET),
        "vit": _save_model(root / "vit", TINY_VIT),
        "three_labels": _save_model(root / "three", TINY_RESNET, ["a", "b", "c"]),
        "swapped_labels": _save_model(root / "swapped", TINY_VIT, LABELS[::-1]),
        "missing_folder": str(root / "nowhere"),
        "uncached_hub_id": "nobody/no-such-model",
    }


def test_dataset_run_writes_every_figure_and_the_index(setup: dict, tmp_path: Path) -> None:
    out = tmp_path / "out"
    index = script.main(
        ["--model", setup["resnet"], *setup["data"], "--compare_with", setup["vit"], "--misclassified"]
        + ["--n", "4", "--methods", "gradcam,guided_gradcam,eigencam", "--out", str(out), "--edges", "true"]
    )
    files = [entry["file"] for entry in index["files"]]
    assert files == ["overlay.png", "methods.png", "models.png", "misclassified.png"]
    for name in files:
        with PILImage.open(out / name) as image:
            assert image.format == "PNG" and image.width > 200 and image.height > 100
    assert json.loads((out / "index.json").read_text()) == index
    assert index["methods"] == ["gradcam", "guided_gradcam", "eigencam"]
    assert all(entry["shows"] for entry in index["files"])
    rows = index["images"]
    assert len(rows) == 4 and {row["true"] for row in rows} == set(LABELS)  # both classes shown
    assert all(row["image"].startswith("test[") for row in rows)
    misclassified = index["files"][3]["images"]
    assert 1 <= len(misclassified) <= 4
    assert all(entry["true"] != entry["predicted"] and 0.0 <= entry["score"] <= 1.0 for entry in misclassified)
    predictions = index["files"][2]["predictions"]
    assert list(predictions) == [setup["resnet"], setup["vit"]]
    assert predictions[setup["resnet"]] == [{"predicted": row["predicted"], "score": row["score"]} for row in rows]
    assert index["precision"] == "fp32"
    assert not list(out.glob(".*.tmp"))


@pytest.fixture
def figures(monkeypatch: pytest.MonkeyPatch) -> dict[str, Figure]:
    """Each figure the run saves, by file name, to read its titles and texts."""
    saved: dict[str, Figure] = {}
    save = explain.workflow.atomic_save_figure

    def keep(figure: Figure, path: Path, **options: object) -> None:
        saved[Path(path).name] = figure
        save(figure, path, **options)

    monkeypatch.setattr(explain.workflow, "atomic_save_figure", keep)
    return saved


def _titles(figure: Figure, count: int) -> list[str]:
    return [axis.get_title() for axis in figure.axes[:count]]


def _write_images(paths: list[Path]) -> list[str]:
    rng = np.random.default_rng(0)
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        PILImage.fromarray(rng.integers(0, 256, (20, 20), dtype=np.uint8)).save(path)
    return [str(path) for path in paths]


def test_a_chosen_class_is_explained_for_every_image(setup: dict, tmp_path: Path, figures: dict) -> None:
    index = script.main(
        ["--model", setup["resnet"], *setup["data"], "--methods", "gradcam", "--n", "3", "--target_class", "0"]
        + ["--compare_with", setup["vit"], "--out", str(tmp_path)]
    )
    assert [row["explained"] for row in index["images"]] == ["malignant"] * 3
    assert index["files"][0]["shows"] == "gradcam overlays: each input above its map for the class malignant"
    assert all(entry["explained"] == "malignant" for entry in index["files"][2]["predictions"][setup["vit"]])
    # Each overlay column names its input and true label (the index lists them in the same order).
    for title, row in zip(_titles(figures["overlay.png"], 3), index["images"]):
        assert title.startswith(f"{row['image']}\ntrue: {row['true']}\nmap: malignant (")
    # The teacher-vs-student grid names the class as the overlay does, not by its index.
    assert figures["models.png"].get_suptitle() == "Grad-CAM by model (class malignant; each map scaled to 0-1)"
    assert index["files"][2]["shows"] == (
        "images (rows) by models (columns): Grad-CAM of each model (class malignant), "
        "each map scaled to 0-1, one colour bar"
    )


def test_n_limits_image_files_too(setup: dict, tmp_path: Path, figures: dict, caplog: pytest.LogCaptureFixture) -> None:
    paths = _write_images([tmp_path / f"image{number}.png" for number in range(10)])
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING, logger="explain.workflow"):
        index = script.main(
            ["--model", setup["resnet"], "--images", *paths, "--n", "3", "--methods", "gradcam", "--out", str(out)]
        )
    assert [row["image"] for row in index["images"]] == paths[:3]
    assert index["inputs"] == "the first 3 of 10 files (--n 3)"
    assert caplog.messages == ["Explaining the first 3 of 10 image files; --n 10 explains them all."]
    assert len(figures["overlay.png"].axes) == 2 * 3 + 1  # inputs, overlays, colour bar
    with PILImage.open(out / "overlay.png") as overlay:
        assert overlay.width < 1000  # three columns, not ten


def test_files_with_one_base_name_stay_apart(setup: dict, tmp_path: Path, figures: dict) -> None:
    paths = _write_images([tmp_path / "a" / "x.png", tmp_path / "b" / "x.png"])
    index = script.main(
        ["--model", setup["resnet"], "--images", *paths, "--methods", "gradcam", "--out", str(tmp_path)]
    )
    assert [row["image"] for row in index["images"]] == paths
    assert index["inputs"] == "files"
    for title, row, name in zip(_titles(figures["overlay.png"], 2), index["images"], ["a/x.png", "b/x.png"]):
        assert title.startswith(f"{name}\npred: {row['predicted']} (")
    assert [axis.get_ylabel().split("\n")[0] for axis in figures["methods.png"].axes[:4:2]] == ["a/x.png", "b/x.png"]


def test_short_names_keep_inputs_apart_and_fit_under_a_panel() -> None:
    from explain.workflow import short_names

    assert short_names(["/data/a/x.png", "/data/b/x.png", "c.png"]) == ["a/x.png", "b/x.png", "c.png"]
    assert short_names(["test[0]", "test[12]"]) == ["test[0]", "test[12]"]
    assert short_names(["scans/" + "y" * 30 + ".png"]) == ["…" + "y" * 19 + ".png"]


def test_class_agnostic_maps_are_not_said_to_explain_a_class(setup: dict, tmp_path: Path, figures: dict) -> None:
    from explain.registry import class_agnostic

    assert class_agnostic("eigencam") and class_agnostic("rollout")
    assert not class_agnostic("gradcam") and not class_agnostic("guided_gradcam")
    common = ["--model", setup["resnet"], *setup["data"], "--n", "2", "--target_class", "0"]
    index = script.main([*common, "--methods", "eigencam", "--out", str(tmp_path / "eigen")])
    overlay = index["files"][0]["shows"]
    assert overlay == "eigencam overlays: each input above its class-agnostic map (the same for every class)"
    assert figures["overlay.png"].get_suptitle() == "eigencam on resnet (class-agnostic: the same map for every class)"
    assert all("\ntarget: malignant (" in title for title in _titles(figures["overlay.png"], 2))

    index = script.main([*common, "--methods", "gradcam,eigencam", "--out", str(tmp_path / "both")])
    assert index["files"][0]["shows"] == "gradcam overlays: each input above its map for the class malignant"
    assert index["files"][1]["shows"] == (
        "images (rows) by methods (columns): gradcam, eigencam; maps for the class malignant, "
        "except eigencam (class-agnostic: the same map for every class)"
    )
    assert _titles(figures["methods.png"], 3) == ["input", "gradcam", "eigencam\n(class-agnostic)"]
    assert figures["methods.png"].get_suptitle() == "Methods on resnet (class malignant; class-agnostic columns marked)"


def test_image_files_and_every_fitting_method(setup: dict, tmp_path: Path) -> None:
    colour = tmp_path / "colour.png"
    grey = tmp_path / "grey.jpg"
    PILImage.fromarray(np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(colour)
    PILImage.fromarray(np.full((28, 28), 128, dtype=np.uint8)).save(grey)
    out = tmp_path / "files"
    index = script.main(["--model", setup["vit"], "--images", str(colour), str(grey), "--out", str(out)])
    assert [entry["file"] for entry in index["files"]] == ["overlay.png", "methods.png"]
    assert [row["image"] for row in index["images"]] == [str(colour), str(grey)]  # as given
    assert index["methods"] == list(METHODS)  # 'all' by default, and every method fits a ViT
    assert (out / "index.json").is_file()


def test_multi_label_dataset(tmp_path: Path) -> None:
    make_medmnist_npz(tmp_path / "data" / "chestmnist.npz", flag="chestmnist", counts=(16, 6, 12))
    names = [INFO["chestmnist"]["label"][str(index)] for index in range(14)]
    torch.manual_seed(0)
    model, processor = build_classifier(TINY_RESNET, names, multi_label=True, image_processor_config=PROCESSOR_32)
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    data = ["--dataset_name", "chestmnist", "--data_dir", str(tmp_path / "data"), "--verify_md5", "false"]
    index = script.main(
        ["--model", str(tmp_path / "model"), *data, "--methods", "gradcam,layercam", "--n", "3"]
        + ["--misclassified", "true", "--out", str(tmp_path / "out")]
    )
    assert [entry["file"] for entry in index["files"]] == ["overlay.png", "methods.png", "misclassified.png"]
    assert [row["image"] for row in index["images"]] == ["test[0]", "test[1]", "test[2]"]
    assert all(row["predicted"] in names for row in index["images"])  # the top-scoring label
    wrong = index["files"][2]["images"]
    assert wrong and all(set(entry["true"].split(", ")) <= {*names, "none"} for entry in wrong)


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        (["--methods", "gradcam,sharpcam"], ConfigError, "Unknown explanation method 'sharpcam'"),
        (["--methods", "attention_rollout"], ConfigError, "for this resnet model use one of gradcam, "),
        (["--target_layer", "resnet.encoder.stages.7"], ConfigError, "candidates are resnet.encoder.stages.1"),
        (["--split", "holdout"], ConfigError, "split is 'holdout'; use one of train, validation, test."),
        (["--n", "0"], ConfigError, "n is 0; it must be at least 1."),
        (["--target_class", "2"], DataError, "Class index 2 is out of range: the model has 2 classes (0-1)."),
        (
            ["--device", "gpu"],
            ConfigError,
            "device 'gpu' is not a device torch knows; use cuda (an NVIDIA GPU) or cpu.",
        ),
    ],
)
def test_bad_options_are_refused_with_one_sentence(setup: dict, tmp_path: Path, arguments, error, message) -> None:
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        script.main(["--model", setup["resnet"], *setup["data"], "--out", str(tmp_path), *arguments])


def test_bad_inputs_are_refused_with_one_sentence(setup: dict, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="Nothing to explain: give image files"):
        script.main(["--model", setup["resnet"], "--out", str(tmp_path)])
    with pytest.raises(ConfigError, match="--misclassified needs a labelled dataset split"):
        script.main(["--model", setup["resnet"], "--images", "a.png", "--misclassified", "true"])
    with pytest.raises(DataError, match="Image file .*missing.png does not exist"):
        script.main(["--model", setup["resnet"], "--images", str(tmp_path / "missing.png"), "--out", str(tmp_path)])
    with pytest.raises(DataError, match=r"The model has 3 classes but the dataset has 2 \(malignant, normal, benign\)"):
        script.main(["--model", setup["three_labels"], *setup["data"], "--out", str(tmp_path)])
    with pytest.raises(DataError, match="Model folder .*nowhere does not exist"):
        script.main(["--model", str(tmp_path / "nowhere"), *setup["data"], "--out", str(tmp_path)])
    with pytest.raises(OfflineError, match="is neither a local folder nor in the local Hugging Face cache"):
        script.main(["--model", "nobody/no-such-model", *setup["data"], "--out", str(tmp_path)])


def test_cuda_on_a_machine_without_it_is_one_sentence(
    setup: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="device 'cuda' is not available on this machine; use --device cpu."):
        script.main(["--model", setup["resnet"], *setup["data"], "--device", "cuda", "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("second", "error", "message"),
    [
        ("missing_folder", DataError, "Model folder .*nowhere does not exist"),
        ("uncached_hub_id", OfflineError, "is neither a local folder nor in the local Hugging Face cache"),
        ("swapped_labels", ConfigError, r"swapped has labels \['normal, benign', 'malignant'\] but resnet has"),
        ("three_labels", ConfigError, r"three has labels \['a', 'b', 'c'\] but resnet has .*same labels"),
    ],
)
def test_a_bad_second_model_is_refused_before_any_figure_is_written(
    setup: dict, tmp_path: Path, second: str, error: type, message: str
) -> None:
    out = tmp_path / "out"
    with pytest.raises(error, match=message):
        script.main(["--model", setup["resnet"], *setup["data"], "--compare_with", setup[second], "--out", str(out)])
    assert not out.exists()


def test_an_output_path_that_is_a_file_is_one_sentence(setup: dict, tmp_path: Path) -> None:
    taken = tmp_path / "taken.png"
    taken.write_bytes(b"not a folder")
    with pytest.raises(
        UserFacingError, match=f"Output folder {re.escape(str(taken))} is an existing file; give a folder path"
    ):
        script.main(["--model", setup["resnet"], *setup["data"], "--methods", "gradcam", "--out", str(taken)])
    assert taken.read_bytes() == b"not a folder"


def _run(*arguments: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "scripts/explain.py", *arguments],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
def test_script_runs_as_a_command(setup: dict, tmp_path: Path) -> None:
    result = _run("--model", setup["resnet"], *setup["data"], "--methods", "gradcam", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "overlay.png: gradcam overlays" in result.stdout
    assert (tmp_path / "overlay.png").is_file() and (tmp_path / "index.json").is_file()


@pytest.mark.slow
def test_uncached_checkpoint_offline_ends_in_one_sentence(setup: dict, tmp_path: Path) -> None:
    result = _run("--model", "nobody/no-such-model", *setup["data"], "--out", str(tmp_path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: 'nobody/no-such-model' is neither a local folder nor in the local Hugging Face")
