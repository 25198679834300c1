"""Every map of a whole split as a `datasets.Dataset`: one row per (image, model, method, target), written in Arrow
shards by each process of an `accelerate launch` run, resumable, and loadable with `datasets.load_from_disk`.

Layout of the folder (the layout `Dataset.save_to_disk` writes, so nothing is copied at the end):

- ``data-KKKKK-of-NNNNN.arrow``: shard K, the maps of a fixed run of `shard_size` consecutive images of one split.
  Shards are cut from the splits, not from the processes: their content and order do not depend on how many
  processes wrote them, and a run resumed with another number of processes writes the same dataset. Process R
  takes every W-th shard still missing (index striding: no process waits on another until the end, and no shard is
  split between two writers). A shard is written to ``<name>.partial`` and renamed when complete, so a killed run
  leaves only whole shards under their final names.
- ``maps_manifest.json``: the arguments the maps are made with and the planned shards, written before any shard;
  a resumed run with other arguments is refused. After the last shard it also records the run's timing.
- ``dataset_info.json`` and ``state.json`` (written last, as `save_to_disk` does): the dataset is complete.

Memory stays flat over the split: one batch of images and its maps are held at a time, and each batch's rows go
to the shard file as they are made.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import torch
from accelerate import PartialState
from accelerate.utils import gather_object, parse_flag_from_env
from datasets import Features, List, Value
from tqdm.auto import tqdm

from explain.base import AttributionMethod
from explain.explainer import Explainer
from explain.explanation import Explanation, scale_to_unit, upsample
from explain.inputs import LabelledSplit
from explain.registry import make_method
from pipelines.errors import ConfigError, DataError, OfflineError, failure_reason, is_offline
from pipelines.io import atomic_write_json
from pipelines.labels import predicted_classes
from pipelines.progress import progress_bar

MANIFEST = "maps_manifest.json"
STATE = "state.json"
FORMAT_VERSION = 1

MAPS_FEATURES = Features(
    {
        "split": Value("string"),
        "index": Value("int64"),  # the image's row in its split
        "model": Value("string"),
        "method": Value("string"),
        "target": Value("int32"),  # the class the map explains
        "score": Value("float32"),  # the model's probability for that class
        "predicted": List(Value("int32")),  # the model's predicted class (multi-label: every label with logit > 0)
        "label": List(Value("int32")),  # the true class (multi-label: every present label)
        "map": List(List(Value("float16"))),  # (h, w) in [0, 1] at the method's own grid (CAMs: the layer's)
    }
)
SCHEMA = MAPS_FEATURES.arrow_schema


@dataclass
class MapsJob:
    """What a maps dataset holds; two runs with equal jobs write equal datasets.

    Attributes:
        models: Display name -> folder or Hub id, in the order rows list them.
        methods: Canonical method names, in row order.
        splits: Split names, in row order.
        target_class: The class every map explains; None: each model's predicted class.
        shard_size: Images per shard.
        batch_size: Images per forward pass (kept equal on resume: a batch's composition can change low bits).
        precision: The compute precision asked for (auto, fp32, bf16, fp16).
        options: Method options (target_layer, head_fusion, discard_ratio).
        data: The dataset spec (`DataArguments` as a dict).
    """

    models: dict[str, str]
    methods: list[str]
    splits: list[str]
    target_class: int | None = None
    shard_size: int = 1024
    batch_size: int = 64
    precision: str = "auto"
    options: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, as the manifest stores it (tuples become lists, so a read-back compares equal)."""
        return json.loads(json.dumps(self.__dict__, default=str))


@dataclass
class Shard:
    """A run of consecutive images of one split: rows ``[start, stop)``."""

    split: str
    start: int
    stop: int
    file: str


@dataclass
class RunTiming:
    """What one process spent: images and rows it made, seconds in all, and seconds building and writing Arrow."""

    images: int = 0
    rows: int = 0
    seconds: float = 0.0
    write_seconds: float = 0.0


def process_state(cpu: bool = False) -> PartialState:
    """accelerate's state of this process. On the CPU it must be asked for: `PartialState` alone joins the
    processes of a launch only over GPUs, and `accelerate launch` (``use_cpu``) says so only in ACCELERATE_USE_CPU,
    which `AcceleratorState` reads and `PartialState` does not."""
    cpu = cpu or parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available()
    return PartialState(cpu=cpu)


def plan_shards(split_sizes: dict[str, int], shard_size: int) -> list[Shard]:
    """The shards of every split, in dataset order, named as `save_to_disk` names its files."""
    runs = [
        (split, start, min(start + shard_size, size))
        for split, size in split_sizes.items()
        for start in range(0, size, shard_size)
    ]
    return [
        Shard(split, start, stop, f"data-{number:05d}-of-{len(runs):05d}.arrow")
        for number, (split, start, stop) in enumerate(runs)
    ]


def save_maps(
    folder: str | Path,
    job: MapsJob,
    explainers: dict[str, Explainer],
    splits: dict[str, LabelledSplit],
    state: PartialState | None = None,
    progress: bool = True,
) -> RunTiming:
    """Explain every image of `splits` with every method and model and write the maps dataset into `folder`;
    resume a run of the same `job` killed part-way, keeping its finished shards.

    Call it on every process of a distributed run (each writes its own shards); it returns when the dataset is
    complete.

    Args:
        folder: The dataset's folder.
        job: What to compute (see `MapsJob`); must match the manifest already in `folder`, if any.
        explainers: The models by display name (the keys of ``job.models``), on this process's device.
        splits: Split name -> the split, with the collator that batches its images and labels.
        state: accelerate's process state; None: `process_state()` (one process unless launched).
        progress: Show a progress bar (images/s) on the main process.

    Returns:
        The run's timing: images and rows summed over processes, seconds of the slowest process, and
        write_seconds of the mean process (so that write_seconds / seconds is the share a process spent writing).

    Raises:
        ConfigError: `folder` holds maps made with other arguments.
    """
    state = state or process_state()
    folder = Path(folder)
    shards = plan_shards({name: len(splits[name].rows) for name in job.splits}, job.shard_size)
    if state.is_main_process:
        prepare_folder(folder, job, shards)
    state.wait_for_everyone()
    check_manifest(folder, job, shards)  # every process: a refusal on the main one must not leave others waiting
    pending = [shard for shard in shards if not (folder / shard.file).is_file()]
    state.wait_for_everyone()  # every process has listed the missing shards before any is written
    mine = pending[state.process_index :: state.num_processes]
    timing = RunTiming()
    started = time.perf_counter()
    bar = progress_bar(sum(shard.stop - shard.start for shard in mine), "maps", progress and state.is_main_process)
    writer = ShardWriter(folder, job, explainers, timing, bar)
    with bar:
        for shard in mine:
            writer.write(shard, splits[shard.split])
    timing.seconds = time.perf_counter() - started
    state.wait_for_everyone()
    everyone = gather_object([timing]) if state.num_processes > 1 else [timing]
    total = RunTiming(
        images=sum(t.images for t in everyone),
        rows=sum(t.rows for t in everyone),
        seconds=max(t.seconds for t in everyone),
        write_seconds=sum(t.write_seconds for t in everyone) / len(everyone),
    )
    if state.is_main_process:
        finish_folder(folder, shards, total, state.num_processes)
    state.wait_for_everyone()
    return total


def prepare_folder(folder: Path, job: MapsJob, shards: list[Shard]) -> None:
    """Write the manifest of a new dataset, or check that of one being resumed; drop half-written shards."""
    folder.mkdir(parents=True, exist_ok=True)
    if (folder / MANIFEST).is_file():
        check_manifest(folder, job, shards)
    else:
        manifest = {"format": FORMAT_VERSION, "job": job.as_dict(), "shards": [shard.__dict__ for shard in shards]}
        atomic_write_json(folder / MANIFEST, manifest)
    for partial in folder.glob("*.arrow.partial"):  # a killed run's shard in progress: redone from its start
        partial.unlink()


def check_manifest(folder: Path, job: MapsJob, shards: list[Shard]) -> None:
    """Refuse to add to a dataset made with other arguments (naming the first that differs) or other splits."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        recorded, planned = manifest["job"], manifest["shards"]
    except (OSError, ValueError, KeyError):
        raise ConfigError(
            f"{folder / MANIFEST} is missing or unreadable, so the maps in {folder} cannot be resumed; give another "
            "--save_maps folder."
        ) from None
    wanted = job.as_dict()
    for key in wanted:
        if recorded.get(key) != wanted[key]:
            raise ConfigError(
                f"{folder} holds maps made with {key} = {recorded.get(key)!r}, not {wanted[key]!r}; run again with "
                "the same arguments to resume it, or give another --save_maps folder."
            )
    if planned != [shard.__dict__ for shard in shards]:
        raise ConfigError(
            f"{folder} holds maps of splits of other sizes than this dataset's; give another --save_maps folder."
        )


def method_at_grid(method: str, explainer: Explainer) -> AttributionMethod:
    """The method for one model, keeping its maps at its own grid (the reader upsamples)."""
    built = make_method(method, explainer.model, **explainer.options)
    built.upsample = False
    return built


@dataclass
class ShardWriter:
    """Writes shards of one run: explains a shard's images batch by batch and streams each batch's rows into the
    shard's file, counting the run's images, rows and time spent writing."""

    folder: Path
    job: MapsJob
    explainers: dict[str, Explainer]
    timing: RunTiming
    bar: tqdm
    methods: dict[tuple[str, str], AttributionMethod] = field(init=False)

    def __post_init__(self) -> None:
        self.methods = {
            (name, method): method_at_grid(method, explainer)
            for name, explainer in self.explainers.items()
            for method in self.job.methods
        }

    def write(self, shard: Shard, split: LabelledSplit) -> None:
        partial = self.folder / f"{shard.file}.partial"
        with pa.OSFile(str(partial), "wb") as sink, pa.ipc.new_stream(sink, SCHEMA) as writer:
            for start in range(shard.start, shard.stop, self.job.batch_size):
                stop = min(start + self.job.batch_size, shard.stop)
                batch = split.collator(examples(split.rows, start, stop))
                blocks = explain_batch(batch, self.job, self.explainers, self.methods)
                began = time.perf_counter()
                table = rows_table(shard.split, np.arange(start, stop), list(self.job.models), self.job.methods, blocks)
                writer.write_table(table)
                self.timing.write_seconds += time.perf_counter() - began
                self.timing.images += stop - start
                self.timing.rows += table.num_rows
                self.bar.update(stop - start)
        began = time.perf_counter()
        os.replace(partial, self.folder / shard.file)  # only a whole shard gets its final name
        self.timing.write_seconds += time.perf_counter() - began


def examples(split: Any, start: int, stop: int) -> list[dict[str, Any]]:
    """Rows ``[start, stop)`` of a split as the collator takes them, read in one slice (not row by row)."""
    if isinstance(split.features["image"], (datasets.Array2D, datasets.Array3D)):
        # uint8 arrays (MedMNIST) as one numpy block (datasets would widen them to int64 without the dtype) instead
        # of its default nested lists, which cost far more to convert at 224 px
        split = split.with_format("numpy", columns=["image"], output_all_columns=True, dtype=np.uint8)
    columns = split[start:stop]
    return [{"image": image, "label": label} for image, label in zip(columns["image"], columns["label"])]


@dataclass
class Block:
    """One model's maps from one method for a batch of B images (N = B rows unless a method explains several
    classes per image).

    Attributes:
        maps: float16 (N, h, w).
        image: int64 (N,), the row's image within the batch.
        target: int32 (N,).
        score: float32 (N,).
        predicted: per image (B,), the predicted class indices.
        label: per image (B,), the true class indices.
    """

    maps: np.ndarray
    image: np.ndarray
    target: np.ndarray
    score: np.ndarray
    predicted: list[np.ndarray]
    label: list[np.ndarray]


def explain_batch(
    batch: dict[str, Any],
    job: MapsJob,
    explainers: dict[str, Explainer],
    methods: dict[tuple[str, str], AttributionMethod],
) -> list[Block]:
    """One `Block` per (model, method), model-major, for a collated batch."""
    labels = class_lists(batch["labels"])
    blocks = []
    for name in job.models:
        explainer = explainers[name]
        pixel_values = explainer.pixel_values(batch["pixel_values"])
        predicted = predicted_class_lists(explainer, batch["pixel_values"])  # once per model, not per method
        for method in job.methods:
            explanation = methods[(name, method)](pixel_values, job.target_class).cpu()
            blocks.append(block_of(explanation, predicted, labels))
    return blocks


def predicted_class_lists(explainer: Explainer, images: torch.Tensor | list[torch.Tensor]) -> list[np.ndarray]:
    """Each image's predicted class (multi-label: every label with logit > 0)."""
    logits = explainer.predict_batch(images)
    return class_lists(predicted_classes(logits, explainer.multi_label))


def block_of(explanation: Explanation, predicted: list[np.ndarray], labels: list[np.ndarray]) -> Block:
    return Block(
        maps=explanation.maps.to(torch.float16).numpy(),
        image=explanation.image_index.numpy(),
        target=explanation.target.to(torch.int32).numpy(),
        score=explanation.score.numpy(),
        predicted=predicted,
        label=labels,
    )


def class_lists(classes: torch.Tensor) -> list[np.ndarray]:
    """Each row's classes as an int32 array: one class from (B,) indices, the marked ones from (B, L) multi-hot."""
    if classes.ndim == 1:
        return [np.array([value], dtype=np.int32) for value in classes.tolist()]
    return [np.flatnonzero(row).astype(np.int32) for row in classes.numpy()]


def rows_table(
    split: str, indices: np.ndarray, models: Sequence[str], methods: Sequence[str], blocks: Sequence[Block]
) -> pa.Table:
    """The batch's rows in the dataset's order: by image, then model, then method (the `blocks` order), then target.

    Args:
        split: The split's name.
        indices: int64 (B,), the images' rows in the split.
        models: Model names; `blocks` holds ``len(models) * len(methods)`` blocks, model-major.
        methods: Method names.
        blocks: One per (model, method).
    """
    tables = []
    for number, block in enumerate(blocks):
        model, method = models[number // len(methods)], methods[number % len(methods)]
        rows = len(block.image)
        tables.append(
            pa.Table.from_arrays(
                [
                    pa.array([split] * rows, pa.string()),
                    pa.array(indices[block.image], pa.int64()),
                    pa.array([model] * rows, pa.string()),
                    pa.array([method] * rows, pa.string()),
                    pa.array(block.target, pa.int32()),
                    pa.array(block.score, pa.float32()),
                    list_array([block.predicted[image] for image in block.image]),
                    list_array([block.label[image] for image in block.image]),
                    maps_array(block.maps),
                ],
                schema=SCHEMA,
            )
        )
    table = pa.concat_tables(tables)
    # Stable sort on (image, block): each block's own rows keep their order (its targets).
    block_of_row = np.concatenate([np.full(len(block.image), number) for number, block in enumerate(blocks)])
    image_of_row = np.concatenate([block.image for block in blocks])
    return table.take(pa.array(np.lexsort((block_of_row, image_of_row))))


def list_array(rows: Sequence[np.ndarray]) -> pa.Array:
    """int32 lists from one array per row, built from offsets (no Python object per value)."""
    offsets = np.zeros(len(rows) + 1, dtype=np.int32)
    np.cumsum([len(row) for row in rows], out=offsets[1:])
    values = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, pa.int32()))


def maps_array(maps: np.ndarray) -> pa.Array:
    """float16 (N, h, w) as N nested lists (h rows of w values), sharing the maps' one flat buffer."""
    count, height, width = maps.shape
    values = pa.array(np.ascontiguousarray(maps).reshape(-1), pa.float16())
    rows = pa.ListArray.from_arrays(pa.array(np.arange(0, count * height * width + 1, width, dtype=np.int32)), values)
    return pa.ListArray.from_arrays(pa.array(np.arange(0, count * height + 1, height, dtype=np.int32)), rows)


def finish_folder(folder: Path, shards: list[Shard], timing: RunTiming, processes: int) -> None:
    """Record the run's timing, then write the files `datasets.load_from_disk` reads, state.json last."""
    missing = [shard.file for shard in shards if not (folder / shard.file).is_file()]
    if missing:  # a process stopped without raising: never mark an incomplete dataset complete
        raise ConfigError(f"{folder} lacks {len(missing)} shard(s) ({missing[0]}, ...); run again to finish it.")
    if (folder / STATE).is_file():
        return  # complete before this run, which computed nothing: the timing of the run that did stays
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["last_run"] = {"processes": processes, **timing.__dict__}
    atomic_write_json(folder / MANIFEST, manifest)
    datasets.DatasetInfo(
        description="Attribution maps, one row per (image, model, method, target); see maps_manifest.json.",
        features=MAPS_FEATURES,
    ).write_to_directory(str(folder))
    job = manifest["job"]
    state = {
        "_data_files": [{"filename": shard.file} for shard in shards],
        "_fingerprint": hashlib.sha256(json.dumps(job, sort_keys=True).encode()).hexdigest()[:16],
        "_format_columns": None,
        "_format_kwargs": {},
        "_format_type": None,
        "_output_all_columns": False,
        "_split": None,
    }
    atomic_write_json(folder / STATE, state)


def is_complete(folder: str | Path) -> bool:
    """Whether `folder` holds a finished maps dataset."""
    return (Path(folder) / MANIFEST).is_file() and (Path(folder) / STATE).is_file()


def push_maps(folder: str | Path, repo_id: str, private: bool = True) -> str:
    """Publish a finished maps dataset on the Hub (a private dataset repo by default).

    Returns:
        The repo id it was pushed to.

    Raises:
        OfflineError: offline, no token, or the upload failed; the local folder stays complete either way.
    """
    advice = f"the local copy in {folder} is complete: push it later with --push_to_hub {repo_id}"
    if not is_complete(folder):
        raise ConfigError(f"{folder} is not a finished maps dataset, so it cannot be pushed to {repo_id}.")
    if is_offline():
        raise OfflineError(f"HF_HUB_OFFLINE is set, so the maps could not be pushed to {repo_id}; {advice}.")
    try:
        datasets.load_from_disk(str(folder)).push_to_hub(repo_id, private=private)
    except Exception as error:  # network, auth and Hub errors come in many types
        raise OfflineError(f"Could not push the maps to {repo_id} ({failure_reason(error)}); {advice}.") from None
    return repo_id


def read_maps(
    folder: str | Path, split: str, model_path: str, method: str, indices: Sequence[int], size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """One model's maps of one method for images of a split, from a finished maps dataset, at the input size.

    The rows' canonical order (split, image, model, method) gives each row's position, so only the rows asked for
    are read (memory-mapped), never the whole dataset.

    Args:
        folder: The dataset (`save_maps`), made with one target per image (each model's predicted class or one
            fixed class).
        split: The split's name.
        model_path: The model as the dataset's job names it (its folder or Hub id).
        method: A method name of the job.
        indices: Rows of the split.
        size: (H, W) the model's input size: the maps are upsampled and min-max scaled as the method would.

    Returns:
        float32 maps (N, H, W) in [0, 1] and int64 targets (N,).

    Raises:
        DataError: not a finished maps dataset, or one without this split, model or method.
    """
    folder = Path(folder)
    if not is_complete(folder):
        raise DataError(f"{folder} is not a finished maps dataset (python -m explain --save_maps {folder} ...).")
    job = json.loads((folder / MANIFEST).read_text())["job"]
    names = {path: name for name, path in job["models"].items()}
    for what, value, known in (
        ("split", split, job["splits"]),
        ("model", model_path, list(names)),
        ("method", method, job["methods"]),
    ):
        if value not in known:
            raise DataError(f"The maps dataset {folder} has no {what} {value}; it holds {', '.join(known)}.")
    per_image = len(job["models"]) * len(job["methods"])
    shards = json.loads((folder / MANIFEST).read_text())["shards"]
    offset = sum(
        shard["stop"] - shard["start"]
        for shard in shards
        if job["splits"].index(shard["split"]) < job["splits"].index(split)
    )
    within = list(job["models"]).index(names[model_path]) * len(job["methods"]) + job["methods"].index(method)
    positions = [(offset + int(index)) * per_image + within for index in indices]
    rows = datasets.load_from_disk(str(folder)).select(positions)
    keys = list(zip(rows["split"], rows["index"], rows["model"], rows["method"]))
    if keys != [(split, int(index), names[model_path], method) for index in indices]:  # one target per image
        raise DataError(f"The maps dataset {folder} does not hold one map per image, model and method.")
    maps = torch.stack([torch.tensor(np.asarray(grid, dtype=np.float32)) for grid in rows["map"]])
    return scale_to_unit(upsample(maps, size)), torch.tensor(rows["target"], dtype=torch.long)
