"""What a training run is given besides its data: the model to train, the precision, the training arguments (with
one-cycle schedules), and the checks and records around them. The command line itself is `pipelines.config`."""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import TrainingArguments

from pipelines.arguments import ModelLoadingArguments
from pipelines.errors import ConfigError
from pipelines.runtime import check_precision, default_device, resolved_precision


@dataclass
class ModelArguments(ModelLoadingArguments):
    """Which classifier to train: a pretrained checkpoint, or a config built from scratch."""

    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Hub id or local folder of a pretrained image classifier."}
    )
    model_config: dict | None = field(
        default=None,
        metadata={"help": "Build a model from scratch: 'model_type' plus that config's fields (no download)."},
    )
    image_processor_config: dict | None = field(
        default=None,
        metadata={
            "help": "From scratch: the image processor's fields ('size', 'image_mean', 'image_std', optional "
            "'image_processor_type'). Pretrained: fields that replace the checkpoint's own (e.g. 'size')."
        },
    )
    ignore_mismatched_sizes: bool = field(
        default=True, metadata={"help": "Re-initialise a pretrained head whose size differs from the dataset's labels."}
    )
    precision: str = field(
        default="auto",
        metadata={"help": "'auto' (bf16 on a GPU that supports it, else fp32), 'fp32', 'bf16' or 'fp16'."},
    )

    def __post_init__(self) -> None:
        if (self.model_name_or_path is None) == (self.model_config is None):
            raise ConfigError("Give exactly one of model_name_or_path (pretrained) and model_config (from scratch).")
        check_precision(self.precision)


def apply_precision(training_args: TrainingArguments, precision: str) -> TrainingArguments:
    """Set bf16/fp16 from `precision` unless the config already set one of them itself ('auto': bf16 when this
    machine has a GPU that supports it, also with ``use_cpu``)."""
    if training_args.bf16 or training_args.fp16:
        return training_args
    precision = resolved_precision(precision, default_device())
    training_args.bf16 = precision == "bf16"
    training_args.fp16 = precision == "fp16"
    return training_args


def training_dtype(training_args: TrainingArguments) -> torch.dtype:
    """The compute dtype a Trainer with these arguments runs its mixed-precision passes in."""
    return torch.bfloat16 if training_args.bf16 else torch.float16 if training_args.fp16 else torch.float32


def check_training_arguments(training_args: TrainingArguments, metric_names: Sequence[str] | None = None) -> None:
    """Refuse settings that Trainer would only trip over later: at the first batch, or after training, at the
    first evaluation (a misspelt ``metric_for_best_model``).

    Args:
        metric_names: What ``compute_metrics`` reports (without the ``eval_`` prefix); None skips that check.
    """
    for name in ("per_device_train_batch_size", "per_device_eval_batch_size"):
        if getattr(training_args, name) < 1:
            raise ConfigError(f"{name} is {getattr(training_args, name)}; it must be at least 1.")
    if training_args.learning_rate < 0:
        raise ConfigError(f"learning_rate is {training_args.learning_rate}; it cannot be negative.")
    output_dir = Path(training_args.output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise ConfigError(f"output_dir {output_dir} is a file; give a folder (new or existing) for the run's outputs.")
    metric = training_args.metric_for_best_model
    if metric_names is not None and metric is not None and metric.removeprefix("eval_") not in ("loss", *metric_names):
        known = ", ".join(("loss", *metric_names))
        raise ConfigError(f"metric_for_best_model is {metric!r}; the evaluation reports {known}.")


def hide_hub_token(training_args: TrainingArguments) -> TrainingArguments:
    """Move ``hub_token`` into the HF_TOKEN environment variable, where huggingface_hub reads it.

    Trainer pickles its arguments, token in clear, into training_args.bin in every checkpoint and the final model
    folder (and uploads that file when it pushes); with the token out of the arguments no output holds it.
    """
    if training_args.hub_token:
        os.environ["HF_TOKEN"] = training_args.hub_token
        training_args.hub_token = None
    return training_args


def launch_command(script: str, argv: list[str]) -> str:
    """The command that reproduces this run, as it was launched: ``accelerate launch <script> ...`` under
    accelerate (which sets ACCELERATE_MIXED_PRECISION for the processes it starts), else ``python <script> ...``;
    any token in `argv` masked (see `recordable_argv`)."""
    launcher = "accelerate launch" if "ACCELERATE_MIXED_PRECISION" in os.environ else "python"
    return f"{launcher} {script} {shlex.join(recordable_argv(argv))}".rstrip()


def recordable_argv(argv: list[str]) -> list[str]:
    """`argv` as it may be written into reports and model cards: the value of any ``--*token`` option is masked."""
    masked: list[str] = []
    hide_next = False
    for arg in argv:
        key, equals, _ = arg.partition("=")
        is_token_option = arg.startswith("--") and key.endswith("token")
        if hide_next and not arg.startswith("--"):
            arg = "REDACTED"
        elif is_token_option and equals:
            arg = f"{key}=REDACTED"
        masked.append(arg)
        hide_next = is_token_option and not equals
    return masked


ONE_CYCLE = "one_cycle"


@dataclass
class OneCycleTrainingArguments(TrainingArguments):
    """transformers' `TrainingArguments`, whose ``lr_scheduler_type`` also takes ``one_cycle``, with a private Hub
    repo by default and ``overwrite_output_dir`` (see the two fields below).

    transformers has no one-cycle schedule and checks ``lr_scheduler_type`` against its `SchedulerType` enum, so this
    field is re-declared as text: ``one_cycle`` is kept as it is, every other value goes through transformers'
    checks unchanged. `ImageClassificationTrainer.create_scheduler` builds torch's `OneCycleLR` from the
    ``one_cycle_*`` fields (Smith & Topin 2019, "Super-convergence"), stepped once per optimizer step.
    """

    lr_scheduler_type: str = field(
        default="linear",
        metadata={
            "help": "One of transformers' SchedulerType values (linear, cosine, constant, ...), or 'one_cycle': "
            "torch's OneCycleLR, which warms up from one_cycle_max_lr / one_cycle_div_factor to one_cycle_max_lr, "
            "then anneals (cosine) to one_cycle_max_lr / (div_factor * final_div_factor), and cycles Adam's beta1 "
            "from 0.95 to 0.85 and back, as torch does by default."
        },
    )
    # transformers' default (None) makes a public repo unless the organisation says otherwise: the wrong default
    # for a medical model, so every push of this project is private unless the user asks otherwise (issue 29).
    hub_private_repo: bool = field(
        default=True,
        metadata={"help": "Make the Hub repo a push creates private; false publishes it publicly."},
    )
    # transformers 5 removed this field; a fresh run refuses to replace a trained model without it
    # (`trainers.checkpoints.refuse_to_replace_a_model`).
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Let a fresh run replace the trained model already in output_dir."},
    )
    one_cycle_max_lr: float | None = field(
        default=None, metadata={"help": "one_cycle: the peak learning rate; default: learning_rate."}
    )
    one_cycle_pct_start: float = field(
        default=0.3, metadata={"help": "one_cycle: the fraction of the steps spent warming up to the peak."}
    )
    one_cycle_div_factor: float = field(
        default=25.0, metadata={"help": "one_cycle: the first learning rate is the peak divided by this."}
    )
    one_cycle_final_div_factor: float = field(
        default=1e4, metadata={"help": "one_cycle: the last learning rate is the first divided by this."}
    )

    def __post_init__(self) -> None:
        one_cycle = self.lr_scheduler_type == ONE_CYCLE
        if one_cycle:
            self.check_one_cycle()
            self.lr_scheduler_type = "constant"  # a value transformers' own checks accept; restored below
        super().__post_init__()
        if one_cycle:
            self.lr_scheduler_type = ONE_CYCLE

    @property
    def peak_learning_rate(self) -> float:
        return self.learning_rate if self.one_cycle_max_lr is None else self.one_cycle_max_lr

    def check_one_cycle(self) -> None:
        if self.warmup_steps:
            raise ConfigError(
                f"warmup_steps is {self.warmup_steps}, but one_cycle warms up by itself: set one_cycle_pct_start "
                "instead and remove warmup_steps."
            )
        if self.lr_scheduler_kwargs:
            raise ConfigError("lr_scheduler_kwargs are not read by one_cycle; use the one_cycle_* keys instead.")
        if self.one_cycle_max_lr is not None and self.one_cycle_max_lr <= 0:
            raise ConfigError(f"one_cycle_max_lr is {self.one_cycle_max_lr}; it must be greater than 0.")
        if not 0.0 < self.one_cycle_pct_start < 1.0:
            raise ConfigError(
                f"one_cycle_pct_start is {self.one_cycle_pct_start}; it must lie strictly between 0 and 1."
            )
        for name in ("one_cycle_div_factor", "one_cycle_final_div_factor"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} is {getattr(self, name)}; it must be greater than 0.")
