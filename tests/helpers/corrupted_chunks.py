"""A program for the corruption tests: corrupt a fixed set of images in fixed chunks, each process of an `accelerate
launch` taking its share (as the report does), gather them in chunk order and save every corrupted pixel.

    python tests/helpers/corrupted_chunks.py OUT.npz [CHUNK]
    accelerate launch --multi_gpu --num_processes 2 tests/helpers/corrupted_chunks.py OUT.npz [CHUNK]

The images are generated from a fixed seed, grey at 64 px (so that the blurs, scaled from 224 px, still blur), and
corrupted by every family that applies to grey images at every severity, CHUNK images at a time (default 3); OUT.npz
holds one array per corruption and severity, written by the main process alone.
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from accelerate import PartialState

from pipelines.corruptions import SEVERITIES, corrupt, corruption_names
from trainers.report.split import in_order, my_chunks

IMAGES, CHUNK, SIDE, SEED = 7, 3, 64, 11


def images() -> torch.Tensor:
    """uint8 (IMAGES, 1, SIDE, SIDE): smooth structure (upsampled noise), as a scan has, and the same on every run."""
    coarse = np.random.default_rng(0).integers(0, 256, (IMAGES, 1, SIDE // 8, SIDE // 8)).astype(np.float32)
    smooth = torch.nn.functional.interpolate(torch.from_numpy(coarse), size=(SIDE, SIDE), mode="bilinear")
    return smooth.round().to(torch.uint8)


def main() -> None:
    torch.set_num_threads(1)
    state = PartialState(cpu=True)
    names = corruption_names("all", "pneumoniamnist", channels=1)
    pictures, rows = images(), np.arange(100, 100 + IMAGES)  # rows: the images' places in their split
    size = int(sys.argv[2]) if len(sys.argv) > 2 else CHUNK
    done = []
    for number, chunk in my_chunks(state, IMAGES, size):
        done.append(
            (
                number,
                {
                    f"{name}-{severity}": corrupt(
                        pictures[chunk], name, severity, "pneumoniamnist", SEED, rows[chunk]
                    ).numpy()
                    for name in names
                    for severity in SEVERITIES
                },
            )
        )
    chunks = in_order(state, done)
    if state.is_main_process:
        np.savez(sys.argv[1], **{key: np.concatenate([chunk[key] for chunk in chunks]) for key in chunks[0]})


if __name__ == "__main__":
    main()
