"""Classification numbers beyond ACC/AUC/F1: per-class precision and recall, calibration, ROC curves."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sklearn.metrics import precision_recall_fscore_support, roc_curve

from pipelines.errors import ConfigError
from pipelines.runtime import check_precision
from trainers.metrics import classification_metrics, scores_from_logits
from trainers.reporting import predicted_classes


@dataclass
class Calibration:
    """Expected calibration error and the reliability diagram's bins (Guo et al., 2017, "On Calibration of
    Modern Neural Networks": equal-width confidence bins, ECE = sum over bins of |accuracy - confidence|
    weighted by the share of predictions in the bin)."""

    ece: float
    bin_edges: np.ndarray  # (M + 1,)
    bin_confidence: np.ndarray  # (M,) mean confidence per bin, NaN when empty
    bin_accuracy: np.ndarray  # (M,)
    bin_count: np.ndarray  # (M,)


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> Calibration:
    """ECE of predictions with `confidence` (N,) in [0, 1] and `correct` (N,) 0/1."""
    confidence, correct = np.asarray(confidence, dtype=np.float64), np.asarray(correct, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    # Bins are (low, high]; a confidence of exactly 0 joins the first bin.
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    count = np.bincount(which, minlength=bins)
    with np.errstate(invalid="ignore"):
        mean_confidence = np.bincount(which, weights=confidence, minlength=bins) / count
        accuracy = np.bincount(which, weights=correct, minlength=bins) / count
    gaps = np.where(count > 0, np.abs(accuracy - mean_confidence), 0.0)
    ece = float((gaps * count).sum() / max(len(confidence), 1))
    return Calibration(ece, edges, mean_confidence, accuracy, count)


def calibration_of(logits: np.ndarray, labels: np.ndarray, multi_label: bool, bins: int = 15) -> Calibration:
    """Single-label: confidence of the predicted class. Multi-label: every (image, label) probability, with
    'correct' meaning the label is present (a calibrated 0.7 is right 70% of the time)."""
    scores = scores_from_logits(logits, multi_label)
    if multi_label:
        return expected_calibration_error(scores.ravel(), np.asarray(labels).ravel(), bins)
    predicted = scores.argmax(axis=1)
    return expected_calibration_error(scores.max(axis=1), predicted == np.asarray(labels), bins)


def per_class_precision_recall(
    logits: np.ndarray, labels: np.ndarray, multi_label: bool, label_names: list[str]
) -> dict[str, dict[str, float]]:
    """{class name: {"precision", "recall", "support"}} at the same decision rule as ACC."""
    predicted = predicted_classes(np.asarray(logits), multi_label)
    labels = np.asarray(labels).astype(np.int64)
    indices = None if multi_label else list(range(len(label_names)))
    precision, recall, _, support = precision_recall_fscore_support(
        labels, predicted, labels=indices, average=None, zero_division=0
    )
    return {
        name: {"precision": float(p), "recall": float(r), "support": int(s)}
        for name, p, r, s in zip(label_names, precision, recall, support)
    }


def roc_curves(logits: np.ndarray, labels: np.ndarray, multi_label: bool, label_names: list[str]) -> dict[str, tuple]:
    """{curve name: (false positive rates, true positive rates)}: the positive class for a binary task, one
    vs rest per class for multi-class, one per label for multi-label; classes absent from `labels` are skipped."""
    scores = scores_from_logits(logits, multi_label)
    labels = np.asarray(labels).astype(np.int64)
    truth = labels if multi_label else (labels[:, None] == np.arange(scores.shape[1]))
    columns = [scores.shape[1] - 1] if (not multi_label and scores.shape[1] == 2) else range(scores.shape[1])
    curves = {}
    for column in columns:
        if 0 < truth[:, column].sum() < len(truth):
            false_positive, true_positive, _ = roc_curve(truth[:, column], scores[:, column])
            curves[label_names[column]] = (false_positive, true_positive)
    return curves


def classification_summary(
    logits: np.ndarray, labels: np.ndarray, multi_label: bool, label_names: list[str]
) -> dict[str, object]:
    """Everything the report says about one model's predictions, as plain numbers."""
    calibration = calibration_of(logits, labels, multi_label)
    return {
        **classification_metrics(logits, labels, multi_label),
        "ece": calibration.ece,
        "per_class": per_class_precision_recall(logits, labels, multi_label, label_names),
    }


INSERTION_STARTS = ("blurred", "removed")


@dataclass
class EvaluateArguments:
    """What scripts/report.py compares and how (the dataset spec comes from `DataArguments`)."""

    models: list[str] = field(
        default_factory=list, metadata={"help": "Folders or Hub ids; the first is the reference (e.g. the teacher)."}
    )
    split: str = field(default="test", metadata={"help": "Split to evaluate: train, validation or test."})
    out: str = field(default="report", metadata={"help": "Folder for index.md, metrics.json and the figures."})
    methods: str = field(default="gradcam", metadata={"help": "Comma-separated explanation methods to score."})
    steps: int = field(default=10, metadata={"help": "K, the steps of the deletion and insertion curves (>= 2)."})
    explain_images: str = field(
        default="256",
        metadata={
            "help": "Images of the split used for explanation numbers: a number (a seeded sample of that many) or "
            "'all' (every image of the split, in order; run under accelerate launch to share them among processes)."
        },
    )
    random_maps: int = field(
        default=8, metadata={"help": "R, random maps per image that each method's maps are tested against (>= 1)."}
    )
    random_steps: int = field(
        default=5, metadata={"help": "Curve steps for the paired test against random maps (>= 2); fewer than K."}
    )
    paired_images: int = field(
        default=128, metadata={"help": "Explained images that the paired test and ROAD use (evenly spread)."}
    )
    road_fractions: str = field(
        default="0.2,0.5,0.8", metadata={"help": "Comma-separated shares of pixels ROAD removes, each in (0, 1)."}
    )
    insertion_start: str = field(
        default="blurred",
        metadata={
            "help": "What insertion starts from: 'blurred' (a Gaussian blur, RISE) or 'removed' (every pixel removed, "
            "deletion's end). Pick 'removed' where a blur leaves the prediction unchanged (small or upsampled images)."
        },
    )
    sample_images: int = field(default=4, metadata={"help": "Images shown with each model's probabilities."})
    top_fraction: float = field(default=0.1, metadata={"help": "Share of top pixels compared by the overlap (IoU)."})
    batch_size: int = field(default=64, metadata={"help": "Images per forward pass."})
    latency_repeats: int = field(default=20, metadata={"help": "Timed repeats per latency figure (median reported)."})
    precision: str = field(default="auto", metadata={"help": "auto (bf16 on a GPU that has it), fp32, bf16 or fp16."})
    device: str | None = field(default=None, metadata={"help": "cuda or cpu; default: cuda when available."})
    allow_label_mismatch: bool = field(
        default=False, metadata={"help": "Compare models with different labels on the labels they share."}
    )
    model_card: str | None = field(
        default=None, metadata={"help": "A model folder whose README.md (model card) gets the report's tables."}
    )
    seed: int = field(default=0, metadata={"help": "Seed for picking images and for random baselines."})
    maps: str | None = field(
        default=None,
        metadata={
            "help": "A maps dataset of these models on this split (python -m explain --save_maps): faithfulness and "
            "the randomisation check read each model's maps from it instead of computing them."
        },
    )
    allow_pickle: bool = field(
        default=False,
        metadata={
            "help": "Accept pickled weights (pytorch_model.bin, loaded with weights_only=True) without safetensors."
        },
    )
    trust_remote_code: bool = field(default=False, metadata={"help": "Run code shipped with a Hub checkpoint."})

    def __post_init__(self) -> None:
        if not self.models:
            raise ConfigError("Give the models to compare: --models teacher_folder student_folder ...")
        check_precision(self.precision)
        if self.steps < 2:
            raise ConfigError(f"steps is {self.steps}; deletion and insertion curves need K >= 2.")
        if self.random_steps < 2:
            raise ConfigError(f"random_steps is {self.random_steps}; the random maps' curves need at least 2 steps.")
        if self.split not in ("train", "validation", "test"):
            raise ConfigError(f"split is '{self.split}'; the dataset has train, validation and test splits.")
        if not 0.0 < self.top_fraction <= 1.0:
            raise ConfigError(f"top_fraction is {self.top_fraction}; it must lie in (0, 1].")
        self.road_fraction_values()  # refused here, before any model is loaded
        if self.insertion_start not in INSERTION_STARTS:
            raise ConfigError(f"insertion_start is '{self.insertion_start}'; use one of {', '.join(INSERTION_STARTS)}.")
        self.explain_images = str(self.explain_images).strip()
        if self.explain_images != "all" and not (self.explain_images.isdigit() and int(self.explain_images) >= 1):
            raise ConfigError(f"explain_images is '{self.explain_images}'; give a number of images (1 or more) or all.")
        for name in ("batch_size", "latency_repeats", "random_maps", "paired_images"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} is {getattr(self, name)}; it must be at least 1.")

    def explained_positions(self, count: int) -> np.ndarray:
        """Which of a split's `count` images the explanation numbers use, in order: every one for 'all', else a
        sample of `explain_images` drawn by numpy's generator seeded with `seed`, sorted."""
        if self.explain_images == "all":
            return np.arange(count)
        wanted = min(int(self.explain_images), count)
        return np.sort(np.random.default_rng(self.seed).choice(count, wanted, replace=False))

    def road_fraction_values(self) -> tuple[float, ...]:
        """`road_fractions` as numbers.

        Raises:
            ConfigError: one is not a number or not strictly between 0 and 1.
        """
        try:
            values = tuple(float(text) for text in self.road_fractions.split(",") if text.strip())
        except ValueError:
            values = ()
        if not values or not all(0 < value < 1 for value in values):
            raise ConfigError(
                f"road_fractions is '{self.road_fractions}'; give shares of pixels in (0, 1), e.g. 0.2,0.5,0.8."
            )
        return values


@dataclass
class LabelSpace:
    """The labels a report compares models on, and where each model keeps them among its outputs."""

    names: list[str]
    columns: list[list[int]]  # per model: its output index of each shared label
    dataset_columns: list[int]  # the dataset's index of each shared label

    def restrict(self, model_index: int, logits: np.ndarray) -> np.ndarray:
        """A model's logits (N, L_model) -> (N, S) for the shared labels."""
        return np.asarray(logits)[:, self.columns[model_index]]

    def keep(self, labels: np.ndarray, multi_label: bool) -> tuple[np.ndarray, np.ndarray]:
        """Which images to keep (single-label: those whose class is shared) and their labels in shared indices."""
        labels = np.asarray(labels)
        if multi_label:
            return np.ones(len(labels), dtype=bool), labels[:, self.dataset_columns]
        position = {dataset: shared for shared, dataset in enumerate(self.dataset_columns)}
        keep = np.array([int(label) in position for label in labels], dtype=bool)
        return keep, np.array([position[int(label)] for label in labels[keep]], dtype=np.int64)


def shared_label_space(model_labels: list[list[str]], dataset_labels: list[str], allow_mismatch: bool) -> LabelSpace:
    """All models must have the dataset's labels in its order, unless `allow_mismatch`: then the labels every
    model and the dataset share, in the dataset's order."""
    if not allow_mismatch:
        for index, labels in enumerate(model_labels):
            if labels != dataset_labels:
                raise ConfigError(
                    f"Model {index + 1} has labels {labels} but the dataset has {dataset_labels}; compare models "
                    "with one label space, or pass --allow_label_mismatch to use only the labels they share."
                )
        identity = list(range(len(dataset_labels)))
        return LabelSpace(list(dataset_labels), [identity] * len(model_labels), identity)
    names = [name for name in dataset_labels if all(name in labels for labels in model_labels)]
    if len(names) < 2:
        raise ConfigError(f"The models and the dataset share {len(names)} label(s) ({names}); at least 2 are needed.")
    return LabelSpace(
        names,
        [[labels.index(name) for name in names] for labels in model_labels],
        [dataset_labels.index(n) for n in names],
    )
