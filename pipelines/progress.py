"""Progress bars on the steps that take more than a few seconds: images done, images per second, time left.

One bar per step, on the main process only (the other processes of an `accelerate launch` run share the work but
not the terminal; each bar counts the main process's share, the same size as every other process's).

Where stderr is a terminal the bar redraws live. Where it is not (a log file, a pipe, CI) it is still shown, since
that is where a two-hour report is most often run, but redrawn at most every `LOG_INTERVAL_S` seconds and once at
the end: a log gets a line each half minute and the final count, time and rate, not thousands of lines.
``TQDM_DISABLE=1`` (tqdm's own setting) hides every bar.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from typing import Any

from tqdm.auto import tqdm

from pipelines.locks import is_main_process

LOG_INTERVAL_S = 30.0


def progress_bar(total: int, description: str, main_process: bool | None = None) -> tqdm:
    """A bar over `total` images, its rate in img/s, named `description`; disabled on any other process than the
    main one (`main_process`; None: this process's RANK says, as for `pipelines.locks`). Use it as a context
    manager and `update(images)` it."""
    options: dict[str, Any] = {"total": total, "desc": description, "unit": "img", "dynamic_ncols": True}
    if not (is_main_process() if main_process is None else main_process):
        options["disable"] = True  # passed only here, so that TQDM_DISABLE still applies on the main process
    if not sys.stderr.isatty():
        options["mininterval"] = LOG_INTERVAL_S
    return tqdm(**options)


def chunks_with_progress(
    chunks: Sequence[tuple[int, Sequence[int]]], description: str, main_process: bool | None = None
) -> Iterator[tuple[int, Sequence[int]]]:
    """`chunks` (chunk number, image positions) one by one, counting each chunk's images on a `progress_bar` once
    the loop body has finished with it."""
    with progress_bar(sum(len(positions) for _, positions in chunks), description, main_process) as bar:
        for number, positions in chunks:
            yield number, positions
            bar.update(len(positions))
