"""`python -m explain --save_maps DIR`: every map of whole splits as a `datasets.Dataset`, the same from one process
or two, resumable after a kill, in flat memory, and a Hub push that fails offline in one sentence."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch

import explain.cli
from explain.maps_dataset import (
    MANIFEST,
    MAPS_FEATURES,
    STATE,
    MapsJob,
    check_manifest,
    plan_shards,
    prepare_folder,
    push_maps,
)
from pipelines.errors import ConfigError, DataError, OfflineError

from helpers import faults
from helpers.data import make_medmnist_npz
from helpers.models import save_tiny_classifiers
from helpers.project import ROOT, load_script

COUNTS = (8, 4, 37)  # test: 37 images = shards of 8, 8, 8, 8, 5; validation: one shard of 4
METHODS = "gradcam,layercam"
SHARD, BATCH = 8, 4


pytestmark = pytest.mark.usefixtures("one_thread")  # see the one_thread fixture in conftest.py


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("maps")
    make_medmnist_npz(root / "data" / "breastmnist.npz", counts=COUNTS)
    folders = save_tiny_classifiers(root, ("resnet", "vit"))
    arguments = [
        *("--model", folders["resnet"], "--compare_with", folders["vit"], "--methods", METHODS),
        *("--dataset_name", "breastmnist", "--data_dir", str(root / "data"), "--verify_md5", "false"),
        *("--split", "validation,test", "--shard_size", str(SHARD), "--batch_size", str(BATCH), "--device", "cpu"),
    ]
    torch.set_num_threads(1)
    summary = explain.cli.main([*arguments, "--save_maps", str(root / "reference")])
    return {"root": root, "arguments": arguments, "reference": root / "reference", "summary": summary}


def as_rows(folder: Path) -> list[dict]:
    return datasets.load_from_disk(str(folder)).to_list()


def command(arguments: list[str], processes: int = 1, fault: bool = False) -> list[str]:
    """`python -m explain` (through tests/helpers/faults.py when `fault`), or `accelerate launch -m explain` on 2+ CPUs."""
    if processes == 1:
        program = [faults.__file__, "explain"] if fault else ["-m", "explain"]
        return [sys.executable, *program, *arguments]
    accelerate = str(Path(sys.executable).with_name("accelerate"))
    launch = [accelerate, "launch", "--multi_gpu", "--num_processes", str(processes), "--num_machines", "1"]
    launch += ["--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(faults.free_port())]
    return [*launch, "-m", "explain", *arguments]


def environment(**extra: object) -> dict[str, str]:
    return faults.environment(OMP_NUM_THREADS=1, **extra)


def test_the_dataset_has_the_schema_and_every_image_model_method(setup: dict) -> None:
    dataset = datasets.load_from_disk(str(setup["reference"]))
    assert dataset.features == MAPS_FEATURES
    images = COUNTS[1] + COUNTS[2]
    assert len(dataset) == images * 2 * 2 == setup["summary"]["rows"]  # images x models x methods
    rows = dataset.to_list()
    order = [(row["split"], row["index"], row["model"], row["method"]) for row in rows]
    expected = [
        (split, index, model, method)
        for split, count in (("validation", COUNTS[1]), ("test", COUNTS[2]))
        for index in range(count)
        for model in ("resnet", "vit")
        for method in ("gradcam", "layercam")
    ]
    assert order == expected  # canonical order: split, image, model, method
    labels = np.load(setup["root"] / "data" / "breastmnist.npz")["test_labels"].reshape(-1)
    test_rows = [row for row in rows if row["split"] == "test"]
    assert [row["label"] for row in test_rows[::4]] == [[int(label)] for label in labels]
    grids = {row["model"]: np.asarray(row["map"]).shape for row in rows}
    assert grids == {"resnet": (4, 4), "vit": (4, 4)}  # each model's layer grid (28 px ResNet; 32 px, 8 px patches)
    for row in rows:
        values = np.asarray(row["map"], dtype=np.float32)
        assert values.min() >= 0 and values.max() <= 1
        assert row["predicted"] == [row["target"]]  # no --target_class: each model's predicted class is explained
        assert 0.5 <= row["score"] <= 1  # the predicted class of two has at least half the probability
    manifest = json.loads((setup["reference"] / MANIFEST).read_text())
    assert len(manifest["shards"]) == 6 and manifest["last_run"]["processes"] == 1


def test_the_dataset_maps_equal_the_methods_own_maps_at_the_layer_grid(setup: dict) -> None:
    from explain.explainer import Explainer
    from pipelines.collate import ImageCollator

    explainer = Explainer(str(setup["root"] / "resnet"), torch.device("cpu"), torch.float32, batch_size=BATCH)
    images = np.load(setup["root"] / "data" / "breastmnist.npz")["test_images"][:BATCH]
    batch = ImageCollator(2)([{"image": image, "label": 0} for image in images])
    explained = explainer.explain("gradcam", batch["pixel_values"])  # upsampled to 28 px
    rows = [row for row in as_rows(setup["reference"]) if row["split"] == "test" and row["index"] < BATCH]
    stored = torch.tensor([row["map"] for row in rows if row["model"] == "resnet" and row["method"] == "gradcam"])
    upsampled = torch.nn.functional.interpolate(stored[:, None].float(), size=(28, 28), mode="bilinear")[:, 0]
    scaled = (upsampled - upsampled.amin((1, 2), keepdim=True)) / (
        upsampled.amax((1, 2), keepdim=True) - upsampled.amin((1, 2), keepdim=True)
    ).clamp_min(1e-7)
    assert torch.allclose(scaled, explained.maps, atol=2e-3)  # float16 storage
    assert [row["target"] for row in rows[::4]] == explained.target.tolist()


@pytest.mark.slow
def test_two_processes_write_the_same_dataset_as_one(setup: dict, tmp_path: Path) -> None:
    out = tmp_path / "two"
    result = faults.run(command([*setup["arguments"], "--save_maps", str(out)], 2), tmp_path / "two.log", environment())
    assert result.returncode == 0, result.stdout[-3000:]
    assert result.stdout.count(" rows for ") == 1  # the main process reports, once
    assert as_rows(out) == as_rows(setup["reference"])
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["last_run"]["processes"] == 2 and manifest["last_run"]["images"] == COUNTS[1] + COUNTS[2]


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_same_dataset(setup: dict, tmp_path: Path) -> None:
    out, fault_dir = tmp_path / "killed", tmp_path / "faults"
    # Batch 4 of the first process: its first shard (validation, one batch) and the first of test (two batches)
    # are done, the next shard holds one batch in its .partial file.
    env = environment(FAULT_PAUSE_AT_MAPS_BATCH=5, FAULT_DIR=fault_dir)
    process = faults.start(command([*setup["arguments"], "--save_maps", str(out)], fault=True), tmp_path / "a.log", env)
    faults.wait_for(faults.markers(fault_dir, "paused", 1), process, tmp_path / "a.log")
    faults.kill_tree(process)
    shards = plan_shards({"validation": COUNTS[1], "test": COUNTS[2]}, SHARD)
    assert [(out / shard.file).is_file() for shard in shards] == [True, True, False, False, False, False]
    assert (out / f"{shards[2].file}.partial").stat().st_size > 0 and not (out / STATE).exists()

    result = faults.run(command([*setup["arguments"], "--save_maps", str(out)]), tmp_path / "b.log", environment())
    assert result.returncode == 0, result.stdout[-3000:]
    assert as_rows(out) == as_rows(setup["reference"])
    assert not list(out.glob("*.partial"))
    assert json.loads((out / MANIFEST).read_text())["last_run"]["images"] == COUNTS[1] + COUNTS[2] - 4 - 8


def test_resuming_with_other_arguments_is_one_sentence(setup: dict, tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"holds maps made with methods = \['gradcam', 'layercam'\], not \['gradcam'\]"
    ):
        explain.cli.main([*setup["arguments"], "--methods", "gradcam", "--save_maps", str(setup["reference"])])
    assert len(datasets.load_from_disk(str(setup["reference"]))) == (COUNTS[1] + COUNTS[2]) * 4


def test_resuming_over_splits_of_other_sizes_is_one_sentence(tmp_path: Path) -> None:
    job = MapsJob(models={"m": "m"}, methods=["gradcam"], splits=["test"], shard_size=SHARD)
    prepare_folder(tmp_path, job, plan_shards({"test": 37}, SHARD))
    check_manifest(tmp_path, job, plan_shards({"test": 37}, SHARD))  # the same: accepted
    with pytest.raises(ConfigError, match="holds maps of splits of other sizes than this dataset's"):
        check_manifest(tmp_path, job, plan_shards({"test": 40}, SHARD))


def test_the_hub_push_offline_is_one_sentence_and_keeps_the_folder(setup: dict) -> None:
    before = sorted((path.name, path.stat().st_size) for path in setup["reference"].iterdir())
    with pytest.raises(
        OfflineError,
        match="me/maps could not be published once the maps are computed: HF_HUB_OFFLINE is set",
    ) as raised:
        explain.cli.main([*setup["arguments"], "--save_maps", str(setup["reference"]), "--push_to_hub", "me/maps"])
    assert "\n" not in str(raised.value)
    after = sorted((path.name, path.stat().st_size) for path in setup["reference"].iterdir())
    assert after == before  # nothing rewritten: the rerun found the dataset complete
    assert as_rows(setup["reference"])[0]["split"] == "validation"  # still loads


def test_a_failed_hub_push_never_shows_the_token(setup: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    def refused(self, repo_id: str, private: bool) -> None:
        assert private  # private by default
        raise RuntimeError(f"401 Unauthorized for token {os.environ['HF_TOKEN']}")

    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)  # the push itself is replaced: nothing goes online
    monkeypatch.setenv("HF_TOKEN", "hf_secret_token_123")
    monkeypatch.setattr(datasets.Dataset, "push_to_hub", refused)
    monkeypatch.setattr(datasets.DatasetDict, "push_to_hub", refused)
    with pytest.raises(OfflineError) as raised:
        push_maps(setup["reference"], "me/maps")
    assert str(raised.value).startswith(
        "Could not push the maps to me/maps (RuntimeError: 401 Unauthorized for token ***)"
    )


def test_the_command_line_refuses_maps_arguments_that_cannot_work(setup: dict, tmp_path: Path) -> None:
    base = ["--model", str(setup["root"] / "resnet"), "--out", str(tmp_path)]
    with pytest.raises(ConfigError, match="--push_to_hub publishes a maps dataset; give --save_maps DIR"):
        explain.cli.main([*base, "--images", "a.png", "--push_to_hub", "me/maps"])
    with pytest.raises(ConfigError, match="several need --save_maps"):
        explain.cli.main([*base, "--dataset_name", "breastmnist", "--split", "validation,test"])
    with pytest.raises(ConfigError, match="--save_maps explains dataset splits"):
        explain.cli.main([*base, "--images", "a.png", "--save_maps", str(tmp_path / "maps")])


def peak_rss_mib(arguments: list[str], log: Path) -> float:
    """The peak resident memory of one run in a subprocess (its own, from wait4)."""
    with open(log, "w") as out:
        process = subprocess.Popen(arguments, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=environment())
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    assert process.returncode == 0, log.read_text()[-3000:]
    return usage.ru_maxrss / 1024  # KiB on Linux


@pytest.mark.slow
def test_memory_stays_flat_from_500_to_5000_images(setup: dict, tmp_path: Path) -> None:
    peaks = {}
    for images in (500, 5000):
        make_medmnist_npz(tmp_path / str(images) / "breastmnist.npz", counts=(4, 4, images))
        arguments = [
            *("--model", str(setup["root"] / "resnet"), "--methods", "gradcam", "--dataset_name", "breastmnist"),
            *("--data_dir", str(tmp_path / str(images)), "--verify_md5", "false", "--device", "cpu"),
            *("--shard_size", "1024", "--batch_size", "128", "--save_maps", str(tmp_path / f"maps{images}")),
        ]
        peaks[images] = peak_rss_mib(command(arguments), tmp_path / f"{images}.log")
        assert len(datasets.load_from_disk(str(tmp_path / f"maps{images}"))) == images
    print(f"peak RSS: {peaks}")
    assert peaks[5000] - peaks[500] < 200, peaks


def test_the_report_reads_its_maps_from_a_maps_dataset(setup: dict, tmp_path: Path) -> None:
    report = load_script("report").main
    models = [str(setup["root"] / "resnet"), str(setup["root"] / "vit")]
    common = [
        *("--models", *models, "--dataset_name", "breastmnist", "--data_dir", str(setup["root"] / "data")),
        *("--verify_md5", "false", "--split", "test", "--methods", "gradcam", "--explain_images", "12"),
        *("--steps", "3", "--latency_repeats", "1", "--sample_images", "2", "--device", "cpu", "--paired_images", "6"),
    ]
    computed = report([*common, "--out", str(tmp_path / "computed")])
    read = report([*common, "--maps", str(setup["reference"]), "--out", str(tmp_path / "read")])
    for name in ("resnet", "vit"):
        ours, theirs = (
            read["models"][name]["faithfulness"]["gradcam"],
            computed["models"][name]["faithfulness"]["gradcam"],
        )
        for key in ("deletion_auc", "insertion_auc", "random_deletion_auc"):
            assert ours[key] == pytest.approx(theirs[key], abs=0.01), (name, key)  # the stored maps are float16
    with pytest.raises(DataError, match="has no method hirescam; it holds gradcam, layercam"):
        report([*common, "--methods", "hirescam", "--maps", str(setup["reference"]), "--out", str(tmp_path / "x")])
