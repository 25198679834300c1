"""Fault injection for the reliability tests: run a script in a subprocess that stops where a test says, then kill it.

As a program (``python tests/helpers/faults.py finetune <config.yaml> [--key value ...]``, or under ``accelerate launch``)
it runs scripts/<name>.py's `main` with faults set by environment variables:

- ``FAULT_PAUSE_AT_STEP=N``: after optimizer step N, write ``paused-rank<R>`` into ``FAULT_DIR`` and block, so
  that a test can SIGKILL the run at a known point (mid-way between two checkpoints) without racing it.
- ``FAULT_PAUSE_IN_FINAL_SAVE=1``: block the same way once the final model is written to its staging folder,
  before any file is moved into place (marker ``final-save-rank<R>``).
- ``FAULT_RESUME_WHEN=<path>``: a paused run goes on once that file exists (without it, it waits to be killed).
- ``FAULT_NAN_AT_STEP=N`` (with ``FAULT_NAN_RANK=R``, default every rank): the training loss of step N is NaN.
- ``FAULT_PAUSE_AT_MAPS_BATCH=N`` (``python tests/helpers/faults.py explain ...``, i.e. `python -m explain`): block before
  the N-th batch of maps is written, the batches before it in their shard files.

As a module it gives the tests the launching, waiting and killing.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import itertools
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts"


def load_script(name: str) -> ModuleType:
    """scripts/<name>.py as a module (scripts/ is no package, and stays off sys.path)."""
    spec = importlib.util.spec_from_file_location(f"faults_script_{name}", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------- the program side


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def _block(marker: str) -> None:
    """Tell the test where we are, then wait to be killed (or for FAULT_RESUME_WHEN's file to appear)."""
    folder = Path(os.environ["FAULT_DIR"])
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{marker}-rank{_rank()}").write_text(str(os.getpid()))
    resume = os.environ.get("FAULT_RESUME_WHEN")
    if not resume:
        threading.Event().wait()  # for ever: the test kills this process
    while not Path(resume).exists():
        time.sleep(0.1)


def _install_faults(script: ModuleType) -> None:
    import torch
    from transformers import TrainerCallback

    import trainers.checkpoints
    from trainers.distillation import DistillationTrainer
    from trainers.image_classification import ImageClassificationTrainer

    pause_step = int(os.environ.get("FAULT_PAUSE_AT_STEP", "0"))
    if pause_step:

        class PauseAt(TrainerCallback):
            def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                if state.global_step == pause_step:
                    _block("paused")

        original_train_and_save = script.train_and_save

        def train_and_save(trainer: Any) -> None:
            trainer.add_callback(PauseAt())
            original_train_and_save(trainer)

        script.train_and_save = train_and_save

    if os.environ.get("FAULT_PAUSE_IN_FINAL_SAVE"):
        original_move = trainers.checkpoints.move_into_place

        def move_into_place(staging: Path, output_dir: Path) -> None:
            _block("final-save")
            original_move(staging, output_dir)

        trainers.checkpoints.move_into_place = move_into_place

    maps_batch = int(os.environ.get("FAULT_PAUSE_AT_MAPS_BATCH", "0"))
    if maps_batch:
        import explain.maps_dataset

        original_rows = explain.maps_dataset.rows_table
        batches = itertools.count(1)

        def rows_table(*args: Any, **kwargs: Any) -> Any:
            if next(batches) == maps_batch:
                _block("paused")
            return original_rows(*args, **kwargs)

        explain.maps_dataset.rows_table = rows_table

    nan_step = int(os.environ.get("FAULT_NAN_AT_STEP", "0"))
    nan_rank = os.environ.get("FAULT_NAN_RANK")
    if nan_step and (nan_rank is None or int(nan_rank) == _rank()):
        for trainer_class in (ImageClassificationTrainer, DistillationTrainer):
            _poison_loss(trainer_class, nan_step, torch)


def _poison_loss(trainer_class: type, step: int, torch: Any) -> None:
    original = trainer_class.__dict__["compute_loss"]

    def compute_loss(self: Any, model: Any, inputs: Any, return_outputs: bool = False, num_items_in_batch: Any = None):
        result = original(self, model, inputs, return_outputs, num_items_in_batch)
        if not (model.training and self.state.global_step + 1 == step):
            return result
        loss, outputs = result if return_outputs else (result, None)
        loss = loss * torch.tensor(float("nan"), device=loss.device)
        return (loss, outputs) if return_outputs else loss

    trainer_class.compute_loss = compute_loss


def main() -> None:
    from pipelines.errors import run_cli

    name, argv = sys.argv[1], sys.argv[2:]
    script = importlib.import_module("explain.cli") if name == "explain" else load_script(name)
    _install_faults(script)
    run_cli(lambda: script.main(argv))


# ---------------------------------------------------------------- the test side


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def command(script: str, config: Path, *overrides: str, processes: int = 1, faults: bool = False) -> list[str]:
    """The command line running scripts/<script>.py (through this program when `faults`), on 1 or more processes."""
    target = [str(Path(__file__)), script] if faults else [str(SCRIPTS / f"{script}.py")]
    arguments = [*target, str(config), *overrides]
    if processes == 1:
        return [sys.executable, *arguments]
    accelerate = str(Path(sys.executable).with_name("accelerate"))
    return [
        accelerate,
        "launch",
        "--multi_gpu",
        "--num_processes",
        str(processes),
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(free_port()),
        *arguments,
    ]


def environment(**faults: object) -> dict[str, str]:
    env = {**os.environ, "ACCELERATE_USE_CPU": "true"}
    env.update({key: str(value) for key, value in faults.items()})
    return env


def run(
    cmd: list[str], log: Path, env: dict[str, str] | None = None, timeout: int = 600
) -> subprocess.CompletedProcess:
    """Run to the end; stdout and stderr go to `log` (also returned, as text) so that nothing blocks on a pipe."""
    with open(log, "w") as out:
        result = subprocess.run(
            cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env or environment(), timeout=timeout
        )
    result.stdout = log.read_text()
    return result


def start(cmd: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=env)


def wait_for(markers: list[Path], process: subprocess.Popen, log: Path, limit_s: float = 480) -> None:
    """Wait until every marker file exists; fail at once if the run ends first (the limit only stops a hang)."""
    deadline = time.monotonic() + limit_s
    while not all(marker.exists() for marker in markers):
        if process.poll() is not None:
            raise AssertionError(
                f"the run ended (status {process.returncode}) before the fault:\n{log.read_text()[-3000:]}"
            )
        if time.monotonic() > deadline:
            kill_tree(process)
            raise AssertionError(f"no {markers} after {limit_s} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


def kill_tree(process: subprocess.Popen) -> None:
    """SIGKILL the process and every process under it, by id (torchrun starts its workers in their own sessions)."""
    import psutil

    try:
        parent = psutil.Process(process.pid)
        victims = [*parent.children(recursive=True), parent]
    except psutil.NoSuchProcess:
        victims = []
    for victim in victims:
        with contextlib.suppress(psutil.NoSuchProcess):  # already gone
            victim.kill()
    process.wait(timeout=60)
    psutil.wait_procs(victims, timeout=60)


def markers(fault_dir: Path, name: str, processes: int) -> list[Path]:
    return [fault_dir / f"{name}-rank{rank}" for rank in range(processes)]


if __name__ == "__main__":
    main()
