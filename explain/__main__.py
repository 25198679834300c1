"""`python -m explain ...` and `accelerate launch -m explain ...`: see `explain.cli`."""

import pipelines.quiet  # noqa: F401  first: drops upstream deprecation noise before transformers loads

# isort: split
from explain.cli import main
from pipelines.errors import run_cli

if __name__ == "__main__":
    run_cli(main)
