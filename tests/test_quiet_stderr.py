"""Nothing on stderr that is not ours (#29, finding 5): every command's --help and a tiny real report, explain and
int8 shrink, each in a fresh interpreter, as a user runs them.

"Ours" is exactly: a line of one of our progress bars (`pipelines.progress`, named as in `OUR_BARS`), or a line of
the Hugging Face libraries' own bars over real work (`UPSTREAM_BARS`: transformers loading a checkpoint's weights,
datasets preparing a split). A warning, a deprecation note or a stray print fails the test, naming the line.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.quiet import UpstreamNoiseFilter

from helpers.data import make_medmnist_npz
from helpers.models import save_tiny_classifiers
from helpers.project import ROOT

OUR_BARS = re.compile(
    r"(predictions|latency|explanations and faithfulness|audit maps|corruptions|corrupted maps|maps)( \(.+\))?: "
)
UPSTREAM_BARS = re.compile(r"(Loading weights|Generating \w+ split): ")
HELP = [
    [f"scripts/{name}.py", "--help"]
    for name in ("finetune", "distill", "lr_find", "report", "shrink", "app", "benchmark")
] + [["-m", "explain", "--help"]]


def not_ours(stderr: str) -> list[str]:
    """The pieces of `stderr` (cut at newlines and at a bar's carriage returns) that no bar of ours or of the
    libraries' wrote."""
    pieces = [piece.strip() for piece in re.split(r"[\r\n]", stderr)]
    return [piece for piece in pieces if piece and not (OUR_BARS.match(piece) or UPSTREAM_BARS.match(piece))]


def run(arguments: list[str]) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, *arguments], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("quiet")
    make_medmnist_npz(root / "data" / "breastmnist.npz", counts=(8, 6, 11))
    save_tiny_classifiers(root, ("resnet", "vit"))
    return root


@pytest.mark.slow
@pytest.mark.parametrize("arguments", HELP, ids=lambda arguments: " ".join(arguments))
def test_help_writes_nothing_on_stderr(arguments: list[str]) -> None:
    done = run(arguments)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip()  # the help itself (benchmark.py prints its docstring)
    assert not_ours(done.stderr) == []


@pytest.mark.slow
def test_tiny_report_explain_and_shrink_write_only_progress_on_stderr(tiny: Path) -> None:
    data = ["--dataset_name", "breastmnist", "--data_dir", str(tiny / "data"), "--verify_md5", "false"]
    commands = {
        "report": [
            *("scripts/report.py", "--models", str(tiny / "resnet"), str(tiny / "vit"), *data),
            *("--output_dir", str(tiny / "report"), "--explain_images", "4", "--steps", "3", "--latency_repeats", "2"),
            *("--sample_images", "2", "--device", "cpu"),
        ],
        "explain": [
            *("-m", "explain", "--model_name_or_path", str(tiny / "vit"), "--output_dir", str(tiny / "explain")),
            *(*data, "--explain_images", "2", "--methods", "gradcam", "--device", "cpu"),
        ],
        # optimum-quanto's import logs torch's "No CUDA runtime is found" on a machine with a CUDA toolkit and no GPU.
        "shrink": [
            *("scripts/shrink.py", "--model_name_or_path", str(tiny / "vit"), "--output_dir", str(tiny / "int8")),
            *("--shrink_method", "int8"),
        ],
    }
    for name, arguments in commands.items():
        done = run(arguments)
        assert done.returncode == 0, (name, done.stderr[-2000:])
        assert not_ours(done.stderr) == [], name
    assert (tiny / "report" / "index.md").is_file() and (tiny / "explain" / "index.json").is_file()
    assert (tiny / "int8" / "shrink.json").is_file()


def record(logger: str, message: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord(logger, logging.WARNING, __file__, 1, message, args, None)


def test_the_filters_drop_exactly_the_two_upstream_messages() -> None:
    """Fast and exact: the messages the slow tests see are dropped; the same loggers' other messages, and another
    library's enum, are kept."""
    import enum

    pytree, cpp = UpstreamNoiseFilter("torch.utils._pytree"), UpstreamNoiseFilter("torch.utils.cpp_extension")
    enum_note = "%s is an Enum subclass and is now natively supported by torch.compile as an opaque value type."
    torchao_enum = enum.Enum("KernelPreference", "AUTO")
    torchao_enum.__module__ = "torchao.quantization.quantize_.common.kernel_preference"
    assert not pytree.filter(record("torch.utils._pytree", enum_note, torchao_enum))
    assert pytree.filter(record("torch.utils._pytree", enum_note, enum.Enum("Other", "A")))
    assert pytree.filter(record("torch.utils._pytree", "some other warning %s", torchao_enum))
    assert not cpp.filter(record("torch.utils.cpp_extension", "No CUDA runtime is found, using CUDA_HOME='%s'", "/x"))
    assert cpp.filter(record("torch.utils.cpp_extension", "Error building extension '%s'", "quanto_cpp"))
