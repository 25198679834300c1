"""The learning-rate range test (Smith 2017, "Cyclical learning rates", section 3.3) through the Trainer itself.

The learning rate grows exponentially from `start` to `end`, one value per optimizer step, while the recipe's own
trainer trains: its model, data, device preprocessing, loss, optimizer, mixed precision, gradient clipping and
accumulation, and on several processes accelerate's all-reduce. The weights and the trainer's optimizer, scheduler
and state are put back afterwards.

torch-lr-finder (0.2.2), which the seed used, runs its own loop instead: ``model(inputs)`` and
``criterion(outputs, labels)`` on what a `DataLoader` yields. Fitting it here would take a model wrapper returning
``.logits``, a loader iterator calling the trainer's device preprocessing, a criterion wrapping our loss, and
its own AMP settings, and it would still bypass accelerate's mixed precision, clipping and distributed steps. The
Trainer already is that loop, so the sweep is a schedule (`LambdaLR`) and a callback.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from torch.optim.lr_scheduler import LambdaLR
from transformers import Trainer, TrainerCallback, TrainerControl, TrainerState, TrainingArguments
from transformers.trainer_utils import IntervalStrategy, SaveStrategy

from pipelines.errors import ConfigError
from pipelines.io import atomic_save_figure, atomic_write_json, atomic_write_text
from trainers.arguments import ONE_CYCLE

SUGGESTION_RULE = "a tenth of the learning rate at the smoothed loss's minimum (never below start)"


@dataclass
class LRFindArguments:
    """The sweep: `scripts/lr_find.py configs/<recipe>.yaml [--start 1e-7 --end 10 --steps 100]`."""

    start: float = field(default=1e-7, metadata={"help": "LR range test: the first learning rate."})
    end: float = field(default=10.0, metadata={"help": "LR range test: the last learning rate."})
    steps: int = field(default=100, metadata={"help": "LR range test: optimizer steps from start to end."})
    smoothing: float = field(
        default=0.05,
        metadata={"help": "LR range test: weight of each new loss in the (bias-corrected) moving average."},
    )
    diverge_factor: float = field(
        default=4.0,
        metadata={"help": "LR range test: stop once the smoothed loss exceeds its minimum this many times."},
    )
    plot: str | None = field(
        default=None, metadata={"help": "LR range test: the plot's path; default: <output_dir>/lr_find.png."}
    )
    write_config: str | None = field(
        default=None,
        metadata={
            "help": "LR range test: write a copy of the recipe here with the suggested rate (one_cycle_max_lr for "
            "one_cycle recipes, else learning_rate)."
        },
    )

    def __post_init__(self) -> None:
        if not 0 < self.start < self.end:
            raise ConfigError(f"start is {self.start} and end {self.end}; give 0 < start < end.")
        if self.steps < 3:
            raise ConfigError(f"steps is {self.steps}; the sweep needs at least 3 steps.")
        if not 0 < self.smoothing <= 1:
            raise ConfigError(f"smoothing is {self.smoothing}; it must lie in (0, 1].")
        if self.diverge_factor <= 1:
            raise ConfigError(f"diverge_factor is {self.diverge_factor}; it must be greater than 1.")


@dataclass
class LRSweep:
    """What the range test measured, one entry per optimizer step, and what it suggests.

    Attributes:
        learning_rates: The rate each step was taken with (as Trainer logged it).
        losses: That step's training loss (averaged over processes and accumulated batches).
        smoothed: The bias-corrected exponential moving average of `losses`.
        suggestion: The suggested learning rate, inside the swept range (see `suggest_learning_rate`).
        rule: How `suggestion` was picked.
        diverged: The sweep stopped before `end` because the loss diverged.
    """

    learning_rates: list[float]
    losses: list[float]
    smoothed: list[float]
    suggestion: float
    rule: str
    diverged: bool


def exponential_factors(steps: int, start: float, end: float) -> list[float]:
    """Multipliers of `start` giving ``start * (end / start) ** (i / (steps - 1))`` at step i: `start` to `end`."""
    return [(end / start) ** (index / (steps - 1)) for index in range(steps)]


def smooth(losses: list[float], weight: float) -> list[float]:
    """Exponential moving average with bias correction (as Adam corrects its moments), so the first values are not
    pulled towards zero."""
    average, smoothed = 0.0, []
    for index, loss in enumerate(losses):
        average = weight * loss + (1 - weight) * average
        smoothed.append(average / (1 - (1 - weight) ** (index + 1)))
    return smoothed


def suggest_learning_rate(learning_rates: list[float], smoothed: list[float]) -> float:
    """A tenth of the learning rate at the smoothed loss's minimum, or the first rate if that is lower.

    At the minimum the loss is about to diverge; a decade below it the loss still falls quickly, which is the
    rate the range test is after (Smith 2017; fastai's ``lr_min / 10``). The steepest point of the curve, the other
    common rule, moved with the step-to-step noise of small batches in our sweeps, landing next to the minimum.
    """
    values = np.asarray(smoothed, dtype=np.float64)
    lowest = int(np.argmin(np.where(np.isfinite(values), values, np.inf)))
    return float(max(learning_rates[lowest] / 10, learning_rates[0]))


class SweepRecorder(TrainerCallback):
    """Collect each step's learning rate and loss from Trainer's logs (logged every step) and stop the run when the
    smoothed loss diverges or the loss is no longer finite."""

    def __init__(self, smoothing: float, diverge_factor: float) -> None:
        self.smoothing = smoothing
        self.diverge_factor = diverge_factor
        self.learning_rates: list[float] = []
        self.losses: list[float] = []
        self.diverged = False

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> TrainerControl:
        if not logs or "loss" not in logs:
            return control
        if not math.isfinite(logs["loss"]):
            self.diverged = control.should_training_stop = True
            return control
        self.learning_rates.append(float(logs["learning_rate"]))
        self.losses.append(float(logs["loss"]))
        smoothed = smooth(self.losses, self.smoothing)
        if smoothed[-1] > self.diverge_factor * min(smoothed):
            self.diverged = control.should_training_stop = True
        return control


def sweep_arguments(args: TrainingArguments, lr_args: LRFindArguments) -> TrainingArguments:
    """The run's arguments for the sweep: `steps` optimizer steps from `start`, a log every step, nothing saved or
    evaluated. A shallow copy with fields set, not `dataclasses.replace`: re-running `TrainingArguments.__post_init__`
    resets accelerate's state under the trainer's live `Accelerator`."""
    swept = copy.copy(args)
    swept.max_steps = lr_args.steps
    swept.learning_rate = lr_args.start  # the base rate the sweep's schedule multiplies
    swept.logging_strategy, swept.logging_steps, swept.logging_first_step = IntervalStrategy.STEPS, 1, False
    swept.eval_strategy, swept.save_strategy = IntervalStrategy.NO, SaveStrategy.NO
    swept.load_best_model_at_end = False
    swept.push_to_hub = False
    return swept


def lr_range_test(trainer: Trainer, lr_args: LRFindArguments) -> LRSweep:
    """Sweep the learning rate on `trainer` and put its model, optimizer, scheduler and state back afterwards.

    Args:
        trainer: The recipe's trainer (e.g. `ImageClassificationTrainer` from `build_trainer`), not yet trained.
        lr_args: The sweep.

    Returns:
        The `LRSweep`; its suggestion lies inside [start, end].
    """
    saved = {
        "args": trainer.args,
        "state": trainer.state,
        "optimizer": trainer.optimizer,
        "lr_scheduler": trainer.lr_scheduler,
        "weights": {name: tensor.detach().clone() for name, tensor in trainer.model.state_dict().items()},
        "optimizer_state": copy.deepcopy(trainer.optimizer.state_dict()) if trainer.optimizer is not None else None,
    }
    recorder = SweepRecorder(lr_args.smoothing, lr_args.diverge_factor)
    # The sweep is meant to diverge: the NaN guard would stop it with an error where it should just end.
    guard = getattr(trainer, "non_finite_guard", None)
    if guard is not None:
        trainer.remove_callback(guard)
    trainer.add_callback(recorder)
    try:
        trainer.args = sweep_arguments(trainer.args, lr_args)
        trainer.optimizer, trainer.lr_scheduler = None, None
        optimizer = trainer.create_optimizer()
        factors = exponential_factors(lr_args.steps, lr_args.start, lr_args.end)
        trainer.lr_scheduler = LambdaLR(optimizer, lambda step: factors[min(step, len(factors) - 1)])
        trainer.train()
    finally:
        trainer.remove_callback(recorder)
        if guard is not None:
            trainer.add_callback(guard)
        trainer.model.load_state_dict(saved["weights"])
        trainer.args, trainer.state = saved["args"], saved["state"]
        trainer.optimizer, trainer.lr_scheduler = saved["optimizer"], saved["lr_scheduler"]
        if saved["optimizer_state"] is not None:
            trainer.optimizer.load_state_dict(saved["optimizer_state"])
    if len(recorder.losses) < 2:
        raise ConfigError(
            f"The loss diverged within {len(recorder.losses) + 1} steps of the sweep, from {lr_args.start:g}; "
            "give a smaller start."
        )
    smoothed = smooth(recorder.losses, lr_args.smoothing)
    return LRSweep(
        learning_rates=recorder.learning_rates,
        losses=recorder.losses,
        smoothed=smoothed,
        suggestion=suggest_learning_rate(recorder.learning_rates, smoothed),
        rule=SUGGESTION_RULE,
        diverged=recorder.diverged,
    )


def plot_sweep(sweep: LRSweep, path: str | Path) -> None:
    """Loss against learning rate on a log axis: each step's loss, the smoothed loss, its minimum and the suggestion."""
    figure = Figure(figsize=(7, 4.5))
    axis = figure.subplots()
    axis.plot(sweep.learning_rates, sweep.losses, color="0.75", linewidth=1, label="loss of each step")
    axis.plot(sweep.learning_rates, sweep.smoothed, color="C0", linewidth=2, label="smoothed loss")
    lowest = int(np.argmin(sweep.smoothed))
    axis.plot(sweep.learning_rates[lowest], sweep.smoothed[lowest], "v", color="0.3", label="minimum")
    log_rates = np.log10(sweep.learning_rates)
    at_suggestion = np.interp(np.log10(sweep.suggestion), log_rates, sweep.smoothed)
    axis.plot([sweep.suggestion], [at_suggestion], "o", color="C3", markersize=8)
    axis.axvline(sweep.suggestion, color="C3", linestyle="--", label=f"suggested: {sweep.suggestion:.2e}")
    axis.set_xscale("log")
    # From the lowest smoothed loss to the highest before it: the divergent tail would flatten everything else.
    low, high = sweep.smoothed[lowest], max(sweep.smoothed[: lowest + 1])
    margin = 0.15 * max(high - low, 1e-8)
    axis.set_ylim(low - margin, high + 2 * margin)
    ending = "stopped where the loss diverged" if sweep.diverged else "the whole range"
    axis.set(xlabel="learning rate (log scale)", ylabel="training loss", title=f"LR range test ({ending})")
    axis.grid(alpha=0.3, which="both")
    axis.legend(title="suggested: a tenth of the minimum's rate", title_fontsize="small", loc="best")
    atomic_save_figure(figure, path)


def recipe_with_rate(recipe: str, key: str, value: float) -> str:
    """The recipe's text with `key` set to `value`, its other lines and comments as they were (the key is appended
    when the recipe lacks it). The value is written with a decimal point (``2.15e-03``), which YAML 1.1 reads as a
    number."""
    written = f"{value:.2e}"
    pattern = re.compile(rf"^{re.escape(key)}:[^#\n]*?(?P<comment>[ \t]+#.*)?$", re.MULTILINE)
    if pattern.search(recipe):
        return pattern.sub(lambda match: f"{key}: {written}{match.group('comment') or ''}", recipe, count=1)
    return recipe.rstrip("\n") + f"\n{key}: {written}  # suggested by scripts/lr_find.py\n"


def rate_key(args: TrainingArguments) -> str:
    """The recipe key a suggested rate goes into: the one-cycle peak, or the base learning rate."""
    return "one_cycle_max_lr" if args.lr_scheduler_type == ONE_CYCLE else "learning_rate"


def save_sweep(
    sweep: LRSweep, lr_args: LRFindArguments, args: TrainingArguments, recipe_path: str | Path
) -> dict[str, str]:
    """Write the plot, the sweep as JSON beside it and, when asked, the recipe with the suggestion; their paths."""
    plot = Path(lr_args.plot or Path(args.output_dir) / "lr_find.png")
    plot_sweep(sweep, plot)
    record = plot.with_suffix(".json")
    atomic_write_json(record, {**dataclasses.asdict(sweep), "start": lr_args.start, "end": lr_args.end})
    written = {"plot": str(plot), "sweep": str(record)}
    if lr_args.write_config:
        text = recipe_with_rate(Path(recipe_path).read_text(), rate_key(args), sweep.suggestion)
        atomic_write_text(lr_args.write_config, text)
        written["config"] = lr_args.write_config
    return written
