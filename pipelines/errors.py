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


def failure_reason(error: Exception, token: str | None = None) -> str:
    """``Type: first line of the message`` for a one-sentence error about a failed Hub call, with the token (given,
    or HF_TOKEN, where the scripts put it) masked: huggingface_hub's messages can quote the request."""
    reason = str(error).splitlines()[0] if str(error) else ""
    secret = token or os.environ.get("HF_TOKEN")
    if secret:
        reason = reason.replace(secret, "***")
    return f"{type(error).__name__}: {reason}" if reason else type(error).__name__


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
    # One write per line: processes of a distributed run share stderr, and print() writes the newline separately.
    sys.stderr.write(f"error: {one_line(error)}\n")
    sys.stderr.flush()
    sys.exit(2)


def one_line(error: UserFacingError) -> str:
    """The error's own sentence.

    A DataLoader worker re-raises our error in the main process with the worker's traceback put before the
    sentence ("Caught DataError in DataLoader worker process 0. Original Traceback ..."); the sentence is the
    traceback's last line, after the exception's qualified name.
    """
    message = str(error)
    if "\nOriginal Traceback" not in message:
        return message
    last = message.rstrip().splitlines()[-1]
    return last.partition(": ")[2] or last
