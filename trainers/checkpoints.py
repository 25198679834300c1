"""Checkpoints and the final model on disk: which checkpoint is whole, and a final save a kill cannot half-finish."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from pipelines.errors import ConfigError
from pipelines.models.loading import PICKLED_WEIGHTS, SAFE_WEIGHTS

logger = logging.getLogger(__name__)

CHECKPOINT_PATTERN = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")
# Trainer writes a checkpoint's trainer_state.json last (after weights, optimizer, scheduler and RNG states),
# so a checkpoint whose state file is missing or cut short was being written when the run died.
TRAINER_STATE = "trainer_state.json"
# The final save is staged here, inside output_dir so that the moves below stay on one file system (atomic).
STAGING_FOLDER = ".final-model.partial"
# A run folder vouches for itself through these two files: `from_pretrained` needs config.json, and metrics.json
# is written after evaluation. Both are removed before the final save and come back last.
COMPLETION_MARKERS = ("metrics.json", "config.json")


# The weights of a saved model, in the formats `from_pretrained` reads.
WEIGHT_FILES = SAFE_WEIGHTS + PICKLED_WEIGHTS


def holds_trained_model(folder: str | Path) -> bool:
    """Whether `folder` holds a finished model: its config.json (which the final save moves in last) and weights."""
    folder = Path(folder)
    return (folder / "config.json").is_file() and any((folder / name).is_file() for name in WEIGHT_FILES)


def refuse_to_replace_a_model(output_dir: str | Path, args: Any) -> None:
    """Refuse a fresh training run into a folder that holds a trained model (a teacher students were distilled from,
    say), which its final save would replace; resuming a run there, or ``overwrite_output_dir``, is allowed.

    Raises:
        ConfigError: the folder holds a trained model, and the run neither resumes nor may overwrite it.
    """
    if not args.do_train or args.overwrite_output_dir or not holds_trained_model(output_dir):
        return
    resume = str(args.resume_from_checkpoint).lower()
    if resume == "true" and newest_complete_checkpoint(output_dir) is not None:
        return  # continues the run whose checkpoint it finds there (with none, it would start afresh)
    if resume not in ("true", "none", "false", ""):
        return  # continues the run of the checkpoint it names
    raise ConfigError(
        f"{output_dir} already holds a trained model, which this run would replace; give another output_dir, or "
        "pass --overwrite_output_dir true to replace it."
    )


def is_complete_checkpoint(folder: str | Path) -> bool:
    """True when `folder` holds a trainer state that parses, i.e. Trainer finished writing the checkpoint."""
    try:
        json.loads((Path(folder) / TRAINER_STATE).read_text())
    except (OSError, ValueError):
        return False
    return True


def newest_complete_checkpoint(output_dir: str | Path) -> Path | None:
    """The highest-numbered complete ``checkpoint-N`` in `output_dir`; newer incomplete ones are skipped with a warning."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return None
    numbered = [
        (int(match.group(1)), child)
        for child in folder.iterdir()
        if child.is_dir() and (match := CHECKPOINT_PATTERN.match(child.name))
    ]
    for _, checkpoint in sorted(numbered, reverse=True):
        if is_complete_checkpoint(checkpoint):
            return checkpoint
        logger.warning(
            "Skipping %s: it has no readable %s, so the run died while saving it.", checkpoint, TRAINER_STATE
        )
    return None


def is_finished(checkpoint: str | Path, args: Any) -> bool:
    """Whether `checkpoint` was saved after the run's last optimizer step (``max_steps``, else the planned total)."""
    state = json.loads((Path(checkpoint) / TRAINER_STATE).read_text())
    target = args.max_steps if args.max_steps > 0 else state.get("max_steps", 0)
    return target > 0 and state["global_step"] >= target


def save_final_model(trainer: Any) -> None:
    """`trainer.save_model()` into ``args.output_dir`` such that a run killed part-way leaves no folder that loads.

    The model is saved into a hidden staging folder inside `output_dir`, then each file is fsynced and renamed
    into place (atomic on POSIX), config.json last: until it arrives the folder cannot be loaded, and metrics.json
    (written after evaluation) is gone too. A staging folder left by a killed run is discarded.
    """
    args = trainer.args
    output_dir = Path(args.output_dir)
    staging = output_dir / STAGING_FOLDER
    if args.should_save:
        shutil.rmtree(staging, ignore_errors=True)
        for name in COMPLETION_MARKERS:
            (output_dir / name).unlink(missing_ok=True)
    trainer.save_model(str(staging), _internal_call=True)
    if args.should_save:
        move_into_place(staging, output_dir)
    if args.push_to_hub:
        # What Trainer.save_model does after saving when it is not an internal call.
        trainer.push_to_hub(commit_message="Model save", revision=args.hub_revision)


def move_into_place(staging: Path, output_dir: Path) -> None:
    """Rename everything in `staging` into `output_dir`, config.json last, and remove `staging`."""
    entries = sorted(staging.iterdir(), key=lambda path: (path.name == "config.json", path.name))
    for entry in entries:
        if entry.is_file():
            _fsync(entry)
        target = output_dir / entry.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(entry, target)
    _fsync_folder(output_dir)
    staging.rmdir()


def _fsync(path: Path) -> None:
    """Flush a file to disk so that the rename cannot land before its data (a crash of the machine, not only of us)."""
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_folder(folder: Path) -> None:
    handle = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)
