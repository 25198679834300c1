"""What `scripts/shrink.py` shrinks, how, and where it writes the copy (the dataset spec of a calibration or a
recovery fine-tune comes from `DataArguments`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from pipelines.arguments import ModelLoadingArguments
from pipelines.errors import ConfigError

METHODS = ("int8", "prune")


INT8_ACTIVATIONS = ("none", "static", "dynamic")


# --int8_activations also reads true and false, as static and none.
INT8_ACTIVATION_ALIASES = {"true": "static", "false": "none"}


@dataclass
class ShrinkArguments(ModelLoadingArguments):
    """What to shrink, how, and where to write the copy."""

    model_name_or_path: str = field(
        metadata={
            "help": "A model folder or Hub id (an AutoModelForImageClassification checkpoint).",
            "aliases": ["--model"],
        }
    )
    shrink_method: str = field(
        metadata={
            "help": "int8 (optimum-quanto int8 weights, optionally activations) or prune (structured, torch-pruning).",
            "aliases": ["--method"],
        }
    )
    output_dir: str = field(
        metadata={"help": "Folder for the copy: absent, empty, or an earlier copy (replaced).", "aliases": ["--out"]}
    )
    ratio: float = field(
        default=0.5,
        metadata={"help": "prune: the fraction of channels, heads and MLP units removed from every layer, in (0, 1)."},
    )
    int8_activations: str = field(
        default="none",
        metadata={
            "help": "int8: none (weights only, optimum-quanto), static (quanto int8 activations with scales calibrated "
            "on --calibration_images training images of the data arguments' dataset; true means static) or dynamic "
            "(torchao: int8 activations with per-token scales at run time and int8 matmuls, nn.Linear only; fast "
            "under torch.compile)."
        },
    )
    calibration_images: int = field(default=256, metadata={"help": "int8 activations: images to calibrate on."})
    recover_epochs: float = field(
        default=0.0,
        metadata={
            "help": "prune: epochs of recovery fine-tuning on the dataset given by the data arguments (0: none)."
        },
    )
    recover_learning_rate: float = field(default=1e-3, metadata={"help": "prune: the recovery fine-tune's rate."})
    recover_batch_size: int = field(default=64, metadata={"help": "prune: the recovery fine-tune's batch size."})
    seed: int = field(default=42, metadata={"help": "Seed of the recovery fine-tune."})

    def __post_init__(self) -> None:
        if self.shrink_method not in METHODS:
            raise ConfigError(f"--shrink_method must be one of {', '.join(METHODS)}, not '{self.shrink_method}'.")
        if not 0 < self.ratio < 1:
            raise ConfigError(f"--ratio must lie strictly between 0 and 1 (the fraction removed), not {self.ratio}.")
        if self.recover_epochs < 0:
            raise ConfigError(f"--recover_epochs must be 0 or more, not {self.recover_epochs}.")
        self.int8_activations = INT8_ACTIVATION_ALIASES.get(str(self.int8_activations).lower(), self.int8_activations)
        if self.int8_activations not in INT8_ACTIVATIONS:
            raise ConfigError(
                f"--int8_activations must be one of {', '.join(INT8_ACTIVATIONS)}, not '{self.int8_activations}'."
            )
        if self.shrink_method == "prune" and self.int8_activations != "none":
            raise ConfigError("--int8_activations applies to --shrink_method int8 only.")
        if self.calibration_images < 1:
            raise ConfigError(f"--calibration_images must be at least 1, not {self.calibration_images}.")
        if self.shrink_method == "int8" and self.recover_epochs:
            raise ConfigError(
                "--recover_epochs applies to --shrink_method prune only (int8 copies are not fine-tuned)."
            )

    @property
    def needs_data(self) -> bool:
        """A recovery fine-tune or an activation calibration reads the dataset of the data arguments."""
        return bool(self.recover_epochs) or self.int8_activations == "static"
