"""scripts/report.py at scale: `--explain_images all` on one process and on two (`accelerate launch`, CPU) gives the
same metrics.json (the robustness numbers of the corrupted images included); an image's random maps and ROAD noise are its own, whatever batch it is scored in; and with
`--maps` (made by `python -m explain --save_maps`) the report reads the maps instead of computing them."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import explain.cli
from explain.metrics.faithfulness import Faithfulness, FaithfulnessParts, FaithfulnessSettings, faithfulness_parts
from explain.metrics.masking import random_maps
from explain.metrics.scores import maps_at_class
from explain.metrics.statistics import paired_mask
from explain.registry import explain_maps
from pipelines.models import build_classifier

from helpers import faults
from helpers.data import make_medmnist_npz
from helpers.explain_models import CheckerRegion, checker_images
from helpers.models import BREAST_LABELS, PROCESSOR_28, TINY_RESNET, save_tiny_classifiers
from helpers.project import load_script

TEST_IMAGES, BATCH = 11, 4  # chunks of 4, 4 and 3 images: two processes take chunks (0, 2) and (1,)

report = load_script("report").main


pytestmark = pytest.mark.usefixtures("one_thread")  # see the one_thread fixture in conftest.py


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("report_scale")
    make_medmnist_npz(root / "data" / "breastmnist.npz", counts=(4, 4, TEST_IMAGES))
    models = list(save_tiny_classifiers(root, ("teacher", "student")).values())
    data = ["--dataset_name", "breastmnist", "--data_dir", str(root / "data"), "--verify_md5", "false"]
    arguments = [
        *("--models", *models, *data, "--split", "test", "--methods", "gradcam", "--explain_images", "all"),
        *("--steps", "3", "--random_maps", "2", "--random_steps", "2", "--paired_images", "6"),
        *("--road_fractions", "0.5", "--latency_repeats", "1", "--sample_images", "2", "--device", "cpu"),
        *("--batch_size", str(BATCH)),
    ]
    torch.set_num_threads(1)
    maps_arguments = ["--model", models[0], "--compare_with", models[1], "--methods", "gradcam", *data]
    maps_arguments += ["--split", "test", "--batch_size", str(BATCH), "--device", "cpu"]
    explain.cli.main([*maps_arguments, "--save_maps", str(root / "maps")])
    one = report([*arguments, "--out", str(root / "one")])
    return {"root": root, "arguments": arguments, "one": one}


def measured(folder: Path) -> dict:
    """metrics.json without what may differ between runs of the same numbers: timings, the command, processes."""
    written = json.loads((folder / "metrics.json").read_text())
    for key in ("command", "processes", "seconds"):
        written.pop(key)
    for model in written["models"].values():
        model.pop("cost")
    return written


def launch(arguments: list[str], processes: int) -> list[str]:
    """`accelerate launch` of scripts/report.py on `processes` CPU processes."""
    accelerate = str(Path(sys.executable).with_name("accelerate"))
    command = [accelerate, "launch", "--multi_gpu", "--num_processes", str(processes), "--num_machines", "1"]
    command += ["--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(faults.free_port())]
    return [*command, str(faults.SCRIPTS / "report.py"), *arguments]


@pytest.mark.slow
def test_two_processes_write_the_same_numbers_as_one_over_the_whole_split(setup: dict, tmp_path: Path) -> None:
    out = tmp_path / "two"
    log = tmp_path / "two.log"
    result = faults.run(launch([*setup["arguments"], "--out", str(out)], 2), log, faults.environment(OMP_NUM_THREADS=1))
    assert result.returncode == 0, result.stdout[-3000:]
    assert result.stdout.count("Report: ") == 1  # the main process writes, once
    two, one = measured(out), measured(setup["root"] / "one")
    assert json.loads((out / "metrics.json").read_text())["processes"] == 2 and setup["one"]["processes"] == 1
    assert two["explained_images"] == two["images"] == TEST_IMAGES
    for name in ("teacher", "student"):
        faithful = two["models"][name]["faithfulness"]["gradcam"]
        assert faithful["images"] == TEST_IMAGES and faithful["paired_images"] == 6
        assert two["models"][name]["randomization"]["gradcam"]["images"] == TEST_IMAGES
    assert two["models"]["student"]["agreement"]["gradcam"]["images"] == TEST_IMAGES
    # The corrupted images too: every image of the split, under every corruption, predicted by both models.
    assert two["corruptions"]["images"] == TEST_IMAGES and two["corruptions"]["names"]
    assert set(two["models"]["student"]["robustness"]["errors"]) == set(two["corruptions"]["names"])
    # Every chunk is computed alike on either run, so the numbers are equal to the bit, not only close.
    assert two == one


def test_an_image_gets_its_random_maps_and_numbers_alone_or_in_a_batch() -> None:
    images, truthful = checker_images(count=5)
    targets = torch.zeros(5, dtype=torch.long)
    rows = [40, 41, 42, 43, 44]  # the images' rows in their split
    batch = random_maps(truthful, seed=3, rows=rows)
    assert torch.equal(random_maps(truthful[2:3], seed=3, rows=[42])[0], batch[2])
    assert not torch.equal(batch[0], batch[1])  # each image its own draw
    assert not torch.equal(random_maps(truthful[2:3], seed=3, rows=[41])[0], batch[2])  # seeded by the row

    settings = FaithfulnessSettings(
        random_maps=3, random_steps=4, paired_images=None, road_fractions=(0.3, 0.6), steps=4, seed=3
    )
    together = faithfulness_parts(CheckerRegion(), images, truthful, targets, settings, rows=rows)
    alone = faithfulness_parts(CheckerRegion(), images[2:3], truthful[2:3], targets[2:3], settings, rows=[42])
    close = lambda a, b, tolerance=1e-6: torch.testing.assert_close(a[2:3], b, atol=tolerance, rtol=0)  # noqa: E731
    close(together.curves.deletion, alone.curves.deletion)
    close(together.baseline.deletion, alone.baseline.deletion)
    close(together.baseline.insertion, alone.baseline.insertion)
    for draw in range(3):
        close(together.random[draw].lerf_deletion, alone.random[draw].lerf_deletion)
        # ROAD's conjugate gradients stop when every system of a batch is solved: filled pixels agree to ~1e-4.
        close(together.random_road[draw].morf, alone.random_road[draw].morf, 1e-3)
    (maps_together, random_together), (maps_alone, random_alone) = together.measures(), alone.measures()
    for name, values in random_alone.items():
        np.testing.assert_allclose(random_together[name][:, 2:3], values, atol=1e-3)
        np.testing.assert_allclose(maps_together[name][2:3], maps_alone[name], atol=1e-3)
    # Drawn from the batch's one generator, image 2's random map would change with the images before it; with
    # other rows its random baseline changes.
    other = faithfulness_parts(CheckerRegion(), images[2:3], truthful[2:3], targets[2:3], settings, rows=[0])
    assert not torch.allclose(other.random[0].deletion, alone.random[0].deletion)


def test_the_report_reads_its_maps_once_and_computes_only_the_rest(setup: dict, tmp_path: Path) -> None:
    read = report([*setup["arguments"], "--maps", str(setup["root"] / "maps"), "--out", str(tmp_path / "read")])
    computed = setup["one"]
    teacher, student = (read["models"][name]["maps"]["gradcam"] for name in ("teacher", "student"))
    # The teacher's own maps serve faithfulness, randomisation and (at its own class) agreement: nothing computed.
    assert teacher == {"maps_read": 2 * TEST_IMAGES, "maps_computed": 0}
    agreed = read["models"]["student"]["agreement"]["gradcam"]
    differing = TEST_IMAGES - round(agreed["prediction_agreement"] * TEST_IMAGES)
    # The student's own maps are read; at the teacher's class only where it predicts another class is one computed.
    assert student == {"maps_read": 2 * TEST_IMAGES - differing, "maps_computed": differing}
    for name in ("teacher", "student"):
        assert computed["models"][name]["maps"]["gradcam"] == {"maps_read": 0, "maps_computed": 2 * TEST_IMAGES}
        ours, theirs = read["models"][name], computed["models"][name]
        # The stored maps are float16 at the layer's grid, upsampled again: measured within 7e-5 of the computed
        # maps' numbers here; 1e-3 leaves room for other BLAS builds.
        for key in ("deletion_auc", "insertion_auc", "random_deletion_auc", "random_insertion_auc"):
            assert ours["faithfulness"]["gradcam"][key] == pytest.approx(
                theirs["faithfulness"]["gradcam"][key], abs=1e-3
            )
        assert ours["randomization"]["gradcam"]["rank_correlation_mean"] == pytest.approx(
            theirs["randomization"]["gradcam"]["rank_correlation_mean"], abs=1e-3
        )
    index = (tmp_path / "read" / "index.md").read_text()
    assert f"teacher gradcam: {2 * TEST_IMAGES} read, 0 computed" in index
    assert "Maps read from the maps dataset" not in (setup["root"] / "one" / "index.md").read_text()
    theirs = computed["models"]["student"]["agreement"]["gradcam"]
    assert agreed["prediction_agreement"] == theirs["prediction_agreement"]
    assert agreed["rank_correlation_mean"] == pytest.approx(theirs["rank_correlation_mean"], abs=1e-3)
    # A top-10% pixel of a 4 x 4 grid upsampled can change places with its neighbour (measured: 0.0017).
    assert agreed["top10_iou_mean"] == pytest.approx(theirs["top10_iou_mean"], abs=0.05)


def test_maps_at_another_class_than_the_given_ones_are_computed_only_where_needed() -> None:
    torch.manual_seed(0)
    model, _ = build_classifier(TINY_RESNET, BREAST_LABELS, image_processor_config=PROCESSOR_28)
    model.eval()
    pixel_values = torch.randn(4, 3, 28, 28)
    own, targets = explain_maps(model, "gradcam", pixel_values, None)
    classes = targets.clone()
    classes[[1, 3]] = 1 - classes[[1, 3]]  # the reference predicts another class for images 1 and 3
    options = {"dtype": torch.float32, "batch_size": 4}
    maps, computed = maps_at_class(model, "gradcam", pixel_values, classes, (own, targets), options)
    assert computed == 2
    expected, _ = explain_maps(model, "gradcam", pixel_values, classes)
    torch.testing.assert_close(maps, expected)  # the given maps where the class is theirs, the method's elsewhere
    assert torch.equal(maps[[0, 2]], own[[0, 2]])
    assert maps_at_class(model, "gradcam", pixel_values, classes, None, options)[1] == 4  # nothing given


def test_parts_of_chunks_aggregate_to_the_numbers_of_one_batch() -> None:
    images, truthful = checker_images(count=6)
    targets = torch.zeros(6, dtype=torch.long)
    settings = FaithfulnessSettings(random_maps=2, random_steps=3, paired_images=2, road_fractions=(0.5,), steps=4)
    paired = paired_mask(6, settings.paired_images)  # images 0 and 5: the first chunk has one, the second one
    whole = faithfulness_parts(CheckerRegion(), images, truthful, targets, settings, paired=paired)
    chunks = [
        faithfulness_parts(
            CheckerRegion(),
            images[part],
            truthful[part],
            targets[part],
            settings,
            range(6)[part],
            paired[part],
        )
        for part in (slice(0, 2), slice(2, 4), slice(4, 6))  # the middle chunk has no paired image
    ]
    assert chunks[1].paired.deletion.shape == (0, 4)
    joined = Faithfulness.from_parts(FaithfulnessParts.concatenate(chunks), settings).numbers()
    expected = Faithfulness.from_parts(whole, settings).numbers()
    assert joined["images"] == 6 and joined["paired_images"] == 2
    for key in ("deletion_auc", "insertion_auc", "random_deletion_auc", "random_insertion_auc"):
        assert joined[key] == pytest.approx(expected[key], abs=1e-6)
    assert joined["verdict"] == expected["verdict"]
    for name, numbers in expected["against_random"].items():
        # ROAD's conjugate gradients stop when every system of a batch is solved: close, not equal.
        assert joined["against_random"][name] == pytest.approx(numbers, abs=1e-3, nan_ok=True), name
