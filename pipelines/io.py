"""Files written so that a run that dies never leaves one that looks complete."""

from __future__ import annotations

import io
import json
import math
import os
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any

from pipelines.errors import UserFacingError


class OutputPathError(UserFacingError, OSError):
    """An output folder that cannot be made because a file stands where it, or one of its parents, would be."""


def _file_mode() -> int:
    """The mode a plain `open()` would give a new file (0o666 less the umask); `mkstemp` would leave 0o600."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


FILE_MODE = _file_mode()


def check_output_folder(folder: str | Path) -> None:
    """Fail at once when `folder` could not be made: it, or one of its parents, is an existing file.

    Scripts call this before their long work, so that a mistyped --output_dir is refused before anything runs.

    Raises:
        OutputPathError: naming the file in the way.
    """
    folder = Path(folder)
    for path in (folder, *folder.parents):
        if path.exists() and not path.is_dir():
            named = "" if path == folder else f" (needed for {folder})"
            raise OutputPathError(f"Output folder {path}{named} is an existing file; give a folder path instead.")


def make_folder(folder: str | Path) -> Path:
    """Create `folder` and its parents if missing; a file in the way is a one-sentence `OutputPathError`."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        check_output_folder(folder)  # names the file in the way
        raise  # a race (the file went away again): the original error is the best description
    return folder


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, then rename it into place (atomic on POSIX)."""
    path = Path(path)
    make_folder(path.parent)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.chmod(temporary, FILE_MODE)
    try:
        with os.fdopen(handle, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, data: Any) -> None:
    """Write `data` as strict JSON, atomically: a NaN or infinite number (an AUC undefined on a split holding one
    class) is written as null, since the NaN that Python's json writes by default is not JSON to other readers."""
    atomic_write_text(path, json.dumps(finite_or_null(data), indent=2, allow_nan=False) + "\n")


def finite_or_null(data: Any) -> Any:
    """`data` with every NaN or infinite float inside dicts, lists and tuples replaced by None."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {key: finite_or_null(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [finite_or_null(value) for value in data]
    return data


def atomic_save_figure(figure: Any, path: str | Path, dpi: int = 120) -> None:
    """Save a matplotlib figure as PNG, atomically."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    atomic_write_bytes(path, buffer.getvalue())


# In a folder while a run writes its outputs there: written before the first output, removed after the last (the
# folder's index), so a killed or failed run's folder says that its files are not one finished run.
PARTIAL_NAME = "PARTIAL"


def mark_partial(folder: str | Path) -> None:
    """Write `folder`'s PARTIAL marker, naming the command; call it before the run's first output."""
    command = shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]])
    atomic_write_text(
        Path(folder) / PARTIAL_NAME,
        f"Incomplete: `{command}` began writing this folder and did not finish (killed or failed), so its files "
        "may mix that run's with an earlier one's. Run the command again; it removes this file when it is done.\n",
    )


def finish_partial(folder: str | Path) -> None:
    """Remove `folder`'s PARTIAL marker; call it after the run's last output."""
    (Path(folder) / PARTIAL_NAME).unlink(missing_ok=True)


def cache_dir() -> Path:
    """This project's cache folder (`$XDG_CACHE_HOME/see-what-you-shrink`, else `~/.cache/see-what-you-shrink`)."""
    root = os.environ.get("XDG_CACHE_HOME") or Path("~/.cache").expanduser()
    return Path(root) / "see-what-you-shrink"
