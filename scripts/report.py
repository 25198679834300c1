"""The evaluation report: evaluate and compare models on one dataset split, with an explanation report card.

    python scripts/report.py --models runs/quickstart/teacher runs/quickstart/student \\
        --dataset_name breastmnist --split test --out report

The first model is the reference (the teacher): every other model's Grad-CAM maps are compared with its maps.
Writes report/index.md (tables and figures), report/metrics.json (every number), and the PNGs. Replaces
scripts/evaluate.py, whose name shadowed the `evaluate` library; the work is `trainers.evaluation_run`.
"""

from __future__ import annotations

from pipelines import run_cli
from trainers.evaluation_run import evaluate


def main(argv: list[str] | None = None) -> dict:
    return evaluate(argv)


if __name__ == "__main__":
    run_cli(main)
