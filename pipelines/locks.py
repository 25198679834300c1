"""One writer per run folder: a lock file naming its holder, held while a script writes into the folder.

Two runs into one output_dir corrupt each other silently (one loaded the other's checkpoint as its "best" and
reported the other's AUC), so a script takes the folder's lock before its long work and a second run is refused
in one sentence naming the holder. A lock whose holder died (SIGKILL, a crashed machine) names a process that no
longer runs on this host: the next run takes it over with a warning. Under `accelerate launch` only the main
process of a run takes the lock (the others of the same run write nothing there).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shlex
import signal
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from pipelines.errors import UserFacingError
from pipelines.io import OutputPathError, make_folder

# A leading underscore: Trainer's push_to_hub leaves out files named "_*", so the holder's pid and host stay local.
LOCK_NAME = "_run.lock"

logger = logging.getLogger(__name__)


class FolderInUseError(UserFacingError):
    """Another live run holds the folder's lock."""


@dataclass(frozen=True)
class LockHolder:
    """Who holds a folder's lock: what the lock file says."""

    pid: int
    host: str
    started: str  # UTC, ISO 8601 to the second
    command: str

    @classmethod
    def this_process(cls) -> LockHolder:
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        return cls(os.getpid(), socket.gethostname(), started, shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]))

    def describe(self) -> str:
        return f"pid {self.pid} on host {self.host}, since {self.started} ({self.command})"

    def is_dead(self) -> bool:
        """True only when the holder is known to be gone: a process of this host that no longer runs."""
        if self.host != socket.gethostname():
            return False  # another machine's process cannot be checked from here
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False  # it runs, under another user
        return False


def is_main_process() -> bool:
    """False in the other processes of a distributed run (torchrun and accelerate set RANK in each of them)."""
    return os.environ.get("RANK", "0").strip() in ("", "0")


@contextlib.contextmanager
def run_folder_lock(*folders: str | Path) -> Iterator[None]:
    """Hold the lock of every folder in `folders` while the block runs; the main process only.

    Each folder is created if missing (and removed again if the block left it empty). The locks are released when
    the block ends, also on an error, Ctrl-C or SIGTERM (which is turned into `SystemExit` meanwhile, so that the
    release runs); a SIGKILL leaves a lock that the next run finds stale and takes over.

    Raises:
        FolderInUseError: a folder is held by a live run; the message names it.
        OutputPathError: a folder cannot be created or written (a file in the way, read-only, no permission).
    """
    if not is_main_process():
        yield
        return
    held: list[tuple[Path, LockHolder, bool]] = []
    with _exit_on_sigterm():
        try:
            for folder in dict.fromkeys(Path(folder) for folder in folders):  # distill's two folders may be one
                created = not folder.exists()
                held.append((folder, acquire(folder), created))
            yield
        finally:
            for folder, holder, created in reversed(held):
                release(folder, holder)
                if created:  # a run refused before it wrote anything leaves no empty folder behind
                    with contextlib.suppress(OSError):  # not empty: the run's outputs stay
                        folder.rmdir()


def acquire(folder: str | Path) -> LockHolder:
    """Create `folder`'s lock file for this process; take over a stale one (its holder died) with a warning."""
    folder = Path(folder)
    _make_writable_folder(folder)
    path = folder / LOCK_NAME
    mine = LockHolder.this_process()
    for _ in range(2):  # a second try only after taking over a stale lock
        try:
            handle = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = read_holder(path)
            if holder is None or not holder.is_dead():
                raise FolderInUseError(_in_use_message(folder, path, holder)) from None
            _take_over(path, holder)
            continue
        except OSError as error:
            raise _unwritable(folder, error) from None
        with os.fdopen(handle, "w") as out:
            out.write(json.dumps(asdict(mine)) + "\n")
        return mine
    raise FolderInUseError(_in_use_message(folder, path, read_holder(path)))  # another run took it over first


def release(folder: str | Path, holder: LockHolder) -> None:
    """Remove `folder`'s lock file if `holder` still holds it (a run that took it over keeps it)."""
    path = Path(folder) / LOCK_NAME
    if read_holder(path) == holder:
        path.unlink(missing_ok=True)


def read_holder(path: Path) -> LockHolder | None:
    """The holder a lock file names; None when it cannot be read (gone, or cut short)."""
    try:
        return LockHolder(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _take_over(path: Path, stale: LockHolder) -> None:
    # Every kind of run folder has a lock (training, a maps dataset, a report), so the note names what this folder
    # holds instead of guessing (a maps folder has no checkpoints).
    logger.warning(
        "Taking over %s: it names %s, which no longer runs (the run was killed); what it left stays: %s.",
        path,
        stale.describe(),
        contents_text(path.parent),
    )
    if read_holder(path) == stale:  # not a lock that another run has just taken over
        path.unlink(missing_ok=True)


def contents_text(folder: Path, shown: int = 4) -> str:
    """What `folder` holds besides its lock, e.g. 'checkpoint-4, config.json and 3 more' ('nothing' when empty)."""
    names = sorted(entry.name for entry in folder.iterdir() if entry.name != LOCK_NAME)
    if not names:
        return "nothing"
    listed = ", ".join(names[:shown])
    return f"{listed} and {len(names) - shown} more" if len(names) > shown else listed


def _in_use_message(folder: Path, path: Path, holder: LockHolder | None) -> str:
    if holder is None:
        return (
            f"{folder} is locked by {path}, which names no readable holder; delete that file if no run is writing "
            "there, or give another folder."
        )
    return (
        f"{folder} is in use by another run ({holder.describe()}); wait for it to finish or give another folder "
        f"(if that process is not a run writing there, delete {path})."
    )


def _make_writable_folder(folder: Path) -> None:
    try:
        make_folder(folder)
    except OutputPathError:
        raise
    except OSError as error:
        raise _unwritable(folder, error) from None


def _unwritable(folder: Path, error: OSError) -> OutputPathError:
    reason = error.strerror or type(error).__name__
    return OutputPathError(f"Output folder {folder} cannot be written ({reason}); give a folder you can write to.")


@contextlib.contextmanager
def _exit_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into `SystemExit` while the block runs, where Python would otherwise die without cleaning up.

    Left alone when another handler is installed already, or outside the main thread (where Python allows none).
    """
    installed = False
    with contextlib.suppress(ValueError):  # ValueError: not the main thread
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _raise_system_exit)
            installed = True
    try:
        yield
    finally:
        if installed:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _raise_system_exit(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)
