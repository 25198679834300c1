"""Stop a run whose loss or weights become NaN or infinite, on every process at once, before anything is saved.

Trainer on its own only leaves a non-finite loss out of the logged average (``logging_nan_inf_filter``) and goes
on stepping the optimizer: the weights turn NaN and every later checkpoint is worthless. Here every training loss
is checked on the device, without a host sync: the first non-finite step is remembered in a device tensor, and
read (one sync, one all-reduce) only on steps where Trainer logs, evaluates, saves or stops, which read the host
anyway. The weights are checked before each save. The decision is taken across processes: a process that
stopped alone would leave the others waiting forever in the next gradient all-reduce.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from pipelines.errors import UserFacingError
from trainers.checkpoints import newest_complete_checkpoint


class NonFiniteError(UserFacingError, FloatingPointError):
    """The training loss or the weights became NaN or infinite; the run stopped before saving them."""


def any_process(flag: torch.Tensor | bool, device: torch.device | str = "cpu") -> bool:
    """`flag` OR-ed over all processes (one scalar all-reduce when there are several): the same answer everywhere."""
    value = torch.as_tensor(flag, device=device).to(torch.float32).reshape(1)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(value)  # NCCL needs `device` to be this process's GPU
    return bool(value.item())


def first_step_on_any_process(step: torch.Tensor) -> int | None:
    """The smallest of each process's `step` (a 0-d tensor, -1 for none): the first step that failed anywhere."""
    value = torch.where(step < 0, torch.iinfo(torch.long).max, step).to(torch.long).reshape(1)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(value, op=dist.ReduceOp.MIN)
    found = int(value.item())
    return None if found == torch.iinfo(torch.long).max else found


def all_finite(tensors: Iterable[torch.Tensor]) -> torch.Tensor:
    """A 0-d bool tensor: whether every element of every tensor is finite (one host sync when read)."""
    checks = [torch.isfinite(tensor).all() for tensor in tensors]
    return torch.stack(checks).all() if checks else torch.tensor(True)


def non_finite_message(what: str, step: int, output_dir: str | Path) -> str:
    """One sentence naming the step, what was kept, and what to do next."""
    checkpoint = newest_complete_checkpoint(output_dir)
    kept = (
        f"the last good checkpoint, {checkpoint}, is kept"
        if checkpoint
        else "no checkpoint had been saved yet, so there is none to resume from"
    )
    return (
        f"{what} became NaN or infinite at optimizer step {step}, so training stopped before saving it; {kept}: "
        "lower learning_rate (or check the data and the precision setting) and resume with resume_from_checkpoint: true."
    )


class NonFiniteGuard(TrainerCallback):
    """Stop the run when a training loss or the weights become NaN or infinite, before they are saved.

    `record` is called with every training loss (device work only); the first non-finite step is read on steps
    that log, evaluate, save or stop, so a run never trains on for longer than its logging interval. The weights
    are checked before Trainer saves them (a checkpoint, or the end of training): a step whose loss was finite
    but whose gradient was not leaves NaN weights that no loss has shown yet. That costs one pass over the
    parameters, on saving steps only.
    """

    def __init__(self) -> None:
        self.first_bad_step: torch.Tensor | None = None

    def record(self, loss: torch.Tensor, step: int) -> None:
        bad = ~torch.isfinite(loss.detach()).all()
        if self.first_bad_step is None or self.first_bad_step.device != loss.device:
            self.first_bad_step = torch.full((), -1, dtype=torch.long, device=loss.device)
        self.first_bad_step = torch.where(bad & (self.first_bad_step < 0), step, self.first_bad_step)

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        if control.should_log or control.should_evaluate or control.should_save or control.should_training_stop:
            self.check_loss(args)
        if control.should_save or control.should_training_stop:
            self.check_weights(args, state, kwargs["model"])

    def on_epoch_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if control.should_log or control.should_evaluate or control.should_save:
            self.check_loss(args)
        if control.should_save:
            self.check_weights(args, state, kwargs["model"])

    def check_loss(self, args: TrainingArguments) -> None:
        if self.first_bad_step is None:
            return
        step = first_step_on_any_process(self.first_bad_step.to(args.device))
        if step is not None:
            raise NonFiniteError(non_finite_message("The training loss", step, args.output_dir))

    def check_weights(self, args: TrainingArguments, state: TrainerState, model: torch.nn.Module) -> None:
        bad = ~all_finite(parameter.detach() for parameter in model.parameters())
        if any_process(bad, args.device):
            raise NonFiniteError(non_finite_message("The weights", state.global_step, args.output_dir))
