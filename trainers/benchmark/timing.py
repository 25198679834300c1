"""How the benchmarks time: paths taking turns repeat by repeat, so that a slow spell on a shared machine falls on
every path alike, with the device synchronised around every timed span and garbage collection outside it."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

import torch
from transformers import PreTrainedModel, TrainerCallback, TrainingArguments

from pipelines.runtime import synchronize
from trainers.report.cost import batch_timings


class StepTimer(TrainerCallback):
    """Wall time between the end of step `warmup` and the end of the last step (device synchronised)."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.start = self.end = 0.0

    def on_step_end(self, args: TrainingArguments, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step in (self.warmup, state.max_steps):
            synchronize(args.device)
            if state.global_step == self.warmup:
                self.start = time.perf_counter()
            else:
                self.end = time.perf_counter()


def interleaved_timings(
    models: dict[str, PreTrainedModel], shape: tuple[int, int, int], batch_size: int, repeats: int, warmup: int
) -> dict[str, list[float]]:
    """Seconds per forward pass of each model, the models taking turns pass by pass (after `warmup` rounds), so that
    a change in the load of a shared machine falls on every model alike instead of on whichever ran then."""
    cpu = torch.device("cpu")
    for _ in range(warmup):
        for model in models.values():
            batch_timings(model, shape, batch_size, cpu, warmup=0, repeats=1)
    timings = {name: [] for name in models}
    for _ in range(repeats):
        for name, model in models.items():
            timings[name] += batch_timings(model, shape, batch_size, cpu, warmup=0, repeats=1)
    return timings


def interleaved_spans(
    runs: dict[str, Callable[[], Any]], device: torch.device, batches: int, repeats: int, warmup: int
) -> dict[str, list[float]]:
    """Seconds per batch of each run, once per repeat. Every run is warmed up first; then each repeat times every
    run in turn, so a slow spell on a shared machine (or a GPU's clock changes) falls on all paths alike."""
    for run in runs.values():
        for _ in range(warmup):
            run()
    synchronize(device)
    spans: dict[str, list[float]] = {key: [] for key in runs}
    for _ in range(repeats):
        for key, run in runs.items():
            synchronize(device)
            gc.collect()
            gc.disable()
            try:
                start = time.perf_counter()
                for _ in range(batches):
                    run()
                synchronize(device)
                spans[key].append((time.perf_counter() - start) / batches)
            finally:
                gc.enable()
    return spans


def peak_memory_mib(run: Callable[[], Any], device: torch.device) -> float | None:
    """Peak GPU memory allocated during one call (weights and input included), in MiB; None on the CPU, where
    PyTorch keeps no such count and the process's resident set barely moves (freed blocks are reused)."""
    if device.type != "cuda":
        return None
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    run()
    synchronize(device)
    return torch.cuda.max_memory_allocated(device) / 2**20
