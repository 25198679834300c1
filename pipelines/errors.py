"""Errors a user can fix, and the one place that turns them into a one-sentence exit."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import NoReturn


class UserFacingError(Exception):
    """Bad input or a missing resource; the message alone tells the user what is wrong and how to fix it."""


class DataError(UserFacingError, ValueError):
    """A dataset file, folder or column that cannot be used as given."""


class OfflineError(UserFacingError, OSError):
    """Something must be downloaded, but this machine is offline or the download failed."""


class ConfigError(UserFacingError, ValueError):
    """A run configuration with an unknown key or an invalid value."""


def is_offline() -> bool:
    """True when the user asked the Hugging Face libraries to stay offline."""
    return any(
        os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}
        for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def run_cli(main: Callable[[], object]) -> None:
    """Run a script's `main`; a `UserFacingError` ends it with one line on stderr and exit status 2."""
    try:
        main()
    except UserFacingError as error:
        _exit_with(error)


def _exit_with(error: UserFacingError) -> NoReturn:
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)
