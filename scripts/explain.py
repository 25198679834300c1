"""Explain what an image classifier looks at: `python scripts/explain.py --model <folder or Hub id> [options]`.

    python scripts/explain.py --model runs/quickstart/teacher --dataset_name breastmnist \
        --compare_with runs/quickstart/student --misclassified --out runs/quickstart/explain

Inputs: a dataset spec (the same fields as scripts/finetune.py: --dataset_source, --dataset_name, --data_dir,
--medmnist_size, ...) and --split, or image files (--images a.png b.jpg). Writes into --out: overlay.png,
methods.png, models.png (with --compare_with), misclassified.png (with --misclassified) and index.json,
which says what each file shows.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

# This file shares its name with the `explain` package. Where scripts/ comes first on sys.path (`python
# scripts/explain.py`, or a test that imports scripts by name), `import explain` would find this file instead.
_HERE = Path(__file__).resolve().parent
_OTHER_PATHS = [entry for entry in sys.path if Path(entry or ".").resolve() != _HERE]
if __name__ == "__main__":
    sys.path[:] = _OTHER_PATHS
elif __name__ == "explain":  # imported in place of the package: hand the importer the package instead
    _saved, sys.path[:] = list(sys.path), _OTHER_PATHS
    try:
        del sys.modules["explain"]
        sys.modules["explain"] = importlib.import_module("explain")
    finally:
        sys.path[:] = _saved

from explain.workflow import parse_arguments, run_explain  # noqa: E402
from pipelines import run_cli  # noqa: E402
from pipelines.locks import run_folder_lock  # noqa: E402


def main(argv: list[str] | None = None) -> dict:
    explain_args, data_args = parse_arguments(argv)
    with run_folder_lock(explain_args.out):  # one writer per output folder
        index = run_explain(explain_args, data_args)
    for entry in index["files"]:
        print(f"{entry['file']}: {entry['shows']}")
    print(f"index: {explain_args.out}/index.json")
    return index


if __name__ == "__main__":
    run_cli(main)
