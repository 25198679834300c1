"""Replaying a batch's explanation as a CUDA graph, so the host's per-operation cost stops setting the pace.

In eager mode the host launches every kernel of the forward pass, the backward pass to the target layer and the
map arithmetic one by one. On the measured H100 machine that host work took about 14 ms per ViT-B/16 batch of 64
while the kernels took 7.2 ms, so Grad-CAM ran at 54% of the forward pass's rate; replayed as one CUDA graph the
same kernels ran at 91% (`scripts/benchmark.py explain`). PyTorch's recipe ("CUDA Graphs", whole-network capture
in `torch.cuda.graph`'s documentation) is followed: warm up on a side stream, capture once, then copy each new
batch into the captured input and replay.

A graph is captured only when a batch of the same shape comes back: one batch alone runs eagerly and pays nothing
extra. The captured kernels read the weights where they were at capture time, so the key includes the address of
every parameter and buffer: moving or casting the model starts a new graph instead of reading freed memory.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from itertools import chain

import torch
from torch import nn

from explain.explanation import Explanation

# Warm-up runs on a side stream before capture: they initialise cuBLAS/cuDNN workspaces and the autograd engine's
# device threads outside the graph, as PyTorch's documentation asks (its examples use 3).
WARMUP_RUNS = 3


@dataclass
class CapturedBatch:
    graph: torch.cuda.CUDAGraph
    pixel_values: torch.Tensor  # the static input the graph reads
    explanation: Explanation  # the static output the graph writes


class GraphedBatches:
    """Runs a batch function eagerly the first time a batch shape is seen, and as a CUDA graph after that.

    Args:
        model: The model the function runs (its weights' addresses are part of each graph's key).
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.seen: set[Hashable] = set()
        self.captured: dict[Hashable, CapturedBatch] = {}
        self.failed = False

    def __call__(
        self, explain_batch: Callable[[torch.Tensor], Explanation], pixel_values: torch.Tensor, key: Hashable
    ) -> Explanation:
        """`explain_batch(pixel_values)`, replayed from a graph when this `key` (targets, options) and batch shape
        have run before. The result is a copy: the next replay overwrites the graph's own output."""
        key = (key, tuple(pixel_values.shape), pixel_values.dtype, pixel_values.device, self.weights_key())
        if self.failed or (key not in self.captured and key not in self.seen):
            self.seen.add(key)
            return explain_batch(pixel_values)
        if key not in self.captured:
            captured = self.capture(explain_batch, pixel_values)
            if captured is None:
                return explain_batch(pixel_values)
            self.captured[key] = captured
        captured = self.captured[key]
        captured.pixel_values.copy_(pixel_values)
        captured.graph.replay()
        return captured.explanation.clone()

    def weights_key(self) -> tuple[int, ...]:
        return tuple(tensor.data_ptr() for tensor in chain(self.model.parameters(), self.model.buffers()))

    def capture(
        self, explain_batch: Callable[[torch.Tensor], Explanation], pixel_values: torch.Tensor
    ) -> CapturedBatch | None:
        """Capture `explain_batch` on a static copy of the batch; None (and eager from now on) if it cannot be
        captured, e.g. a model whose forward pass reads a value back to the host."""
        static = pixel_values.clone()
        side = torch.cuda.Stream(device=static.device)
        side.wait_stream(torch.cuda.current_stream(static.device))
        try:
            with torch.cuda.stream(side):
                for _ in range(WARMUP_RUNS):
                    explain_batch(static)
            torch.cuda.current_stream(static.device).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            # thread_local: another thread's CUDA calls (a data loader pinning memory) do not break the capture.
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                explanation = explain_batch(static)
        except RuntimeError as error:
            self.failed = True
            warnings.warn(
                f"Explaining without CUDA graphs: capturing the batch failed ({str(error).splitlines()[0]}).",
                stacklevel=3,
            )
            return None
        return CapturedBatch(graph, static, explanation)
