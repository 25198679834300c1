"""Stop a run whose loss or weights become NaN or infinite, on every process at once, before anything is saved.

Trainer on its own only leaves a non-finite loss out of the logged average (``logging_nan_inf_filter``) and goes
on stepping the optimizer: the weights turn NaN and every later checkpoint is worthless. Here the loss is checked
after each backward pass (before the optimizer step) and the weights before each save, and the decision is
OR-ed across processes: a process that stopped alone would leave the others waiting forever in the next
gradient all-reduce.
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


class NonFiniteWeightsGuard(TrainerCallback):
    """Check the weights before Trainer saves them (a checkpoint, or the end of training) and stop if any is NaN/inf.

    The loss check in `ImageClassificationTrainer.training_step` cannot see a step whose loss was finite but whose
    gradient was not; its NaN weights would be saved before the next loss shows them. The check costs one pass
    over the parameters, and only on steps that save.
    """

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        if control.should_save or control.should_training_stop:
            self.check(args, state, kwargs["model"])

    def on_epoch_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if control.should_save:
            self.check(args, state, kwargs["model"])

    def check(self, args: TrainingArguments, state: TrainerState, model: torch.nn.Module) -> None:
        bad = ~all_finite(parameter.detach() for parameter in model.parameters())
        if any_process(bad, args.device):
            raise NonFiniteError(non_finite_message("The weights", state.global_step, args.output_dir))
