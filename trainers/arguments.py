"""Run configuration: argument dataclasses and the YAML (+ command-line overrides) parser behind every script."""

from __future__ import annotations

import dataclasses
import difflib
import enum
import os
import shlex
import sys
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from transformers import HfArgumentParser, TrainingArguments

from pipelines.errors import ConfigError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass
class ModelArguments:
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
    trust_remote_code: bool = field(default=False, metadata={"help": "Run code shipped with a Hub checkpoint."})
    allow_pickle: bool = field(
        default=False,
        metadata={
            "help": "Accept pickled weights (pytorch_model.bin, loaded with weights_only=True) without safetensors."
        },
    )
    precision: str = field(
        default="auto",
        metadata={"help": "'auto' (bf16 on a GPU that supports it, else fp32), 'fp32', 'bf16' or 'fp16'."},
    )

    def __post_init__(self) -> None:
        if (self.model_name_or_path is None) == (self.model_config is None):
            raise ConfigError("Give exactly one of model_name_or_path (pretrained) and model_config (from scratch).")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision is {self.precision!r}; use one of {', '.join(PRECISIONS)}.")


def apply_precision(training_args: TrainingArguments, precision: str) -> TrainingArguments:
    """Set bf16/fp16 from `precision` unless the config already set one of them itself."""
    if training_args.bf16 or training_args.fp16 or precision == "fp32":
        return training_args
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"
    training_args.bf16 = precision == "bf16"
    training_args.fp16 = precision == "fp16"
    return training_args


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


def parse_config(dataclass_types: tuple[type, ...], argv: list[str] | None = None) -> tuple[Any, ...]:
    """Parse ``<config.yaml> [--key value ...]`` into instances of `dataclass_types`.

    Command-line values override the file's and are read as their field's type (see `read_value`:
    ``--num_train_epochs 3``, ``--bf16 true``, ``--eval_strategy no``, ``--class_names A B C``). An unknown key is
    named, with the closest known key as a suggestion.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in ("-h", "--help"):
        HfArgumentParser(dataclass_types).print_help()  # every key, with its help text and default
        raise SystemExit(0)
    if not argv or argv[0].startswith("--"):
        script = sys.argv[0] if sys.argv[0].endswith(".py") else "script.py"
        raise ConfigError(f"Give a config file first: {script} configs/<name>.yaml [--key value ...] (or --help).")
    path = Path(argv[0])
    values = read_config_file(path)
    hints = field_types(dataclass_types)
    overrides = negated_flags(parse_overrides(argv[1:], hints), hints)
    values.update(overrides)
    values = off_spelt_no(values, hints)
    unknown = [key for key in values if key not in hints]
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(hints), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        where = "on the command line" if unknown[0] in overrides else f"in {path}"
        raise ConfigError(f"Unknown config key '{unknown[0]}' {where}{hint}.")
    values = {key: coerce(value, hints[key], key) for key, value in values.items()}
    try:
        return HfArgumentParser(dataclass_types).parse_dict(values)
    except ConfigError:
        raise
    except (ValueError, TypeError) as error:
        raise ConfigError(f"{path}: {str(error).splitlines()[0]}") from None


def yaml_problem(error: yaml.YAMLError) -> str:
    """What YAML found and where (``found character '\\t' that cannot start any token at line 2, column 1``).

    The message's first line is only the context (``while scanning for the next token``); the problem and its
    place come after it.
    """
    problem = getattr(error, "problem", None)
    mark = getattr(error, "problem_mark", None)
    if not problem:
        return (str(error).splitlines() or [type(error).__name__])[0]
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    hint = " (YAML indents with spaces, not tabs)" if "'\\t'" in problem else ""
    return f"{problem}{where}{hint}"


def read_config_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"Config file {path} does not exist.")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {yaml_problem(error)}.") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path} must hold a mapping of keys to values.")
    return values


def parse_overrides(args: list[str], hints: dict[str, Any] | None = None) -> dict[str, Any]:
    """``--key value``, ``--key=value`` and ``--key v1 v2 ...`` (list fields, as ``--help`` shows them), each read
    as its field's type in `hints` (see `read_value`); a bare ``--flag`` means true. Dashes in a key mean
    underscores."""
    hints = hints or {}
    overrides: dict[str, Any] = {}
    index = 0
    while index < len(args):
        arg = args[index]
        if not arg.startswith("--"):
            raise ConfigError(f"Unexpected argument '{arg}'; overrides look like --key value.")
        key, equals, value = arg[2:].partition("=")
        key = key.replace("-", "_")  # --help lists each key with dashes too (--num-train-epochs), as argparse does
        tokens = [value] if equals else []
        while not equals and index + 1 < len(args) and not args[index + 1].startswith("--"):
            tokens.append(args[index + 1])
            index += 1
        overrides[key] = read_value(tokens, hints.get(key, Any), key)
        index += 1
    return overrides


def read_value(tokens: list[str], hint: Any, key: str) -> Any:
    """The command-line text after ``--key`` as the field's type.

    Text fields (str, or a union with str such as eval_strategy's ``IntervalStrategy | str``, report_to, a hub id
    or model path) keep the text as typed: read as YAML, ``--eval_strategy no`` became false ("False is not a
    valid IntervalStrategy") and a hub id such as ``1e5`` a number. List fields take several values (``--class_names
    A B C``) or one YAML list (``"[A, B, C]"``). Everything else is read as YAML (numbers, bools, mappings).
    """
    if not tokens:
        return True
    base = _strip_optional(hint)
    members = typing.get_args(base) if typing.get_origin(base) in (typing.Union, types.UnionType) else (base,)
    list_member = next((member for member in members if typing.get_origin(member) is list), None)
    if len(tokens) > 1 and list_member is None:
        raise ConfigError(
            f"--{key} takes one value, not {len(tokens)} ({' '.join(tokens)}); quote a value with spaces."
        )
    if _takes_text(members):
        return tokens if len(tokens) > 1 else tokens[0]
    if list_member is not None:
        if len(tokens) == 1 and isinstance(parsed := _yaml_value(tokens[0], key), list):
            return parsed
        text_elements = typing.get_args(list_member) == (str,)
        return [token if text_elements else _yaml_value(token, key) for token in tokens]
    return _yaml_value(tokens[0], key)


def _takes_text(members: tuple[Any, ...]) -> bool:
    """Whether a field of one of these types takes text as it is: str, or a str-valued enum (IntervalStrategy)."""
    return any(isinstance(member, type) and issubclass(member, str) for member in members)


def _yaml_value(text: str, key: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"--{key} {text}: not a value YAML can read ({str(error).splitlines()[0]}).") from None


def off_spelt_no(values: dict[str, Any], hints: dict[str, Any]) -> dict[str, Any]:
    """A bare ``no`` in a YAML file, which YAML 1.1 reads as false, as the word the field means.

    Strategy fields (``eval_strategy: no``, ``save_strategy: no``, ``logging_strategy: no``: enums with a 'no' member)
    take 'no': transformers got False and ended in "False is not a valid IntervalStrategy". ``report_to: no`` means
    'none', the only spelling transformers accepts to turn reporting off.
    """
    spelt: dict[str, Any] = {}
    for key, value in values.items():
        if value is False and key == "report_to":
            value = "none"
        elif value is False and _has_no_member(hints.get(key)):
            value = "no"
        elif key == "report_to" and value == "no":
            value = "none"
        spelt[key] = value
    return spelt


def _has_no_member(hint: Any) -> bool:
    """Whether a field's type includes a str-valued enum with a 'no' member (IntervalStrategy, SaveStrategy)."""
    base = _strip_optional(hint)
    members = typing.get_args(base) if typing.get_origin(base) in (typing.Union, types.UnionType) else (base,)
    return any(
        isinstance(member, type) and issubclass(member, enum.Enum) and "no" in {item.value for item in member}
        for member in members
    )


def negated_flags(overrides: dict[str, Any], hints: dict[str, Any]) -> dict[str, Any]:
    """``--no_<flag>`` (as `HfArgumentParser`'s --help lists it) means ``--<flag> false`` for a bool field."""
    translated: dict[str, Any] = {}
    for key, value in overrides.items():
        flag = key.removeprefix("no_")
        if key.startswith("no_") and key not in hints and _strip_optional(hints.get(flag)) is bool:
            translated[flag] = not _as_bool(value, key)
        else:
            translated[key] = value
    return translated


def field_types(dataclass_types: tuple[type, ...]) -> dict[str, Any]:
    """Every init field's resolved type, across the dataclasses (whose names must not collide)."""
    hints: dict[str, Any] = {}
    for dataclass_type in dataclass_types:
        resolved = typing.get_type_hints(dataclass_type)
        for dataclass_field in dataclasses.fields(dataclass_type):
            if dataclass_field.init:
                hints[dataclass_field.name] = resolved.get(dataclass_field.name, Any)
    return hints


def coerce(value: Any, hint: Any, key: str) -> Any:
    """`value` as the field's type, or a `ConfigError` naming `key`.

    YAML 1.1 reads '2e-4' as text, so numbers written as text become numbers. Neither `HfArgumentParser.parse_dict`
    nor the dataclasses check types, so a value of the wrong kind (a word where a list is wanted, 2.5 where an
    integer is) would otherwise be accepted and fail much later, or not at all: a string given as class_names
    silently became one class per letter. Fields of other types (enums, unions of several types) are left to
    `HfArgumentParser` and the dataclasses' own checks.
    """
    base = _strip_optional(hint)
    if value is None or base is Any:
        return value
    if typing.get_origin(base) is list:
        (element_hint,) = typing.get_args(base) or (Any,)
        if not isinstance(value, list):
            raise ConfigError(f"{key} is {value!r}, not a list; write it as [first, second, ...].")
        if element_hint is str and any(isinstance(element, bool) for element in value):
            raise ConfigError(
                f"{key} holds {value}, which YAML read from yes/no/on/off/true/false: put them in quotes."
            )
        return [coerce(element, element_hint, f"{key}[{index}]") for index, element in enumerate(value)]
    if dict in (base, typing.get_origin(base)) and not isinstance(value, dict):
        raise ConfigError(f"{key} is {value!r}, not a mapping; write it as {{key: value, ...}}.")
    if base is bool:
        return _as_bool(value, key)
    if base in (int, float):
        return _as_number(value, base, key)
    if base is str:
        if isinstance(value, (list, dict)):
            raise ConfigError(f"{key} is {value!r}; give a single value.")
        # A bool stays one: Trainer's resume_from_checkpoint, typed str, takes true for "the newest checkpoint".
        return value if isinstance(value, bool) else str(value)
    return value


def _as_bool(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    lowered = str(value).lower()
    if lowered not in {"true", "false", "yes", "no", "1", "0"}:
        raise ConfigError(f"{key} is {value!r}; use true or false.")
    return lowered in {"true", "yes", "1"}


def _as_number(value: Any, base: type, key: str) -> int | float:
    """`value` as an int (int fields) or a number (float fields). Numbers keep the kind YAML gave them, so whole
    numbers stay int in float fields: Trainer reads warmup_steps/save_steps 1 as one step, 1.0 as the whole run."""
    number = _parse_number(value)
    if number is None or (base is int and isinstance(number, float) and not number.is_integer()):
        raise ConfigError(f"{key} is {value!r}, which is not {'an integer' if base is int else 'a number'}.")
    return int(number) if base is int else number


def _parse_number(value: Any) -> int | float | None:
    """A YAML number as it is; text such as '10' or '2e-4' (YAML 1.1 leaves it a string) parsed; else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        for parse in (int, float):
            try:
                return parse(value)
            except ValueError:
                pass
    return None


def _strip_optional(hint: Any) -> Any:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        members = [member for member in typing.get_args(hint) if member is not type(None)]
        if len(members) == 1:
            return members[0]
    return hint


ONE_CYCLE = "one_cycle"


@dataclass
class OneCycleTrainingArguments(TrainingArguments):
    """transformers' `TrainingArguments`, whose ``lr_scheduler_type`` also takes ``one_cycle``.

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
