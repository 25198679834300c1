"""`python -m explain` (explain.cli) end to end on tiny saved models and generated data: figures, index, bad input."""

from __future__ import annotations

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
from matplotlib.figure import Figure
from medmnist import INFO
from PIL import Image as PILImage

import explain.cli as script
import explain.figures
from explain.registry import METHODS
from pipelines.errors import ConfigError, DataError, OfflineError, UserFacingError
from pipelines.models import build_classifier, load_classifier
from pipelines.preprocess import DevicePreprocess

from helpers.data import make_medmnist_npz
from helpers.models import BREAST_LABELS, PROCESSOR_32, TINY_RESNET, TINY_VIT, save_classifier
from helpers.project import ROOT

pytestmark = pytest.mark.usefixtures("one_thread")  # the models are tiny: one thread is faster


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
        "resnet": save_classifier(root / "resnet", TINY_RESNET),
        "vit": save_classifier(root / "vit", TINY_VIT),
        "three_labels": save_classifier(root / "three", TINY_RESNET, ["a", "b", "c"]),
        "swapped_labels": save_classifier(root / "swapped", TINY_VIT, BREAST_LABELS[::-1]),
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
    assert len(rows) == 4 and {row["true"] for row in rows} == set(BREAST_LABELS)  # both classes shown
    assert all(row["image"].startswith("test[") for row in rows)
    misclassified = index["files"][3]["images"]
    assert 1 <= len(misclassified) <= 4 and index["misclassified"]["of"] == 24
    assert index["misclassified"]["count"] >= len(misclassified)
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
    save = explain.figures.atomic_save_figure

    def keep(figure: Figure, path: Path, **options: object) -> None:
        saved[Path(path).name] = figure
        save(figure, path, **options)

    monkeypatch.setattr(explain.figures, "atomic_save_figure", keep)
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
    with caplog.at_level(logging.WARNING, logger="explain.cli"):
        index = script.main(
            ["--model", setup["resnet"], "--images", *paths, "--n", "3", "--methods", "gradcam", "--out", str(out)]
        )
    assert [row["image"] for row in index["images"]] == paths[:3]
    assert index["inputs"] == "the first 3 of 10 files (--explain_images 3)"
    assert caplog.messages == ["Explaining the first 3 of 10 image files; --explain_images 10 explains them all."]
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
    from explain.figures import short_names

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


def _label_set(multi_hot: np.ndarray, names: list[str]) -> str:
    return ", ".join(name for name, marked in zip(names, multi_hot) if marked) or "none"


def _shortened(label_set: str) -> str:
    """What a figure shows of a label set: two names and how many more."""
    labels = label_set.split(", ")
    return ", ".join(labels[:2]) + (f" +{len(labels) - 2} more" if len(labels) > 2 else "")


def _one_line(text: str) -> str:
    """A caption without the line breaks the figures wrap it with."""
    return " ".join(text.split())


def test_multi_label_dataset(tmp_path: Path, figures: dict) -> None:
    npz = make_medmnist_npz(tmp_path / "data" / "chestmnist.npz", flag="chestmnist", counts=(16, 6, 12))
    names = [INFO["chestmnist"]["label"][str(index)] for index in range(14)]
    torch.manual_seed(0)
    model, processor = build_classifier(TINY_RESNET, names, multi_label=True, image_processor_config=PROCESSOR_32)
    for folder in ("model", "copy"):  # the copy, under another name, for the images-by-models grid
        model.save_pretrained(tmp_path / folder)
        processor.save_pretrained(tmp_path / folder)
    data = ["--dataset_name", "chestmnist", "--data_dir", str(tmp_path / "data"), "--verify_md5", "false"]
    index = script.main(
        ["--model", str(tmp_path / "model"), *data, "--methods", "gradcam,layercam", "--n", "3"]
        + ["--compare_with", str(tmp_path / "copy"), "--misclassified", "true", "--out", str(tmp_path / "out")]
    )
    assert [entry["file"] for entry in index["files"]] == [
        "overlay.png",
        "methods.png",
        "models.png",
        "misclassified.png",
    ]

    # The model's own logits on the test images, without the explain code: predicted = every label with logit > 0.
    model, processor = load_classifier(str(tmp_path / "model"))
    arrays = np.load(npz)
    channels = model.config.num_channels  # grey images shown to the model as RGB, each channel the same
    images = torch.from_numpy(arrays["test_images"])[:, None].expand(-1, channels, -1, -1)
    with torch.no_grad():
        logits = model.eval()(DevicePreprocess(processor, num_channels=channels, augment=False)(images)).logits
    predicted = {f"test[{row}]": _label_set(logits[row] > 0, names) for row in range(len(logits))}
    top = {f"test[{row}]": names[int(logits[row].argmax())] for row in range(len(logits))}
    true = {f"test[{row}]": _label_set(labels, names) for row, labels in enumerate(arrays["test_labels"])}

    rows = index["images"]
    assert [row["image"] for row in rows] == ["test[0]", "test[1]", "test[2]"]
    assert [row["predicted"] for row in rows] == [predicted[row["image"]] for row in rows]
    assert [row["explained"] for row in rows] == [top[row["image"]] for row in rows]  # what the maps explain
    assert [row["true"] for row in rows] == [true[row["image"]] for row in rows]
    for predictions in index["files"][2]["predictions"].values():
        assert predictions == [{key: row[key] for key in ("predicted", "explained", "score")} for row in rows]
    wrong = index["files"][3]["images"]
    assert wrong and index["misclassified"]["count"] >= len(wrong) and index["misclassified"]["of"] == 12
    for entry in wrong:
        assert entry["predicted"] == predicted[entry["image"]] != entry["true"] == true[entry["image"]]
        assert entry["explained"] == top[entry["image"]]

    # Every figure says the same: the predicted set, the label the map explains, and the true set.
    def caption(row: dict) -> str:
        return (
            f"true: {_shortened(row['true'])} pred: {_shortened(row['predicted'])} "
            f"map: {row['explained']} ({row['score']:.2f})"
        )

    for title, row in zip(_titles(figures["overlay.png"], 3), rows):
        assert _one_line(title) == f"{row['image']} {caption(row)}"
    methods_rows = [axis.get_ylabel() for axis in figures["methods.png"].axes[:9:3]]
    assert [_one_line(label) for label in methods_rows] == [f"{row['image']} {caption(row)}" for row in rows]
    for column in (1, 2):
        models_captions = [_one_line(axis.get_xlabel()) for axis in figures["models.png"].axes[column:9:3]]
        assert models_captions == ["pred: " + caption(row).partition(" pred: ")[2] for row in rows]
    misclassified_captions = [
        _one_line(axis.get_xlabel()) for axis in figures["misclassified.png"].axes[: 2 * len(wrong) : 2]
    ]
    assert misclassified_captions == [caption(entry) for entry in wrong]


def test_nothing_misclassified_is_said_in_words_and_indexed_without_a_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture
) -> None:
    make_medmnist_npz(tmp_path / "data" / "breastmnist.npz", counts=(4, 4, 6), test_labels=np.zeros((6, 1), np.uint8))
    torch.manual_seed(0)
    model, processor = build_classifier(TINY_RESNET, BREAST_LABELS, image_processor_config=PROCESSOR_32)
    with torch.no_grad():  # predicts class 0 (malignant) for every image: the label of every test image
        model.classifier[-1].weight.zero_()
        model.classifier[-1].bias.copy_(torch.tensor([5.0, -5.0]))
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    data = ["--dataset_name", "breastmnist", "--data_dir", str(tmp_path / "data"), "--verify_md5", "false"]
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING, logger="explain.figures"):
        index = script.main(
            ["--model", str(tmp_path / "model"), *data, "--methods", "gradcam", "--misclassified", "true"]
            + ["--out", str(out)]
        )
    assert [entry["file"] for entry in index["files"]] == ["overlay.png", "methods.png"]
    assert index["misclassified"] == {"count": 0, "of": 6}
    assert json.loads((out / "index.json").read_text()) == index
    assert not (out / "misclassified.png").exists()
    assert caplog.messages == ["No image of the test split is misclassified: misclassified.png is not drawn."]
    assert "None" not in capsys.readouterr().out


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        (["--methods", "gradcam,sharpcam"], ConfigError, "Unknown explanation method 'sharpcam'"),
        (["--methods", "attention_rollout"], ConfigError, "for this resnet model use one of gradcam, "),
        (["--target_layer", "resnet.encoder.stages.7"], ConfigError, "candidates are resnet.encoder.stages.1"),
        (["--split", "holdout"], ConfigError, "split is 'holdout'; use one of train, validation, test."),
        (["--n", "0"], ConfigError, "explain_images is 0; it must be at least 1."),
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
    with pytest.raises(ConfigError, match="device 'cuda' is not available on this machine; use device cpu."):
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
        [sys.executable, "-m", "explain", *arguments],
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
    # Nothing may precede the error (torchao's import warnings are dropped by pipelines.quiet).
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: 'nobody/no-such-model' is neither a local folder nor in the local Hugging Face")


def test_python_m_explain_help_names_the_maps_options(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_:
        script.main(["--help"])
    printed = capsys.readouterr().out
    assert exit_.value.code == 0
    assert printed.startswith("usage: python -m explain ")
    assert all(option in printed for option in ("--model", "--compare_with", "--save_maps", "--push_to_hub"))
