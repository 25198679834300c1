"""The explorer: compare models' predictions and maps image by image in a Gradio page.

    python scripts/app.py --models runs/quickstart/teacher runs/quickstart/student \\
        --dataset_name pneumoniamnist --split test

Serves on http://127.0.0.1:7860 (--host, --port). Dataset spec: the same fields as `python -m explain`
(--dataset_source, --dataset_name, --data_dir, --medmnist_size, ...).

On a Hugging Face Space (`app_file: scripts/app.py`), run without arguments: the command line is read from the
Space variable EXPLORER_ARGS (e.g. ``--models user/teacher user/student --dataset_name pneumoniamnist``), and the
host from GRADIO_SERVER_NAME, which Spaces set to 0.0.0.0.
"""

from __future__ import annotations

import os
import sys
from dataclasses import fields

from transformers import HfArgumentParser

from explain.app import AppArguments, build_app, command_line, launch_options, start_session
from pipelines import DataArguments, run_cli


def parse_arguments(argv: list[str]) -> tuple[AppArguments, DataArguments]:
    namespace = vars(HfArgumentParser([AppArguments, DataArguments]).parse_args(argv))
    pick = lambda cls: cls(**{f.name: namespace[f.name] for f in fields(cls)})  # noqa: E731
    return pick(AppArguments), pick(DataArguments)


def main(argv: list[str] | None = None) -> None:
    argv = command_line(sys.argv[1:] if argv is None else argv, os.environ)
    args, data_args = parse_arguments(argv)
    session = start_session(args, data_args)
    build_app(session).launch(**launch_options(args.host, args.port))


if __name__ == "__main__":
    run_cli(main)
