"""Reliability, second pass (issue 14): one writer per run folder, EXIF orientation, images that fail only when
decoded, and errors that used to end in a traceback or lose their cause."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import faults
import pytest
from conftest import load_script, make_medmnist_npz, tiny_run_config, write_config

from pipelines.errors import UserFacingError
from pipelines.locks import LOCK_NAME, FolderInUseError, read_holder, run_folder_lock

# ---------------------------------------------------------------- 1. one writer per run folder


def dead_pid() -> int:
    """The id of a process of this host that has ended (its parent reaped it)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def write_lock(folder: Path, pid: int, host: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    holder = {"pid": pid, "host": host, "started": "2026-01-01T00:00:00Z", "command": "finetune.py old.yaml"}
    (folder / LOCK_NAME).write_text(json.dumps(holder))


def test_a_held_folder_is_refused_in_one_sentence_naming_the_holder(tmp_path: Path) -> None:
    with run_folder_lock(tmp_path / "run"):
        holder = read_holder(tmp_path / "run" / LOCK_NAME)
        assert (holder.pid, holder.host) == (os.getpid(), socket.gethostname())
        with pytest.raises(FolderInUseError) as refused, run_folder_lock(tmp_path / "run"):
            pass
    message = str(refused.value)
    assert f"pid {os.getpid()} on host {socket.gethostname()}" in message and "\n" not in message
    assert not (tmp_path / "run").exists()  # released, and the folder it made (left empty) removed


def test_a_lock_of_a_process_on_another_host_is_never_taken_over(tmp_path: Path) -> None:
    write_lock(tmp_path / "run", dead_pid(), "some-other-machine")
    with pytest.raises(FolderInUseError, match="on host some-other-machine"), run_folder_lock(tmp_path / "run"):
        pass
    assert read_holder(tmp_path / "run" / LOCK_NAME).host == "some-other-machine"  # left as it was


def test_a_stale_lock_is_taken_over_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    pid = dead_pid()
    write_lock(tmp_path / "run", pid, socket.gethostname())
    with caplog.at_level(logging.WARNING), run_folder_lock(tmp_path / "run"):
        assert read_holder(tmp_path / "run" / LOCK_NAME).pid == os.getpid()
    assert f"it names pid {pid} on host {socket.gethostname()}" in caplog.text
    assert "no longer runs" in caplog.text
    assert not (tmp_path / "run" / LOCK_NAME).exists()


def test_an_unreadable_lock_is_refused_saying_which_file_to_delete(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / LOCK_NAME).write_text("")  # a holder killed between creating and writing it
    with pytest.raises(FolderInUseError, match="delete that file if no run"), run_folder_lock(tmp_path / "run"):
        pass


def test_the_lock_is_released_on_an_error_and_the_outputs_stay(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), run_folder_lock(tmp_path / "run"):
        (tmp_path / "run" / "metrics.json").write_text("{}")
        raise RuntimeError("the run failed")
    assert sorted(path.name for path in (tmp_path / "run").iterdir()) == ["metrics.json"]


def test_the_lock_is_released_on_sigterm(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    code = (
        "import sys, time\nfrom pipelines.locks import run_folder_lock\n"
        f"with run_folder_lock({str(folder)!r}):\n    print('held', flush=True)\n    time.sleep(120)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=faults.ROOT)
    assert holder.stdout.readline().strip() == "held"
    assert read_holder(folder / LOCK_NAME).pid == holder.pid
    holder.send_signal(signal.SIGTERM)
    assert holder.wait(timeout=60) == 128 + signal.SIGTERM
    assert not (folder / LOCK_NAME).exists()


def test_the_other_processes_of_a_distributed_run_take_no_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with run_folder_lock(tmp_path / "run"):  # the run's main process (rank 0) holds it
        monkeypatch.setenv("RANK", "1")
        with run_folder_lock(tmp_path / "run"):  # rank 1 of the same run is not refused
            assert read_holder(tmp_path / "run" / LOCK_NAME).pid == os.getpid()


def unwritable_folder(tmp_path: Path) -> Path:
    """A folder this process cannot create: under a read-only folder, or (as root, whom modes do not stop) sysfs."""
    if os.geteuid() != 0:
        locked = tmp_path / "read-only"
        locked.mkdir(mode=0o555)
        return locked / "run"
    if not Path("/sys/kernel").is_dir():
        pytest.skip("running as root without sysfs: no folder here refuses a write")
    return Path("/sys/swys-read-only-run")


def test_an_output_dir_that_cannot_be_written_is_one_sentence(tmp_path: Path, npz_dir: Path) -> None:
    output_dir = unwritable_folder(tmp_path)
    config = write_config(tmp_path / "c.yaml", **tiny_run_config(tmp_path, npz_dir, output_dir=str(output_dir)))
    with pytest.raises(UserFacingError, match=f"Output folder {output_dir} cannot be written") as refused:
        load_script("finetune").main([str(config)])
    assert "\n" not in str(refused.value)


@pytest.mark.slow
def test_a_second_run_into_a_live_runs_folder_is_refused_and_the_first_keeps_its_own_metrics(tmp_path: Path) -> None:
    data = tmp_path / "data"
    make_medmnist_npz(data / "breastmnist.npz", counts=(64, 24, 24))
    # Evaluated and saved every 2 steps, best model reloaded at the end: the path on which run A used to load run
    # B's checkpoint as its own "best".
    values = tiny_run_config(
        tmp_path,
        data,
        max_steps=6,
        eval_strategy="steps",
        eval_steps=2,
        save_strategy="steps",
        save_steps=2,
        load_best_model_at_end=True,
        metric_for_best_model="auc",
    )
    config = write_config(tmp_path / "run.yaml", **values)
    go = tmp_path / "faults" / "go"
    first = faults.start(
        faults.command("finetune", config, "--seed", "1", faults=True),
        tmp_path / "first.log",
        faults.environment(FAULT_PAUSE_AT_STEP=3, FAULT_DIR=tmp_path / "faults", FAULT_RESUME_WHEN=go),
    )
    try:
        faults.wait_for(faults.markers(tmp_path / "faults", "paused", 1), first, tmp_path / "first.log")
        before = sorted(path.relative_to(tmp_path).as_posix() for path in (tmp_path / "run").rglob("*"))
        second = faults.run(faults.command("finetune", config, "--seed", "2"), tmp_path / "second.log")
        after = sorted(path.relative_to(tmp_path).as_posix() for path in (tmp_path / "run").rglob("*"))
        go.write_text("")
        assert first.wait(timeout=300) == 0, (tmp_path / "first.log").read_text()[-3000:]
    finally:
        if first.poll() is None:
            faults.kill_tree(first)
    assert second.returncode == 2, second.stdout[-3000:]
    refusal = second.stdout.strip().splitlines()[-1]
    assert refusal.startswith(f"error: {tmp_path / 'run'} is in use by another run (pid {first.pid} on host ")
    assert "Traceback" not in second.stdout
    assert after == before  # the refused run wrote nothing into the folder
    assert not (tmp_path / "run" / LOCK_NAME).exists()

    # Run A's metrics are those of run A alone: the same run (seed 1), by itself, in a fresh folder.
    alone = faults.run(
        faults.command("finetune", config, "--seed", "1", "--output_dir", str(tmp_path / "alone")),
        tmp_path / "alone.log",
    )
    assert alone.returncode == 0, alone.stdout[-3000:]
    shared = json.loads((tmp_path / "run" / "metrics.json").read_text())
    own = json.loads((tmp_path / "alone" / "metrics.json").read_text())
    for split in ("validation", "test"):
        for metric in ("accuracy", "auc", "loss"):
            assert shared[split][metric] == pytest.approx(own[split][metric], abs=1e-5), (split, metric)
