"""Learning-rate schedules that transformers does not have, built for the Trainer's `create_scheduler` hook."""

from __future__ import annotations

import torch
from torch.optim.lr_scheduler import OneCycleLR

from trainers.arguments import OneCycleTrainingArguments


def one_cycle_schedule(
    optimizer: torch.optim.Optimizer, args: OneCycleTrainingArguments, num_training_steps: int
) -> OneCycleLR:
    """torch's `OneCycleLR` over the run's optimizer steps, from the ``one_cycle_*`` arguments.

    Trainer steps the scheduler after every optimizer step and saves its state in each checkpoint, so a resumed run
    continues the cycle where it stopped.
    """
    return OneCycleLR(
        optimizer,
        max_lr=args.peak_learning_rate,
        total_steps=num_training_steps,
        pct_start=args.one_cycle_pct_start,
        div_factor=args.one_cycle_div_factor,
        final_div_factor=args.one_cycle_final_div_factor,
    )
