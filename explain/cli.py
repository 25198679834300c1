"""The explain module's command line, `python -m explain` (or `accelerate launch -m explain` for many processes):
its arguments and the wiring of the figures it draws, or of `--save_maps`, which hands every image of the split(s)
to `explain.maps_dataset`.

    python -m explain --model_name_or_path runs/quickstart/teacher --dataset_name breastmnist \
        --compare_with runs/quickstart/student --misclassified --output_dir runs/quickstart/explain
    accelerate launch -m explain --model_name_or_path runs/quickstart/teacher --dataset_name breastmnist \
        --split test --methods gradcam,layercam --save_maps runs/quickstart/maps

Figures: overlay.png, methods.png, models.png (with --compare_with), misclassified.png (with --misclassified) and
index.json, which says what each file shows (explain/figures.py). The inputs are explain/inputs.py's, the model
wrapper explain/explainer.py's `Explainer`.
"""

from __future__ import annotations

import pipelines.quiet  # noqa: F401  first: drops upstream deprecation noise before transformers loads

# isort: split
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from explain.explainer import Explainer, check_methods_fit, check_same_labels, chosen_methods, display_names
from explain.figures import Figures, image_entries
from explain.inputs import load_image_files, load_split, load_splits, spread_over_classes
from explain.maps_dataset import MapsJob, process_state, push_maps, save_maps
from pipelines.arguments import DataArguments, ModelLoadingArguments
from pipelines.config import build, read_flags
from pipelines.errors import ConfigError
from pipelines.io import check_output_folder, finish_partial, mark_partial
from pipelines.locks import run_folder_lock
from pipelines.progress import progress_bar
from pipelines.publishing import check_push_possible
from pipelines.runtime import check_precision, compute_dtype, pick_device, precision_name
from pipelines.splits import check_split

logger = logging.getLogger(__name__)


@dataclass
class ExplainArguments(ModelLoadingArguments):
    """What to explain and where to write the pictures (the dataset spec comes from `DataArguments`)."""

    model_name_or_path: str = field(
        metadata={
            "help": "Hub id or folder saved by save_pretrained (e.g. a finetune output_dir).",
            "aliases": ["--model"],
        }
    )
    images: list[str] | None = field(
        default=None, metadata={"help": "Image files to explain instead of a dataset split."}
    )
    split: str = field(
        default="test",
        metadata={"help": "Dataset split to explain: train, validation or test (with --save_maps, a comma list)."},
    )
    methods: str = field(
        default="all",
        metadata={"help": "Comma-separated methods (gradcam,guided_gradcam,...), or 'all' for every one that fits."},
    )
    compare_with: str | None = field(
        default=None, metadata={"help": "A second model (e.g. the distilled student) for the images-by-models grid."}
    )
    explain_images: int = field(default=8, metadata={"help": "Images per figure.", "aliases": ["--n"]})
    target_class: int | None = field(
        default=None,
        metadata={"help": "Explain this class index for every image instead of each image's predicted class."},
    )
    misclassified: bool = field(
        default=False, metadata={"help": "Also draw the split's misclassified images (needs a dataset)."}
    )
    output_dir: str = field(
        default="runs/explain", metadata={"help": "Folder for the PNGs and index.json.", "aliases": ["--out"]}
    )
    target_layer: str | None = field(
        default=None, metadata={"help": "Module name of the Grad-CAM layer; default: found by structure."}
    )
    batch_size: int = field(default=64, metadata={"help": "Images per forward pass."})
    precision: str = field(
        default="auto",
        metadata={"help": "Compute dtype: auto (bf16 on a GPU that has it, else fp32), fp32, bf16, fp16."},
    )
    device: str | None = field(default=None, metadata={"help": "Device (cuda, cpu); default: cuda when available."})
    edges: bool = field(default=False, metadata={"help": "Outline the images' edges over the maps."})
    head_fusion: str = field(default="mean", metadata={"help": "Attention rollout: fuse heads by mean, max or min."})
    discard_ratio: float = field(
        default=0.0, metadata={"help": "Attention rollout: share of the lowest attention weights dropped per layer."}
    )
    save_maps: str | None = field(
        default=None,
        metadata={
            "help": "Instead of figures, write every map of the split(s) (each method, --model_name_or_path and --compare_with) "
            "into this folder as a datasets.Dataset; a killed run resumes with the same arguments."
        },
    )
    shard_size: int = field(default=1024, metadata={"help": "--save_maps: images per Arrow shard."})
    push_to_hub: str | None = field(
        default=None, metadata={"help": "--save_maps: publish the finished dataset as this Hub dataset repo."}
    )
    hub_private_repo: bool = field(
        default=True,
        metadata={
            "help": "--push_to_hub: make the dataset repo private (false publishes it).",
            "aliases": ["--hub_private"],
        },
    )

    def __post_init__(self) -> None:
        for split in self.splits or [""]:
            check_split(split, self.split)
        if len(self.splits) > 1 and not self.save_maps:
            raise ConfigError(f"split is '{self.split}'; the figures show one split (several need --save_maps).")
        if self.save_maps and self.images:
            raise ConfigError("--save_maps explains dataset splits; it cannot be used with --images.")
        if self.push_to_hub and not self.save_maps:
            raise ConfigError("--push_to_hub publishes a maps dataset; give --save_maps DIR with it.")
        if self.shard_size < 1:
            raise ConfigError(f"shard_size is {self.shard_size}; it must be at least 1.")
        check_precision(self.precision)
        if self.explain_images < 1:
            raise ConfigError(f"explain_images is {self.explain_images}; it must be at least 1.")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size is {self.batch_size}; it must be at least 1.")
        if self.misclassified and self.images:
            raise ConfigError("--misclassified needs a labelled dataset split; it cannot be used with --images.")

    @property
    def splits(self) -> list[str]:
        return [split.strip() for split in self.split.split(",") if split.strip()]


def parse_arguments(argv: Sequence[str] | None = None) -> tuple[ExplainArguments, DataArguments | None]:
    """Parse the command line into `ExplainArguments` and, unless ``--images`` is given, `DataArguments`."""
    values = read_flags((ExplainArguments, DataArguments), argv, prog="python -m explain")
    explain_args = build(ExplainArguments, values)
    if explain_args.images:
        return explain_args, None
    if not values.get("dataset_name") and not values.get("data_dir"):
        raise ConfigError(
            "Nothing to explain: give image files (--images a.png b.jpg) or a dataset (e.g. --dataset_name breastmnist)."
        )
    return explain_args, build(DataArguments, values)


def load_explainers(args: ExplainArguments, device: torch.device) -> list[Explainer]:
    """`--model`, and `--compare_with` when given, checked to share one label space. The second model finds its own
    target layer by structure: a layer name given for the first rarely exists in both."""
    options = {"batch_size": args.batch_size, "head_fusion": args.head_fusion, "discard_ratio": args.discard_ratio}
    loading = args.loading_options
    dtype = compute_dtype(args.precision, device)
    explainers = [
        Explainer(args.model_name_or_path, device, dtype, **loading, **options, target_layer=args.target_layer)
    ]
    if args.compare_with:
        explainers.append(Explainer(args.compare_with, device, dtype, **loading, **options, target_layer=None))
        check_same_labels(explainers[0], explainers[1])
    return explainers


def first_files(paths: Sequence[str], n: int) -> list[str]:
    """The first `n` image files, saying on stderr how many are left out.

    A figure draws at most ``--explain_images`` images, for files as for a dataset split: 40 files made an overlay strip
    8,280 pixels wide.
    """
    if len(paths) > n:
        logger.warning(
            "Explaining the first %d of %d image files; --explain_images %d explains them all.",
            n,
            len(paths),
            len(paths),
        )
    return list(paths[:n])


def inputs_text(args: ExplainArguments) -> str:
    """What was explained, in index.json's words."""
    if not args.images:
        return f"{args.split} split"
    if len(args.images) <= args.explain_images:
        return "files"
    return f"the first {args.explain_images} of {len(args.images)} files (--explain_images {args.explain_images})"


def run_explain(args: ExplainArguments, data_args: DataArguments | None) -> dict[str, Any]:
    """Explain `args.explain_images` images with every chosen method, draw the figures into `args.output_dir`, and write index.json.

    Returns:
        The index written to ``index.json``: the inputs, and for each file what it shows.
    """
    device = pick_device(args.device)
    check_output_folder(args.output_dir)
    # Both models are loaded and checked before anything is drawn: a bad second model costs no figures.
    explainer, *others = load_explainers(args, device)
    methods = chosen_methods(args.methods, explainer.model)
    split = None
    if args.images:
        inputs = load_image_files(first_files(args.images, args.explain_images), explainer.model.config.num_channels)
    else:
        split = load_split(data_args, args.split, explainer.model)
        inputs = split.take(spread_over_classes(split.labels().numpy(), args.explain_images))
    explanations = {}
    with progress_bar(len(inputs.names) * len(methods), f"maps ({explainer.title})") as bar:
        for method in methods:
            explanations[method] = explainer.explain(method, inputs.images, args.target_class)
            bar.update(len(inputs.names))
    predicted_sets = explainer.predicted_sets(inputs.images)
    header = {
        "model": args.model_name_or_path,
        "compare_with": args.compare_with,
        "inputs": inputs_text(args),
        "methods": methods,
        "precision": precision_name(explainer.options["dtype"]),
        "images": image_entries(explainer, inputs, explanations[methods[0]], args.target_class, predicted_sets),
        "files": [],
    }
    mark_partial(args.output_dir)  # until index.json is written: a killed run's PNGs are marked
    figures = Figures(Path(args.output_dir), args.target_class, args.edges, index=header)
    figures.methods(explainer, inputs, explanations, predicted_sets)
    size = figures.size(explanations)
    for other in others:
        figures.models(explainer, other, inputs, size)
    if args.misclassified:
        figures.misclassified(explainer, split, args.explain_images, args.batch_size, size)
    index = figures.write_index()
    finish_partial(args.output_dir)
    return index


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """`python -m explain`: draw the figures into ``--output_dir`` and print what each file shows.

    Returns:
        The index written to ``index.json``.
    """
    explain_args, data_args = parse_arguments(argv)
    if explain_args.save_maps:
        return save_maps_of_splits(explain_args, data_args)
    with run_folder_lock(explain_args.output_dir):  # one writer per output folder
        index = run_explain(explain_args, data_args)
    for entry in index["files"]:
        print(f"{entry['file']}: {entry['shows']}")
    print(f"index: {explain_args.output_dir}/index.json")
    return index


def save_maps_of_splits(args: ExplainArguments, data_args: DataArguments) -> dict[str, Any]:
    """`--save_maps DIR`: every image of the chosen split(s), explained by every chosen method of every model, as a
    maps dataset in DIR (see `explain.maps_dataset`); each process of an `accelerate launch` run writes its shards.

    Returns:
        The run's summary: folder, rows, images, processes, seconds, maps/s and the share of time spent writing.
    """
    if args.push_to_hub:  # refused now, not after every map is computed
        check_push_possible(args.push_to_hub, after="once the maps are computed")
    check_output_folder(args.save_maps)
    state = process_state(cpu=args.device == "cpu")
    # One process: the device asked for. Launched: the one accelerate gave this process.
    device = pick_device(args.device) if state.num_processes == 1 else state.device
    explainers = load_explainers(args, device)
    paths = [explainer.name for explainer in explainers]
    names = display_names(explainers)
    methods = chosen_methods(args.methods, explainers[0].model)
    check_methods_fit(methods, {name: explainer.model for name, explainer in zip(names, explainers)})
    splits = load_splits(data_args, args.splits, explainers[0].model)
    job = MapsJob(
        models=dict(zip(names, paths)),
        methods=methods,
        splits=args.splits,
        target_class=args.target_class,
        shard_size=args.shard_size,
        batch_size=args.batch_size,
        precision=args.precision,
        options={
            "target_layer": args.target_layer,
            "head_fusion": args.head_fusion,
            "discard_ratio": args.discard_ratio,
        },
        data=asdict(data_args),
    )
    with run_folder_lock(args.save_maps):  # one run per maps folder (the main process holds it for all)
        timing = save_maps(args.save_maps, job, dict(zip(names, explainers)), splits, state)
    summary = {
        "folder": args.save_maps,
        "processes": state.num_processes,
        **timing.__dict__,
        "maps_per_second": timing.rows / timing.seconds if timing.seconds else None,
        "write_share": timing.write_seconds / timing.seconds if timing.seconds else None,
    }
    if state.is_main_process:
        rate = f"{summary['maps_per_second']:.1f} maps/s" if timing.rows else "nothing left to compute"
        share = f", writing {summary['write_share']:.1%} of the time" if timing.rows else ""
        print(f"maps: {timing.rows} rows for {timing.images} images in {args.save_maps} ({rate}{share})")
        if args.push_to_hub:
            print(f"pushed: {push_maps(args.save_maps, args.push_to_hub, args.hub_private_repo)}")
    return summary
