"""`python -m explain ...` and `accelerate launch -m explain ...`: see `explain.cli`."""

from explain.cli import main
from pipelines.errors import run_cli

if __name__ == "__main__":
    run_cli(main)
