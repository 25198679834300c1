"""The evaluation report: evaluate and compare models on one dataset split, with an explanation report card.

    python scripts/report.py --models runs/quickstart/teacher runs/quickstart/student \\
        --dataset_name breastmnist --split test --output_dir report

The first model is the reference (the teacher): every other model's Grad-CAM maps are compared with its maps.
Writes report/index.md (tables and figures), report/metrics.json (every number), and the PNGs. The work is
`trainers.report.run`; under `accelerate launch` the processes share it.
"""

from __future__ import annotations

import pipelines.quiet  # noqa: F401  first: drops upstream deprecation noise before transformers loads

# isort: split
import shlex
import sys

from pipelines import DataArguments, run_cli
from pipelines.config import parse_flags
from trainers.report.arguments import ReportArguments
from trainers.report.run import run_report


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    args, data_args = parse_flags((ReportArguments, DataArguments), argv, prog="scripts/report.py")
    return run_report(args, data_args, "python scripts/report.py " + shlex.join(argv))


if __name__ == "__main__":
    run_cli(main)
