"""Shrink a trained classifier into a copy that loads again: int8 (weights; static or dynamic activations too) or
structured pruning.

    python scripts/shrink.py runs/quickstart/teacher --shrink_method int8 --output_dir runs/quickstart/teacher-int8
    python scripts/shrink.py runs/quickstart/teacher --shrink_method int8 --int8_activations static \
        --dataset_name pneumoniamnist --output_dir runs/quickstart/teacher-int8-w8a8
    python scripts/shrink.py google/vit-base-patch16-224 --shrink_method int8 --int8_activations dynamic --output_dir vit-int8
    python scripts/shrink.py runs/quickstart/teacher --shrink_method prune --ratio 0.5 --output_dir runs/quickstart/teacher-pruned \\
        --recover_epochs 2 --dataset_name pneumoniamnist

The copy (safetensors, config, image processor, shrink.json, README.md) goes through scripts/report.py and
`python -m explain` like any other model. What each method does, and what it cannot do: trainers/shrink/.
"""

from __future__ import annotations

import pipelines.quiet  # noqa: F401  first: drops upstream deprecation noise before transformers loads

# isort: split
import shlex
import sys

from pipelines import DataArguments, run_cli
from pipelines.config import build, read_flags
from trainers.shrink.arguments import ShrinkArguments
from trainers.shrink.copies import shrink


def parse_arguments(argv: list[str]) -> tuple[ShrinkArguments, DataArguments | None]:
    """The shrink arguments, and the data arguments when a recovery fine-tune or a calibration needs data."""
    # The model comes first on the command line, without a flag, as in `shrink.py <model> --shrink_method ...`.
    if argv and not argv[0].startswith("-"):
        argv = ["--model_name_or_path", argv[0], *argv[1:]]
    values = read_flags((ShrinkArguments, DataArguments), argv, prog="scripts/shrink.py")
    args = build(ShrinkArguments, values)
    return args, build(DataArguments, values) if args.needs_data else None


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    args, data_args = parse_arguments(argv)
    record = shrink(args, data_args, "python scripts/shrink.py " + shlex.join(argv))
    print(f"{args.shrink_method} copy of {args.model_name_or_path} -> {args.output_dir}")
    return record


if __name__ == "__main__":
    run_cli(main)
