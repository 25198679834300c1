"""Random draws of one image's own: seeded by (seed, the image's row, ...), so that what is drawn for an image does
not depend on the batch or the process it is drawn in. The report's random maps and ROAD noise (`explain.metrics`)
and the corruptions' noise (`pipelines.corruptions`) draw from these."""

from __future__ import annotations

import numpy as np
import torch


def image_generator(seed: int, *key: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator of its own for one image (and whatever else `key` names: a ROAD fraction, an order, a
    corruption), seeded from (seed, *key) by numpy's `SeedSequence`, so that nearby seeds and rows give unrelated
    streams. On `device` (a CUDA generator draws other numbers than a CPU one from the same seed)."""
    state = np.random.SeedSequence(seed, spawn_key=tuple(int(value) for value in key)).generate_state(1, np.uint64)
    return torch.Generator(device=device).manual_seed(int(state[0]))
