"""What `scripts/report.py` compares and how (the dataset spec comes from `DataArguments`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from explain.metrics.faithfulness import FaithfulnessSettings
from pipelines.arguments import ModelLoadingArguments
from pipelines.corruptions import corruption_names
from pipelines.errors import ConfigError
from pipelines.runtime import check_precision
from pipelines.splits import check_split
from trainers.report.robustness import REFERENCES

INSERTION_STARTS = ("blurred", "removed")


@dataclass
class ReportArguments(ModelLoadingArguments):
    """What scripts/report.py compares and how (the dataset spec comes from `DataArguments`)."""

    models: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Folders or Hub ids; the first is the reference (e.g. the teacher). A folder of seed-N model "
            "folders (distill.py --seeds) is a seed group: shown by its first seed, every seed used by the audit."
        },
    )
    split: str = field(default="test", metadata={"help": "Split to evaluate: train, validation or test."})
    output_dir: str = field(
        default="report",
        metadata={"help": "Folder for index.md, metrics.json and the figures.", "aliases": ["--out"]},
    )
    methods: str = field(
        default="default",
        metadata={
            "help": "Comma-separated explanation methods to score; 'default': Grad-CAM, or when every model is a "
            "vision transformer the method chosen for them (explain.registry.default_method); 'all': every method "
            "that fits every model."
        },
    )
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
    audit: bool = field(
        default=True,
        metadata={
            "help": "Audit every model against the reference: fidelity, flips, per-class recall change (and the "
            "per-class test over seed groups), the forgotten images and their maps."
        },
    )
    audit_map_images: int = field(
        default=64,
        metadata={"help": "Changed images (and as many unchanged ones) whose maps the audit compares, at most."},
    )
    audit_figure_images: int = field(default=8, metadata={"help": "Forgotten images shown per model."})
    corruptions: str = field(
        default="DEFAULT",
        metadata={
            "help": "Robustness under corruption (pipelines.corruptions): 'DEFAULT', MedMNIST-C's corruptions for the "
            "dataset (for other data, those of the MedMNIST-C dataset of its kind: PneumoniaMNIST's for grey images, "
            "DermaMNIST's for colour); 'all'; comma-separated names; or 'none'."
        },
    )
    corruption_images: str = field(
        default="128",
        metadata={
            "help": "Images corrupted at every severity of every corruption: a number (a seeded sample; 128 keeps the "
            "quickstart report within a fifth of its time) or 'all' (MedMNIST-C's protocol: the whole split)."
        },
    )
    corruption_map_images: int = field(
        default=16,
        metadata={"help": "Of those, how many (the first) each model's map stability is measured on (0: none)."},
    )
    corruption_reference: str = field(
        default="first",
        metadata={
            "help": "What BE and rBE are relative to: 'first', the first model (in the role MedMNIST-C gives AlexNet), "
            "or 'alexnet', MedMNIST-C's published AlexNet errors (measured at 224 px)."
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

    def __post_init__(self) -> None:
        if not self.models:
            raise ConfigError("Give the models to compare: --models teacher_folder student_folder ...")
        check_precision(self.precision)
        if self.steps < 2:
            raise ConfigError(f"steps is {self.steps}; deletion and insertion curves need K >= 2.")
        if self.random_steps < 2:
            raise ConfigError(f"random_steps is {self.random_steps}; the random maps' curves need at least 2 steps.")
        check_split(self.split)
        if not 0.0 < self.top_fraction <= 1.0:
            raise ConfigError(f"top_fraction is {self.top_fraction}; it must lie in (0, 1].")
        self.road_fraction_values()  # refused here, before any model is loaded
        if self.insertion_start not in INSERTION_STARTS:
            raise ConfigError(f"insertion_start is '{self.insertion_start}'; use one of {', '.join(INSERTION_STARTS)}.")
        for name in ("explain_images", "corruption_images"):
            value = str(getattr(self, name)).strip()
            if value != "all" and not (value.isdigit() and int(value) >= 1):
                raise ConfigError(f"{name} is '{value}'; give a number of images (1 or more) or all.")
            setattr(self, name, value)
        corruption_names(self.corruptions, None, channels=3)  # an unknown name refused before any model is loaded
        if self.corruption_reference not in REFERENCES:
            raise ConfigError(
                f"corruption_reference is '{self.corruption_reference}'; use first (the first model) or alexnet."
            )
        if self.corruption_map_images < 0:
            raise ConfigError(f"corruption_map_images is {self.corruption_map_images}; it must be 0 or more.")
        if self.audit_figure_images < 0:
            raise ConfigError(f"audit_figure_images is {self.audit_figure_images}; give 0 (no figure) or more.")
        for name in ("batch_size", "latency_repeats", "random_maps", "paired_images", "audit_map_images"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} is {getattr(self, name)}; it must be at least 1.")

    def faithfulness_settings(self, dtype: torch.dtype) -> FaithfulnessSettings:
        """How the report measures faithfulness, in the models' compute `dtype`."""
        return FaithfulnessSettings(
            steps=self.steps,
            batch_size=self.batch_size,
            seed=self.seed,
            dtype=dtype,
            random_maps=self.random_maps,
            random_steps=self.random_steps,
            paired_images=self.paired_images,
            road_fractions=self.road_fraction_values(),
            insertion_start=self.insertion_start,
        )

    def explained_positions(self, count: int) -> np.ndarray:
        """Which of a split's `count` images the explanation numbers use, in order: every one for 'all', else a
        sample of `explain_images` drawn by numpy's generator seeded with `seed`, sorted."""
        return self.sample(self.explain_images, count)

    def corrupted_positions(self, count: int) -> np.ndarray:
        """Which of a split's `count` images the robustness numbers corrupt: as `explained_positions`, for
        `corruption_images` (the same images when the two numbers are equal)."""
        return self.sample(self.corruption_images, count)

    def sample(self, spec: str, count: int) -> np.ndarray:
        """Every position for 'all', else `spec` of them drawn by numpy's generator seeded with `seed`, sorted."""
        if spec == "all":
            return np.arange(count)
        wanted = min(int(spec), count)
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
