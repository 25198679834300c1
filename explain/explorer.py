"""The explorer: go through a split's images with several models (a teacher and its students) side by side, each
model's top-k probabilities and each method's map for the chosen image, with that image's agreement; the image can be
corrupted first (MedMNIST-C's corruptions, `pipelines.corruptions`, at severity 1-5), and every model is run again on
the same corrupted image.

What the page shows is computed here (load and check the models, order the gallery, probabilities, overlays,
agreement); `scripts/app.py` parses the command line (or, on a Hugging Face Space, environment variables) and wires
these functions into a Gradio page.
"""

from __future__ import annotations

import math
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from explain.explainer import Explainer, check_methods_fit
from explain.inputs import load_image_files, load_split
from explain.metrics.agreement import blank_maps, rank_correlation, top_fraction_iou
from explain.plots import blend_overlay, display_images, resize_maps
from explain.registry import TRANSFORMER_METHOD, canonical_name, class_agnostic, default_method, methods_for
from pipelines.arguments import DataArguments, ModelLoadingArguments
from pipelines.corruptions import (
    FAMILIES,
    check_family,
    check_severity,
    corrupt,
    corruption_choices,
    corruption_dataset,
    parameter_dataset,
    severity_parameter,
)
from pipelines.errors import ConfigError, DataError
from pipelines.runtime import (
    check_precision,
    compute_dtype,
    pick_device,
)
from pipelines.splits import check_split

MAX_MODELS = 4  # model columns are laid out when the page is built; four fit side by side on a laptop screen
DISPLAY_SIZE = (224, 224)  # every overlay at one size, whatever each model's input resolution
PREDICTED = "predicted (first model)"
NO_CORRUPTION = "none"
CORRUPTION_SEED = 0  # an image's draws (noise, motion) come from this seed and its index in the split
VIEWS = (
    "all images",
    "misclassified by any model",
    "models disagree",
    "lowest map agreement first",
    "forgotten by a model first",
)

# What the page offers by default ('suggested'), the models' default method first: for vision transformers the
# attention methods (class-specific and not) beside Grad-CAM; for other models the CAM family.
SUGGESTED_TRANSFORMER = tuple(
    dict.fromkeys((TRANSFORMER_METHOD, "gradient_rollout", "legrad", "attention_rollout", "gradcam", "layercam"))
)
SUGGESTED_CNN = ("gradcam", "gradcam++", "layercam", "eigencam")


@dataclass
class ImageSummary:
    """What the gallery knows about one image of the split.

    Attributes:
        index: The image's row in the split.
        true: Its true class index.
        predicted: Each model's predicted class index, in the order the models were given.
        agreement: The lowest map rank correlation of a model with the first model (at the first model's
            class); NaN with one model, or when a map is blank (it ranks nothing).
        confidence: The first model's probability of its predicted class.
    """

    index: int
    true: int
    predicted: list[int]
    agreement: float
    confidence: float = math.nan

    @property
    def misclassified(self) -> bool:
        return any(prediction != self.true for prediction in self.predicted)

    @property
    def disagree(self) -> bool:
        return len(set(self.predicted)) > 1

    @property
    def forgotten_by(self) -> list[int]:
        """The models (by position, after the first) that get wrong what the first model gets right: negative
        flips, what a shrunk model forgot of its original."""
        if self.predicted[0] != self.true:
            return []
        return [model for model, prediction in enumerate(self.predicted[1:], start=1) if prediction != self.true]

    @property
    def learnt_by(self) -> list[int]:
        """The models that get right what the first model gets wrong (positive flips)."""
        if self.predicted[0] == self.true:
            return []
        return [model for model, prediction in enumerate(self.predicted[1:], start=1) if prediction == self.true]


@dataclass
class ImageView:
    """Everything the page shows for one image: per model its top-k probabilities and overlay, then agreement."""

    probabilities: list[dict[str, float]]
    overlays: list[np.ndarray]
    agreement: str
    blank: list[bool] = field(default_factory=list)  # maps with no evidence at all (Grad-CAM's all-zero map)
    image: np.ndarray | None = None  # the image as every model saw it (corrupted or not), at display size


@dataclass
class Explorer:
    """The models and the split's images, with each image's summary computed once at start-up.

    Attributes:
        explainers: The models, the first one the reference (the teacher).
        images: uint8 (N, C, H, W), or a list of uint8 (C, H, W) of different sizes.
        labels: int64 (N,) true classes.
        methods: The methods offered in the page (each fits every model).
        top_k: How many classes the probability bars show.
        corruptions: The corruptions offered (each applies to the images), the dataset's MedMNIST-C list first.
        corruption_dataset: The MedMNIST-C dataset whose parameters they take (None: the fallback's).
    """

    explainers: list[Explainer]
    images: torch.Tensor | list[torch.Tensor]
    labels: torch.Tensor
    methods: list[str]
    top_k: int = 3
    summaries: list[ImageSummary] = field(default_factory=list)
    corruptions: list[str] = field(default_factory=list)
    corruption_dataset: str | None = None

    def __post_init__(self) -> None:
        if not self.summaries:
            self.summaries = summarise(self.explainers, self.images, self.labels)

    @property
    def label_names(self) -> list[str]:
        return self.explainers[0].label_names


def load_explainers(names: Sequence[str], device: torch.device, dtype: torch.dtype) -> list[Explainer]:
    """The named models (folders or Hub ids), checked to be image classifiers with one label set.

    Raises:
        ConfigError: no model, more than `MAX_MODELS`, or models whose labels differ.
        DataError: a folder that is not an image classifier (from `pipelines.models.load_classifier`).
    """
    names = [name for name in names if name.strip()]
    if not names:
        raise ConfigError("No model given; name one or more model folders or Hub ids.")
    if len(names) > MAX_MODELS:
        raise ConfigError(f"{len(names)} models given; the explorer shows at most {MAX_MODELS} side by side.")
    explainers = [Explainer(name, device, dtype) for name in names]
    check_label_sets(explainers)
    for explainer in explainers:
        if explainer.multi_label:
            raise ConfigError(f"{explainer.title} is a multi-label model; the explorer compares single-label models.")
    return explainers


def check_label_sets(explainers: Sequence[Explainer]) -> None:
    """Refuse models whose classes differ: their probabilities and maps for one class would not be comparable.

    Raises:
        ConfigError: naming the first model that differs, its labels and the first model's.
    """
    first = explainers[0]
    for other in explainers[1:]:
        if other.label_names != first.label_names:
            raise ConfigError(
                f"{other.title} has labels {other.label_names} but {first.title} has {first.label_names}; "
                "the explorer compares models with the same labels in the same order."
            )


def check_dataset_labels(explainers: Sequence[Explainer], label_names: Sequence[str]) -> None:
    """Refuse a dataset with another number of classes than the models (as `python -m explain` does).

    Raises:
        DataError: naming both counts.
    """
    count = explainers[0].model.config.num_labels
    if count != len(label_names):
        raise DataError(
            f"The models have {count} classes but the dataset has {len(label_names)} ({', '.join(label_names)}); "
            "explore them on the dataset they were trained for."
        )


def shared_methods(explainers: Sequence[Explainer], spec: str) -> list[str]:
    """The methods to offer: 'suggested' a few by the models' kind (`SUGGESTED_TRANSFORMER` or `SUGGESTED_CNN`), 'all'
    those that fit every model (registry order), else the named ones.

    Raises:
        ConfigError: an unknown method, or one that does not fit a model.
    """
    if spec.strip().lower() == "suggested":
        models = [explainer.model for explainer in explainers]
        return list(SUGGESTED_TRANSFORMER if default_method(*models) == TRANSFORMER_METHOD else SUGGESTED_CNN)
    if spec.strip().lower() == "all":
        fitting = [set(methods_for(explainer.model)) for explainer in explainers]
        return [method for method in methods_for(explainers[0].model) if all(method in fit for fit in fitting)]
    methods = list(dict.fromkeys(canonical_name(name) for name in spec.split(",") if name.strip()))
    if not methods:
        raise ConfigError("methods is empty; give e.g. gradcam,layercam or 'all'.")
    check_methods_fit(methods, {explainer.title: explainer.model for explainer in explainers})
    return methods


def summarise(
    explainers: Sequence[Explainer], images: torch.Tensor | list[torch.Tensor], labels: torch.Tensor
) -> list[ImageSummary]:
    """Each image's predictions and its lowest map agreement with the first model (see `ImageSummary`), by the
    models' default method (`explain.registry.default_method`)."""
    logits = [explainer.predict_batch(images) for explainer in explainers]  # each (N, L)
    predicted = [values.argmax(dim=1) for values in logits]
    confidence = logits[0].softmax(dim=1).amax(dim=1)
    targets = predicted[0]
    worst = torch.full((len(labels),), math.nan)
    if len(explainers) > 1:
        method = default_method(*(explainer.model for explainer in explainers))
        reference = explainers[0].explain(method, images, targets).maps
        for explainer in explainers[1:]:
            maps = explainer.explain(method, images, targets).maps
            correlation = rank_correlation(reference, maps)
            correlation[blank_maps(reference) | blank_maps(maps)] = math.nan
            worst = torch.where(worst.isnan() | (correlation < worst), correlation, worst)
    return [
        ImageSummary(
            index, int(labels[index]), [int(p[index]) for p in predicted], float(worst[index]), float(confidence[index])
        )
        for index in range(len(labels))
    ]


def gallery_order(summaries: Sequence[ImageSummary], view: str) -> list[int]:
    """The split's image indices the gallery shows for `view` (one of `VIEWS`), in the order it shows them.

    'lowest map agreement first' puts images without a figure (a blank map, or one model) last.

    Raises:
        ConfigError: an unknown view.
    """
    if view == VIEWS[0]:
        return [summary.index for summary in summaries]
    if view == VIEWS[1]:
        return [summary.index for summary in summaries if summary.misclassified]
    if view == VIEWS[2]:
        return [summary.index for summary in summaries if summary.disagree]
    if view == VIEWS[3]:
        ranked = sorted(summaries, key=lambda s: (math.isnan(s.agreement), s.agreement, s.index))
        return [summary.index for summary in ranked]
    if view == VIEWS[4]:
        forgotten = sorted((s for s in summaries if s.forgotten_by), key=lambda s: (-s.confidence, s.index))
        return [summary.index for summary in forgotten] + [s.index for s in summaries if not s.forgotten_by]
    raise ConfigError(f"Unknown view '{view}'; choose one of: {', '.join(VIEWS)}.")


def gallery_items(explorer: Explorer, order: Sequence[int]) -> list[tuple[np.ndarray, str]]:
    """(image, caption) pairs for the gallery: the image at display size, its index, true and predicted labels, and
    the flip between the first model and each other one, named ("forgotten by student")."""
    names = explorer.label_names
    titles = [explainer.title for explainer in explorer.explainers]
    items = []
    for index in order:
        summary = explorer.summaries[index]
        predicted = " / ".join(names[p] for p in summary.predicted)
        caption = f"#{index} true: {names[summary.true]} | pred: {predicted}"
        if summary.forgotten_by:
            caption += " | forgotten by " + ", ".join(titles[model] for model in summary.forgotten_by)
        if summary.learnt_by:
            caption += " | learnt by " + ", ".join(titles[model] for model in summary.learnt_by)
        shown = display_images([explorer.images[index]], DISPLAY_SIZE)[0]  # (H, W, C)
        items.append((np.repeat(shown, 3 // shown.shape[2], axis=2), caption))  # grey as RGB: PIL takes no (H, W, 1)
    return items


def top_probabilities(explainer: Explainer, image: torch.Tensor, k: int) -> dict[str, float]:
    """The model's `k` most probable classes for one uint8 (C, H, W) image, with their softmax probabilities."""
    probabilities = explainer.predict_batch(image[None]).softmax(dim=1)[0]  # (L,)
    values, indices = probabilities.topk(min(k, probabilities.numel()))
    return {explainer.label_names[int(i)]: round(float(v), 4) for v, i in zip(values, indices)}


def target_index(explorer: Explorer, image: torch.Tensor, class_name: str) -> int:
    """The class every model's map explains: the named class, or the first model's prediction (one class for all,
    so that the maps and their agreement are about the same thing).

    Raises:
        ConfigError: a class name the models do not have.
    """
    if class_name == PREDICTED:
        return int(explorer.explainers[0].predict_batch(image[None]).argmax(dim=1)[0])
    if class_name not in explorer.label_names:
        raise ConfigError(f"Unknown class '{class_name}'; choose one of: {', '.join(explorer.label_names)}.")
    return explorer.label_names.index(class_name)


def overlay(image: torch.Tensor, maps: torch.Tensor, opacity: float) -> np.ndarray:
    """One (1, h, w) map in [0, 1] over its uint8 (C, H, W) image, both at `DISPLAY_SIZE`: uint8 (224, 224, 3)."""
    shown = display_images([image], DISPLAY_SIZE)[0]
    return blend_overlay(shown, resize_maps(maps, DISPLAY_SIZE)[0], opacity)


def agreement_markdown(titles: Sequence[str], maps: Sequence[torch.Tensor], method: str) -> str:
    """A Markdown table of each model's map against the first model's: rank correlation and top-10% IoU.

    Args:
        titles: The models' names, the first the reference.
        maps: Each model's (1, H, W) map of the image.
        method: The method's name, for the heading.
    """
    if len(maps) < 2:
        return "One model: no agreement to show."
    rows = [f"| model | {method} rank correlation with {titles[0]} | top-10% IoU |", "|---|---|---|"]
    for title, model_maps in zip(titles[1:], maps[1:]):
        if bool(blank_maps(maps[0]) | blank_maps(model_maps)):
            rows.append(f"| {title} | n/a (blank map) | n/a |")
            continue
        correlation = float(rank_correlation(maps[0], model_maps)[0])
        iou = float(top_fraction_iou(maps[0], model_maps)[0])
        rows.append(f"| {title} | {correlation:.3f} | {iou:.3f} |")
    return "\n".join(rows)


def corrupted_image(
    explorer: Explorer, image: torch.Tensor, corruption: str, severity: float, row: int
) -> tuple[torch.Tensor, str]:
    """The uint8 (C, H, W) image under `corruption` at `severity` (the image itself for 'none'), its draws seeded by
    `row` (its index in the split), and a sentence saying what was done.

    Raises:
        ConfigError: an unknown corruption, one that does not apply to the image or is not offered, or a severity
            outside 1-5.
    """
    if corruption == NO_CORRUPTION:
        return image, ""
    channels = int(image.shape[0])
    check_family(corruption, channels)
    if corruption not in explorer.corruptions:
        raise ConfigError(
            f"Corruption '{corruption}' is not offered here; choose none or one of: {', '.join(explorer.corruptions)}."
        )
    severity = check_severity(severity, lowest=1)
    dataset = explorer.corruption_dataset
    corrupted = corrupt(image[None], corruption, severity, dataset, CORRUPTION_SEED, [row])[0]
    parameter = severity_parameter(corruption, severity, dataset, channels)
    source = parameter_dataset(corruption, dataset, channels)
    note = (
        f"Every model sees the image corrupted by {corruption} at severity {severity} "
        f"({FAMILIES[corruption].text} {parameter}, MedMNIST-C's for {source})."
    )
    return corrupted, note


def view_image(
    explorer: Explorer,
    image: torch.Tensor,
    method: str,
    class_name: str,
    opacity: float,
    corruption: str = NO_CORRUPTION,
    severity: float = 3,
    row: int = 0,
) -> ImageView:
    """Top-k probabilities, overlays and agreement of every model for one uint8 (C, H, W) image, corrupted first by
    `corruption` at `severity` (see `corrupted_image`) unless it is 'none'.

    Raises:
        ConfigError: a method not offered, a class the models do not have, an opacity outside [0, 1], or a corruption
            or severity `corrupted_image` refuses.
    """
    method = canonical_name(method)
    if method not in explorer.methods:
        raise ConfigError(f"Method '{method}' is not offered here; choose one of: {', '.join(explorer.methods)}.")
    if not 0.0 <= opacity <= 1.0:
        raise ConfigError(f"opacity is {opacity}; it must lie in [0, 1].")
    image, note = corrupted_image(explorer, image, corruption, severity, row)
    target = torch.tensor([target_index(explorer, image, class_name)])
    maps = [explainer.explain(method, image[None], target).maps for explainer in explorer.explainers]
    heading = method + (" (class-agnostic: the same map for every class)" if class_agnostic(method) else "")
    titles = [explainer.title for explainer in explorer.explainers]
    blank = [bool(blank_maps(model_maps)[0]) for model_maps in maps]
    agreement = agreement_markdown(titles, maps, heading)
    if any(blank):  # an all-zero map looks like a cold one: say it holds no evidence for the class at all
        agreement += "\n\nNo evidence for this class (blank map): " + ", ".join(t for t, b in zip(titles, blank) if b)
    if note:
        agreement += "\n\n" + note
    shown = display_images([image], DISPLAY_SIZE)[0]
    return ImageView(
        [top_probabilities(explainer, image, explorer.top_k) for explainer in explorer.explainers],
        [overlay(image, model_maps, opacity) for model_maps in maps],
        agreement,
        blank,
        np.repeat(shown, 3 // shown.shape[2], axis=2),
    )


def read_upload(path: str, num_channels: int) -> torch.Tensor:
    """An uploaded file as a uint8 (C, H, W) image, grey or RGB as the first model takes.

    Raises:
        DataError: a file that is missing or cannot be decoded as an image.
    """
    try:
        return load_image_files([path], num_channels).images[0]
    except DataError:  # its sentence names the server's upload cache and says to fix a folder
        raise DataError(f"The uploaded file {Path(path).name} cannot be decoded as an image.") from None


def chosen_image(explorer: Explorer, index: float | None, upload: str | None) -> torch.Tensor:
    """The uploaded image when there is one, else the split's image at `index`.

    Raises:
        ConfigError: no image chosen, or an index outside the split.
    """
    if upload:
        return read_upload(upload, explorer.explainers[0].model.config.num_channels)
    if index is None:
        raise ConfigError("No image chosen: pick one in the gallery or upload one.")
    if not float(index).is_integer() or not 0 <= int(index) < len(explorer.labels):
        raise ConfigError(f"Image index {index} is not in the split; use 0 to {len(explorer.labels) - 1}.")
    return explorer.images[int(index)]


class Session:
    """The explorer the page currently shows, and how to load other models over the same images.

    One per server: a local tool (or a Space) shows one set of models to whoever opens it.
    """

    def __init__(self, explorer: Explorer, device: torch.device, dtype: torch.dtype, methods_spec: str) -> None:
        self.explorer = explorer
        self.device, self.dtype, self.methods_spec = device, dtype, methods_spec

    def load(self, names: Sequence[str]) -> Explorer:
        """Replace the models; on bad input the current ones stay (the error says why)."""
        explainers = load_explainers(names, self.device, self.dtype)
        check_dataset_labels(explainers, self.explorer.label_names)
        if explainers[0].label_names != self.explorer.label_names:
            check_label_sets([self.explorer.explainers[0], explainers[0]])
        methods = shared_methods(explainers, self.methods_spec)
        old = self.explorer
        self.explorer = Explorer(
            explainers,
            old.images,
            old.labels,
            methods,
            old.top_k,
            corruptions=old.corruptions,
            corruption_dataset=old.corruption_dataset,
        )
        return self.explorer


@dataclass
class AppArguments(ModelLoadingArguments):
    """Which models to compare and where to serve the page (the dataset spec comes from `DataArguments`)."""

    models: list[str] = field(metadata={"help": "Model folders or Hub ids, the reference (teacher) first."})
    split: str = field(default="test", metadata={"help": "Dataset split to explore: train, validation or test."})
    max_images: int = field(default=64, metadata={"help": "Explore the split's first this many images."})
    methods: str = field(
        default="suggested",
        metadata={
            "help": "Comma-separated methods offered in the page; 'suggested': the models' default method first and a "
            "few others that fit them all; 'all': every method that fits every model."
        },
    )
    top_k: int = field(default=3, metadata={"help": "Classes shown in each model's probability bars."})
    host: str = field(default="127.0.0.1", metadata={"help": "Address to serve on (0.0.0.0 on a Space)."})
    port: int | None = field(default=None, metadata={"help": "Port; default: gradio's (7860, or the next free)."})
    precision: str = field(default="fp32", metadata={"help": "Compute dtype: auto, fp32, bf16 or fp16."})
    device: str | None = field(default=None, metadata={"help": "Device (cuda, cpu); default: cuda when available."})

    def __post_init__(self) -> None:
        check_split(self.split)
        check_precision(self.precision)
        if self.max_images < 1 or self.top_k < 1:
            raise ConfigError("max_images and top_k must be at least 1.")


SPACE_ARGS = "EXPLORER_ARGS"


def command_line(argv: Sequence[str], environ: Mapping[str, str]) -> list[str]:
    """The arguments to parse: `argv`, or, run without any (as a Hugging Face Space runs its app file), the
    command line in the `SPACE_ARGS` variable, served on GRADIO_SERVER_NAME (Spaces set it to 0.0.0.0).

    Raises:
        ConfigError: neither arguments nor the variable.
    """
    if argv:
        return list(argv)
    if not environ.get(SPACE_ARGS, "").strip():
        raise ConfigError(
            f"No models given: run with --models A B ... and a dataset, or set {SPACE_ARGS} to that command line."
        )
    return [*shlex.split(environ[SPACE_ARGS]), "--host", environ.get("GRADIO_SERVER_NAME", "0.0.0.0")]


def start_session(args: AppArguments, data_args: DataArguments) -> Session:
    """Load and check the models, read the split's first `max_images` images and summarise them.

    Raises:
        ConfigError, DataError: bad models, labels that differ, or a dataset that does not fit the models.
    """
    device = pick_device(args.device)
    dtype = compute_dtype(args.precision, device)
    explainers = load_explainers(args.models, device, dtype)
    methods = shared_methods(explainers, args.methods)
    split = load_split(data_args, args.split, explainers[0].model)
    if split.multi_label:
        raise ConfigError("The dataset is multi-label; the explorer compares single-label models.")
    check_dataset_labels(explainers, split.label_names)
    inputs = split.take(range(min(args.max_images, len(split.rows))))
    dataset = corruption_dataset(data_args.dataset_source, data_args.dataset_name)
    channels = int(inputs.images[0].shape[0])
    explorer = Explorer(
        explainers,
        inputs.images,
        inputs.labels.reshape(-1),
        methods,
        args.top_k,
        corruptions=corruption_choices(dataset, channels),
        corruption_dataset=dataset,
    )
    return Session(explorer, device, dtype, args.methods)
