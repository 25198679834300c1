"""The explain module's command line, `python -m explain` (or `accelerate launch -m explain` for many processes):
its arguments, the inputs it reads (image files or a dataset split), the captions and figures it draws, and
`--save_maps`, which hands every image of the split(s) to `explain.maps_dataset`.

    python -m explain --model runs/quickstart/teacher --dataset_name breastmnist \
        --compare_with runs/quickstart/student --misclassified --out runs/quickstart/explain
    accelerate launch -m explain --model runs/quickstart/teacher --dataset_name breastmnist \
        --split test --methods gradcam,layercam --save_maps runs/quickstart/maps

Figures: overlay.png, methods.png, models.png (with --compare_with), misclassified.png (with --misclassified) and
index.json, which says what each file shows. The model wrapper itself is `explain.workflow.Explainer`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import HfArgumentParser

from explain.base import Explanation
from explain.maps_dataset import MapsJob, process_state, push_maps, save_maps
from explain.plots import display_images, misclassified_figure, overlay_figure, panel_grid, resize_maps
from explain.registry import class_agnostic
from explain.workflow import (
    Explainer,
    check_methods_fit,
    check_same_labels,
    chosen_methods,
    compute_dtype,
    label_set,
    label_text,
    predicted_multi_hot,
)
from pipelines.arguments import DataArguments
from pipelines.collate import ImageCollator, to_chw_uint8
from pipelines.errors import ConfigError, DataError
from pipelines.folders import check_image_file
from pipelines.io import atomic_save_figure, atomic_write_json, check_output_folder
from pipelines.loading import load_image_dataset
from pipelines.locks import run_folder_lock

SPLITS = ("train", "validation", "test")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
MAIN_METHOD = "gradcam"
AGNOSTIC_NOTE = "class-agnostic: the same map for every class"

logger = logging.getLogger(__name__)


@dataclass
class ExplainArguments:
    """What to explain and where to write the pictures (the dataset spec comes from `DataArguments`)."""

    model: str = field(metadata={"help": "Hub id or folder saved by save_pretrained (e.g. a finetune output_dir)."})
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
    n: int = field(default=8, metadata={"help": "Images per figure."})
    target_class: int | None = field(
        default=None,
        metadata={"help": "Explain this class index for every image instead of each image's predicted class."},
    )
    misclassified: bool = field(
        default=False, metadata={"help": "Also draw the split's misclassified images (needs a dataset)."}
    )
    out: str = field(default="runs/explain", metadata={"help": "Folder for the PNGs and index.json."})
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
    allow_pickle: bool = field(
        default=False,
        metadata={
            "help": "Accept pickled weights (pytorch_model.bin, loaded with weights_only=True) without safetensors."
        },
    )
    trust_remote_code: bool = field(default=False, metadata={"help": "Run code shipped with a Hub checkpoint."})
    head_fusion: str = field(default="mean", metadata={"help": "Attention rollout: fuse heads by mean, max or min."})
    discard_ratio: float = field(
        default=0.0, metadata={"help": "Attention rollout: share of the lowest attention weights dropped per layer."}
    )
    save_maps: str | None = field(
        default=None,
        metadata={
            "help": "Instead of figures, write every map of the split(s) (each method, --model and --compare_with) "
            "into this folder as a datasets.Dataset; a killed run resumes with the same arguments."
        },
    )
    shard_size: int = field(default=1024, metadata={"help": "--save_maps: images per Arrow shard."})
    push_to_hub: str | None = field(
        default=None, metadata={"help": "--save_maps: publish the finished dataset as this Hub dataset repo."}
    )
    hub_private: bool = field(default=True, metadata={"help": "--push_to_hub: make the dataset repo private."})

    def __post_init__(self) -> None:
        unknown = [split for split in self.splits if split not in SPLITS]
        if unknown or not self.splits:
            raise ConfigError(f"split is '{self.split}'; use one of {', '.join(SPLITS)}.")
        if len(self.splits) > 1 and not self.save_maps:
            raise ConfigError(f"split is '{self.split}'; the figures show one split (several need --save_maps).")
        if self.save_maps and self.images:
            raise ConfigError("--save_maps explains dataset splits; it cannot be used with --images.")
        if self.push_to_hub and not self.save_maps:
            raise ConfigError("--push_to_hub publishes a maps dataset; give --save_maps DIR with it.")
        if self.shard_size < 1:
            raise ConfigError(f"shard_size is {self.shard_size}; it must be at least 1.")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision is '{self.precision}'; use one of {', '.join(PRECISIONS)}.")
        if self.n < 1:
            raise ConfigError(f"n is {self.n}; it must be at least 1.")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size is {self.batch_size}; it must be at least 1.")
        if self.misclassified and self.images:
            raise ConfigError("--misclassified needs a labelled dataset split; it cannot be used with --images.")

    @property
    def splits(self) -> list[str]:
        return [split.strip() for split in self.split.split(",") if split.strip()]


def parse_arguments(argv: Sequence[str] | None = None) -> tuple[ExplainArguments, DataArguments | None]:
    """Parse the command line into `ExplainArguments` and, unless ``--images`` is given, `DataArguments`."""
    parser = HfArgumentParser([ExplainArguments, DataArguments], prog="python -m explain")
    namespace = parser.parse_args(argv)
    values = vars(namespace)
    explain_args = ExplainArguments(**{f.name: values[f.name] for f in fields(ExplainArguments)})
    if explain_args.images:
        return explain_args, None
    if not values.get("dataset_name") and not values.get("data_dir"):
        raise ConfigError(
            "Nothing to explain: give image files (--images a.png b.jpg) or a dataset (e.g. --dataset_name breastmnist)."
        )
    return explain_args, DataArguments(**{f.name: values[f.name] for f in fields(DataArguments)})


@dataclass
class Inputs:
    """The images to explain and what is known about them.

    Attributes:
        images: uint8 (B, C, H, W), or a list of uint8 (C, H, W) of different sizes.
        names: Where each image comes from (``test[12]``, or a file path as given).
        labels: int64 (B,) or multi-hot (B, L) true labels, or None for files.
        label_names: The dataset's label names, or None for files.
    """

    images: torch.Tensor | list[torch.Tensor]
    names: list[str]
    labels: torch.Tensor | None = None
    label_names: list[str] | None = None


def load_image_files(paths: Sequence[str], num_channels: int) -> Inputs:
    """Image files as uint8 tensors, converted to grey or RGB to match the model.

    Raises:
        DataError: a path that is missing, a folder, or not an image that decodes fully.
    """
    mode = "L" if num_channels == 1 else "RGB"
    images = []
    for path in paths:
        if Path(path).is_dir():
            raise DataError(
                f"--images {path} is a folder; give its image files (--images {path}/*.jpg), or explain it as a "
                f"dataset (--dataset_source folder --data_dir {path})."
            )
        if not Path(path).is_file():
            raise DataError(f"Image file {path} does not exist.")
        check_image_file(Path(path))
        images.append(to_chw_uint8({"path": str(path)}, mode))  # decoded as in training: upright, fully, or named
    shapes = {tuple(image.shape) for image in images}
    stacked = torch.stack(images) if len(shapes) == 1 else images
    # Paths as given: base names alone would make a/x.png and b/x.png the same entry of index.json.
    return Inputs(stacked, [str(path) for path in paths])


def first_files(paths: Sequence[str], n: int) -> list[str]:
    """The first `n` image files, saying on stderr how many are left out.

    A figure draws at most ``--n`` images, for files as for a dataset split: 40 files made an overlay strip
    8,280 pixels wide.
    """
    if len(paths) > n:
        logger.warning(
            "Explaining the first %d of %d image files; --n %d explains them all.", n, len(paths), len(paths)
        )
    return list(paths[:n])


def short_names(names: Sequence[str], width: int = 24) -> list[str]:
    """Names short enough to caption a panel: the fewest trailing path parts that still tell the images apart
    (``a/x.png`` and ``b/x.png``, not ``x.png`` twice), cut to their last `width` characters."""
    parts = [Path(name).parts or (name,) for name in names]
    for depth in range(1, max((len(part) for part in parts), default=1) + 1):
        shown = [str(Path(*part[-depth:])) for part in parts]
        if len(set(shown)) == len(set(names)):
            break
    return [name if len(name) <= width else "…" + name[-(width - 1) :] for name in shown]


def spread_over_classes(labels: np.ndarray, count: int) -> list[int]:
    """`count` indices taken in turn from each class (in index order), so every class appears when it can."""
    if labels.ndim > 1:  # multi-label: no single class to spread over
        return list(range(min(count, len(labels))))
    queues = [list(np.flatnonzero(labels == label)) for label in np.unique(labels)]
    chosen: list[int] = []
    while len(chosen) < min(count, len(labels)):
        for queue in queues:
            if queue and len(chosen) < count:
                chosen.append(int(queue.pop(0)))
    return sorted(chosen)


def load_split(data_args: DataArguments, split: str, model: nn.Module) -> tuple[Any, ImageCollator, list[str], bool]:
    """The dataset split, its collator, label names and whether it is multi-label; checks the model's label count."""
    splits, collator, label_names, multi_label = load_splits(data_args, [split], model)
    return splits[split], collator, label_names, multi_label


def load_splits(
    data_args: DataArguments, names: Sequence[str], model: nn.Module
) -> tuple[dict[str, Any], ImageCollator, list[str], bool]:
    """`load_split` for several splits of one dataset, loaded once."""
    data = load_image_dataset(data_args)
    num_labels = model.config.num_labels
    if data.num_labels != num_labels:
        raise DataError(
            f"The model has {num_labels} classes but the dataset has {data.num_labels} ({', '.join(data.label_names)}); "
            "explain it on the dataset it was trained for."
        )
    collator = ImageCollator(data.num_labels, data.multi_label, data_args.image_mode)
    return {name: data.dataset[name] for name in names}, collator, data.label_names, data.multi_label


def short_list(text: str, limit: int = 2) -> str:
    """A comma-separated label list cut to `limit` names (``"+3 more"``); the figures wrap it to fit a cell."""
    names = text.split(", ")
    return ", ".join(names[:limit]) + (f" +{len(names) - limit} more" if len(names) > limit else "")


def set_and_map(predicted_set: str, caption: str, key: str = "map") -> str:
    """A multi-label prediction in a caption: the predicted set shortened, then the label the map explains."""
    return f"{short_list(predicted_set)}\n{key}: {caption}"


def split_labels(split: Any, collator: ImageCollator) -> torch.Tensor:
    """Every label of a split: int64 (N,) classes, or multi-hot (N, L) for multi-label data (stored as lists)."""
    return collator.labels([{"label": label} for label in split["label"]])


def take(
    split: Any, collator: ImageCollator, indices: Sequence[int], split_name: str, label_names: list[str]
) -> Inputs:
    batch = collator([split[int(index)] for index in indices])
    return Inputs(batch["pixel_values"], [f"{split_name}[{index}]" for index in indices], batch["labels"], label_names)


def true_texts(inputs: Inputs) -> list[str] | None:
    """Each image's true label, or for multi-label data its comma-separated label set; None for image files."""
    if inputs.labels is None:
        return None
    if inputs.labels.ndim == 1:
        return [inputs.label_names[int(label)] for label in inputs.labels]
    return [label_set(row, inputs.label_names) for row in inputs.labels]


def row_labels(inputs: Inputs) -> list[str]:
    """Each image's short name (see `short_names`), with its true label (set, shortened) when it is known."""
    names = short_names(inputs.names)
    truths = true_texts(inputs)
    if truths is None:
        return names
    if inputs.labels.ndim > 1:
        truths = [short_list(text) for text in truths]
    return [f"{name}\ntrue: {true}" for name, true in zip(names, truths)]


def with_class(
    rows: Sequence[str],
    captions: Sequence[str],
    target: int | None,
    agnostic: bool,
    predicted_sets: Sequence[str] | None = None,
) -> list[str]:
    """Each row label followed by the class whose score the caption gives: the prediction, the class explained,
    or, under a class-agnostic map, only the target (the map does not explain it).

    For a multi-label model (`predicted_sets` given) the prediction is the set of labels, as misclassified.png
    shows it, and the caption names the one label the map explains (or, class-agnostic, the top-scoring one).
    """
    key = "pred" if target is None else "target" if agnostic else "map"
    if predicted_sets is None:
        return [f"{row}\n{key}: {caption}" for row, caption in zip(rows, captions)]
    key = ("top" if agnostic else "map") if key == "pred" else key
    return [
        f"{row}\npred: {set_and_map(predicted, caption, key)}"
        for row, caption, predicted in zip(rows, captions, predicted_sets)
    ]


def explained_class(id2label: dict[int, str], target: int | None) -> str:
    """What the class-specific maps explain, in words: ``predicted class`` or ``class malignant``."""
    return "predicted class" if target is None else f"class {label_text(id2label, target)}"


def methods_shown(methods: Sequence[str], explained: str) -> tuple[str, str]:
    """How methods.png describes its maps: (figure title note, index.json note), naming the class-agnostic ones."""
    agnostic = [method for method in methods if class_agnostic(method)]
    if not agnostic:
        return explained, f"maps for the {explained}"
    if len(agnostic) == len(methods):
        return "class-agnostic", f"all {AGNOSTIC_NOTE}"
    return (
        f"{explained}; class-agnostic columns marked",
        f"maps for the {explained}, except {', '.join(agnostic)} ({AGNOSTIC_NOTE})",
    )


def pick_device(name: str | None) -> torch.device:
    """The named device, or CUDA when available, else the CPU.

    Raises:
        ConfigError: a name torch does not know (such as 'gpu'), or a device this machine does not have.
    """
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:  # torch's message lists twenty device types; the user needs the two that matter
        raise ConfigError(f"device '{name}' is not a device torch knows; use cuda (an NVIDIA GPU) or cpu.") from None
    backend = getattr(torch, device.type, None)  # torch.cuda, torch.mps, torch.xpu: each says if it is there
    available = device.type == "cpu" or (hasattr(backend, "is_available") and backend.is_available())
    if available and device.type == "cuda" and device.index is not None:
        available = device.index < torch.cuda.device_count()
    if not available:
        usable = "cuda" if torch.cuda.is_available() else "cpu"
        raise ConfigError(f"device '{name}' is not available on this machine; use --device {usable}.")
    return device


def run_explain(args: ExplainArguments, data_args: DataArguments | None) -> dict[str, Any]:
    """Explain `args.n` images with every chosen method, draw the figures into `args.out`, and write index.json.

    Returns:
        The index written to ``index.json``: the inputs, and for each file what it shows.
    """
    device = pick_device(args.device)
    check_output_folder(args.out)
    options = {
        "target_layer": args.target_layer,
        "batch_size": args.batch_size,
        "head_fusion": args.head_fusion,
        "discard_ratio": args.discard_ratio,
    }
    loading = {"allow_pickle": args.allow_pickle, "trust_remote_code": args.trust_remote_code}
    explainer = Explainer(args.model, device, compute_dtype(args.precision, device), **loading, **options)
    methods = chosen_methods(args.methods, explainer.model)
    other = None
    if args.compare_with:  # loaded and checked now: a bad second model must not cost the first one's figures
        # Its own target layer, found by structure: a layer name given for the first model rarely exists in both.
        other = Explainer(
            args.compare_with, device, explainer.options["dtype"], **loading, **{**options, "target_layer": None}
        )
        check_same_labels(explainer, other)
    split = collator = None
    if args.images:
        inputs = load_image_files(first_files(args.images, args.n), explainer.model.config.num_channels)
    else:
        split, collator, label_names, _ = load_split(data_args, args.split, explainer.model)
        labels = split_labels(split, collator).numpy()
        inputs = take(split, collator, spread_over_classes(labels, args.n), args.split, label_names)
    out = Path(args.out)
    target = args.target_class  # None: each image's predicted class
    explained = explained_class(explainer.id2label, target)
    explanations = {method: explainer.explain(method, inputs.images, target) for method in methods}
    size = tuple(explanations[methods[0]].maps.shape[-2:])
    shown = display_images(inputs.images, size)
    predicted_sets = explainer.predicted_sets(inputs.images)
    index = _index_header(args, explainer, inputs, explanations[methods[0]], methods, predicted_sets)

    main = MAIN_METHOD if MAIN_METHOD in explanations else methods[0]
    captions = [explainer.caption(explanations[main], row) for row in range(len(inputs.names))]
    main_agnostic = class_agnostic(main)
    labels = with_class(row_labels(inputs), captions, target, main_agnostic, predicted_sets)
    if main_agnostic:  # its map is the same for every class: saying which class it explains would mislead
        title, shows = (
            f"{main} on {explainer.title} ({AGNOSTIC_NOTE})",
            "its class-agnostic map (the same for every class)",
        )
    else:
        title, shows = f"{main} on {explainer.title} ({explained})", f"its map for the {explained}"
    figure = overlay_figure(shown, explanations[main].maps.numpy(), labels, title, args.edges)
    _save(index, out, "overlay.png", figure, f"{main} overlays: each input above {shows}")

    title_note, shows = methods_shown(methods, explained)
    figure = panel_grid(
        shown,
        {
            method + ("\n(class-agnostic)" if class_agnostic(method) else ""): resize_maps(explanation.maps, size)
            for method, explanation in explanations.items()
        },
        labels,
        title=f"Methods on {explainer.title} ({title_note})",
        edges=args.edges,
    )
    _save(index, out, "methods.png", figure, f"images (rows) by methods (columns): {', '.join(methods)}; {shows}")

    if other is not None:
        _compare(args, index, out, explainer, other, inputs, shown, size)
    if args.misclassified:
        _misclassified(args, index, out, explainer, split, collator, inputs.label_names, size)
    atomic_write_json(out / "index.json", index)
    return index


def _index_header(
    args: ExplainArguments,
    explainer: Explainer,
    inputs: Inputs,
    first: Explanation,
    methods: list[str],
    predicted_sets: list[str] | None,
) -> dict[str, Any]:
    rows = []
    truths = true_texts(inputs)
    for row, name in enumerate(inputs.names):
        entry: dict[str, Any] = {"row": row, "image": name}
        if truths is not None:
            entry["true"] = truths[row]
        key = "predicted" if args.target_class is None else "explained"
        predicted_set = predicted_sets[row] if predicted_sets is not None else None
        rows.append({**entry, **explainer.prediction(first, row, key, predicted_set)})
    return {
        "model": args.model,
        "compare_with": args.compare_with,
        "inputs": _inputs_text(args),
        "methods": methods,
        "precision": {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[explainer.options["dtype"]],
        "images": rows,
        "files": [],
    }


def _inputs_text(args: ExplainArguments) -> str:
    if not args.images:
        return f"{args.split} split"
    if len(args.images) <= args.n:
        return "files"
    return f"the first {args.n} of {len(args.images)} files (--n {args.n})"


def _save(index: dict[str, Any], out: Path, name: str, figure: Any, shows: str, **details: Any) -> None:
    atomic_save_figure(figure, out / name)
    index["files"].append({"file": name, "shows": shows, **details})


def _compare(
    args: ExplainArguments,
    index: dict[str, Any],
    out: Path,
    explainer: Explainer,
    other: Explainer,
    inputs: Inputs,
    shown: np.ndarray,
    size: tuple[int, int],
) -> None:
    """Grad-CAM of both models on the same images, side by side; each map is scaled to 0-1 on its own."""
    panels, captions, predictions = {}, {}, {}
    for model in (explainer, other):
        explanation = model.explain(MAIN_METHOD, inputs.images, args.target_class)
        title = f"{model.title} ({model.model.config.model_type})"
        panels[title] = resize_maps(explanation.maps, size)
        captions[title] = [model.caption(explanation, row) for row in range(len(inputs.names))]
        key = "predicted" if args.target_class is None else "explained"
        sets = model.predicted_sets(inputs.images) or [None] * len(inputs.names)
        predictions[model.name] = [model.prediction(explanation, row, key, sets[row]) for row in range(len(sets))]
        if model.multi_label:
            captions[title] = [f"pred: {set_and_map(*pair)}" for pair in zip(sets, captions[title])]
    explained = explained_class(explainer.id2label, args.target_class)
    # Each map is min-max scaled to 0-1 on its own (`explain.base.scale_to_unit`): one colour bar, not one scale.
    title = f"Grad-CAM by model ({explained}; each map scaled to 0-1)"
    figure = panel_grid(shown, panels, row_labels(inputs), captions, title, args.edges)
    shows = f"images (rows) by models (columns): Grad-CAM of each model ({explained}), each map scaled to 0-1, one colour bar"
    _save(index, out, "models.png", figure, shows, predictions=predictions)


def _misclassified(
    args: ExplainArguments,
    index: dict[str, Any],
    out: Path,
    explainer: Explainer,
    split: Any,
    collator: ImageCollator,
    label_names: list[str],
    size: tuple[int, int],
) -> None:
    """The split's most confidently misclassified images, with Grad-CAM for the predicted and the true class."""
    logits = explainer.predict(split, collator, args.batch_size)
    labels = split_labels(split, collator)
    multi_label = labels.ndim > 1
    if multi_label:
        wrong = (predicted_multi_hot(logits) != labels.long()).any(dim=1)
        confidence = logits.sigmoid().amax(dim=1)
    else:
        labels = labels.reshape(-1)
        wrong = logits.argmax(dim=1) != labels
        confidence = logits.softmax(dim=1).amax(dim=1)
    index["misclassified"] = {"count": int(wrong.sum()), "of": len(labels)}
    candidates = torch.nonzero(wrong).flatten()
    if candidates.numel() == 0:  # no figure, so no entry in index["files"]: every entry there names a file
        logger.warning("No image of the %s split is misclassified: misclassified.png is not drawn.", args.split)
        return
    order = candidates[confidence[candidates].argsort(descending=True)][: args.n].tolist()
    inputs = take(split, collator, order, args.split, label_names)
    predicted = explainer.explain(MAIN_METHOD, inputs.images)
    true_maps, note = None, ""
    true_text = true_texts(inputs)
    predicted_sets = None
    if multi_label:  # from the logits that found them misclassified, so each set differs from its true one
        predicted_sets = [label_set(row, label_names) for row in predicted_multi_hot(logits[order])]
    else:
        true_maps = resize_maps(explainer.explain(MAIN_METHOD, inputs.images, inputs.labels).maps, size)
        if not true_maps.any():
            # Typical of two-class models, whose two logits' gradients are near opposites: a column of blank
            # panels would say nothing, so the title says it once.
            true_maps, note = None, "\nGrad-CAM finds no positive evidence for the true class in any of them"
    predicted_text = [explainer.caption(predicted, row) for row in range(len(order))]
    shown_true, shown_predicted = true_text, predicted_text
    if multi_label:  # label sets, shortened to fit beside the image; the map explains the top-scoring label
        shown_true = [short_list(text) for text in true_text]
        shown_predicted = [set_and_map(*pair) for pair in zip(predicted_sets, predicted_text)]
    figure = misclassified_figure(
        display_images(inputs.images, size),
        resize_maps(predicted.maps, size),
        true_maps,
        shown_true,
        shown_predicted,
        f"Misclassified {args.split} images ({int(wrong.sum())} of {len(labels)}), most confident first{note}",
        args.edges,
        inputs.names,
        "Grad-CAM: top-scoring label" if multi_label else "Grad-CAM: predicted class",
    )
    _save(
        index,
        out,
        "misclassified.png",
        figure,
        "misclassified images (rows), most confident first: input with true and predicted labels, "
        + ("Grad-CAM for the top-scoring label" if multi_label else "Grad-CAM for the predicted class")
        + (" and for the true class" if true_maps is not None else "")
        + (" (none for the true class: Grad-CAM finds no positive evidence for it)" if note else ""),
        images=[
            {"image": name, "true": true, **explainer.prediction(predicted, row, predicted_set=predicted_set)}
            for row, (name, true, predicted_set) in enumerate(
                zip(inputs.names, true_text, predicted_sets or [None] * len(order))
            )
        ],
    )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """`python -m explain`: draw the figures into ``--out`` and print what each file shows.

    Returns:
        The index written to ``index.json``.
    """
    explain_args, data_args = parse_arguments(argv)
    if explain_args.save_maps:
        return save_maps_of_splits(explain_args, data_args)
    with run_folder_lock(explain_args.out):  # one writer per output folder
        index = run_explain(explain_args, data_args)
    for entry in index["files"]:
        print(f"{entry['file']}: {entry['shows']}")
    print(f"index: {explain_args.out}/index.json")
    return index


def save_maps_of_splits(args: ExplainArguments, data_args: DataArguments) -> dict[str, Any]:
    """`--save_maps DIR`: every image of the chosen split(s), explained by every chosen method of every model, as a
    maps dataset in DIR (see `explain.maps_dataset`); each process of an `accelerate launch` run writes its shards.

    Returns:
        The run's summary: folder, rows, images, processes, seconds, maps/s and the share of time spent writing.
    """
    check_output_folder(args.save_maps)
    state = process_state(cpu=args.device == "cpu")
    # One process: the device asked for. Launched: the one accelerate gave this process.
    device = pick_device(args.device) if state.num_processes == 1 else state.device
    options = {"target_layer": args.target_layer, "batch_size": args.batch_size}
    options |= {"head_fusion": args.head_fusion, "discard_ratio": args.discard_ratio}
    loading = {"allow_pickle": args.allow_pickle, "trust_remote_code": args.trust_remote_code}
    dtype = compute_dtype(args.precision, device)
    paths = [args.model, *([args.compare_with] if args.compare_with else [])]
    explainers = [Explainer(path, device, dtype, **loading, **options) for path in paths[:1]]
    # The second model finds its own target layer: a layer name given for the first rarely exists in both.
    explainers += [Explainer(path, device, dtype, **loading, **{**options, "target_layer": None}) for path in paths[1:]]
    for other in explainers[1:]:
        check_same_labels(explainers[0], other)
    titles = [explainer.title for explainer in explainers]
    names = titles if len(set(titles)) == len(titles) else paths
    methods = chosen_methods(args.methods, explainers[0].model)
    check_methods_fit(methods, {name: explainer.model for name, explainer in zip(names, explainers)})
    splits, collator, _, _ = load_splits(data_args, args.splits, explainers[0].model)
    job = MapsJob(
        models=dict(zip(names, paths)),
        methods=methods,
        splits=args.splits,
        target_class=args.target_class,
        shard_size=args.shard_size,
        batch_size=args.batch_size,
        precision=args.precision,
        options={key: options[key] for key in ("target_layer", "head_fusion", "discard_ratio")},
        data=asdict(data_args),
    )
    with run_folder_lock(args.save_maps):  # one run per maps folder (the main process holds it for all)
        timing = save_maps(args.save_maps, job, dict(zip(names, explainers)), splits, collator, state)
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
            print(f"pushed: {push_maps(args.save_maps, args.push_to_hub, args.hub_private)}")
    return summary
