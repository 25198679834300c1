"""Every piece of advice a command prints names an option that command has.

A user told "--allow_pickle on the command line" by a script that then rejects --allow_pickle has hit a dead end.
The walk: for each command, the modules of this project it can reach (its imports, followed through the packages,
lazy imports inside functions included), every `--option` named in the sentences those modules raise, warn or log,
checked against the options the command's own ``--help`` lists. Two rules keep it to what the command can say:
- a module that belongs to some commands (`OWNERS`: the report's package, shrink's, the benchmark's, a training
  run's checkpoints, the explain CLI, the explorer) speaks to their users only; every other module is shared and must fit every command that
  reaches it;
- a sentence inside an argument class (a class whose fields are options) speaks only where that class is parsed.
"""

from __future__ import annotations

import ast
import contextlib
import io
import re
from functools import cache
from pathlib import Path

import pytest

import explain.cli
from pipelines.config import parse_flags

from helpers.project import ROOT, load_script

PACKAGES = ("pipelines", "trainers", "explain")
OPTION = re.compile(r"--([a-z][a-z0-9_-]*[a-z0-9])")
# Calls whose text a user reads as advice: warnings and log records (errors are read from `raise` statements;
# printed results may name another command's options when they say what was measured).
SPEAKING_CALLS = {"warn", "warning", "info", "error", "exception", "Warning", "Info"}
# Modules (folders or files, relative to the checkout) that belong to some commands only.
OWNERS = {
    "trainers/report": {"report"},
    "trainers/shrink": {"shrink"},
    "trainers/benchmark": {"benchmark"},
    "trainers/checkpoints.py": {"finetune", "distill", "lr_find"},  # a training run's output folder
    "explain/cli.py": {"explain"},
    "explain/maps_dataset.py": {"explain"},
    "explain/explorer.py": {"app"},
}
# The benchmark builds its models from presets and saves them itself, and makes its own images: the loaders' and
# image readers' advice (--allow_pickle, --data_dir) cannot reach its user, so only its own modules are walked.
OWN_MODULES_ONLY = {"benchmark"}
# Options every command reads from argparse itself, and the `--key value` of the option reader's own sentences.
ALWAYS_THERE = {"help", "key"}


def module_file(name: str) -> Path | None:
    """The source file of a project module (a package's __init__.py for a package), or None outside the project."""
    if name.split(".")[0] not in PACKAGES:
        return None
    path = ROOT.joinpath(*name.split("."))
    for candidate in (path.with_suffix(".py"), path / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path) -> set[str]:
    """The project modules `path` imports anywhere in its body (module level or inside a function); the project
    imports absolutely only."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)  # `from package import module`
    return {name for name in names if module_file(name) is not None}


@cache
def reachable_files(script: Path) -> frozenset[Path]:
    """Every project source file the script reaches through imports, the script included."""
    seen: set[Path] = {script}
    queue = [script]
    while queue:
        for name in imported_modules(queue.pop()):
            parts = name.split(".")
            for depth in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__.py and a/b/__init__.py too
                file = module_file(".".join(parts[:depth]))
                if file is not None and file not in seen:
                    seen.add(file)
                    queue.append(file)
    return frozenset(seen)


def owners(path: Path) -> set[str] | None:
    """The commands a module belongs to, or None for a shared module."""
    relative = path.relative_to(ROOT).as_posix()
    return next((commands for prefix, commands in OWNERS.items() if relative.startswith(prefix)), None)


def spoken_texts(path: Path) -> list[tuple[int, str, frozenset[str]]]:
    """The string pieces of every raise, warning and log call in a file, with their line numbers and the fields of
    the class they sit in (empty outside a class)."""
    texts = []

    def visit(node: ast.AST, fields: frozenset[str]) -> None:
        if isinstance(node, ast.ClassDef):
            own = {
                item.target.id for item in node.body if isinstance(item, ast.AnnAssign) and hasattr(item.target, "id")
            }
            fields = frozenset(own)
        speaking = isinstance(node, ast.Raise) or (
            isinstance(node, ast.Call)
            and (getattr(node.func, "attr", None) or getattr(node.func, "id", None)) in SPEAKING_CALLS
        )
        if speaking:
            for part in ast.walk(node):
                if isinstance(part, ast.Constant) and isinstance(part.value, str):
                    texts.append((part.lineno, part.value, fields))
            return
        for child in ast.iter_child_nodes(node):
            visit(child, fields)

    visit(ast.parse(path.read_text()), frozenset())
    return texts


def help_options(main, argv: list[str]) -> set[str]:
    """The options a command's ``--help`` lists (underscore spelling)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        main(argv)
    return {name.replace("-", "_") for name in OPTION.findall(out.getvalue())}


def benchmark_options() -> set[str]:
    """Every benchmark command's options (its sub-commands share one script, and their messages its modules)."""
    script = load_script("benchmark")
    options: set[str] = set()
    for settings_class, _ in script.COMMANDS.values():
        out = io.StringIO()
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
            parse_flags((settings_class,), ["--help"])
        options |= {name.replace("-", "_") for name in OPTION.findall(out.getvalue())}
    return options


COMMANDS = {
    "finetune": lambda: help_options(load_script("finetune").main, ["--help"]),
    "distill": lambda: help_options(load_script("distill").main, ["--help"]),
    "lr_find": lambda: help_options(load_script("lr_find").main, ["--help"]),
    "report": lambda: help_options(load_script("report").main, ["--help"]),
    "shrink": lambda: help_options(load_script("shrink").main, ["--help"]),
    "app": lambda: help_options(load_script("app").main, ["--help"]),
    "benchmark": benchmark_options,
    "explain": lambda: help_options(explain.cli.main, ["--help"]),
}


def entry_file(command: str) -> Path:
    return ROOT / "explain" / "cli.py" if command == "explain" else ROOT / "scripts" / f"{command}.py"


def dead_ends(command: str) -> list[str]:
    options = COMMANDS[command]() | ALWAYS_THERE
    found = []
    for path in sorted(reachable_files(entry_file(command))):
        belongs = owners(path)
        if (belongs is not None and command not in belongs) or (command in OWN_MODULES_ONLY and belongs is None):
            continue
        for line, text, class_fields in spoken_texts(path):
            if not class_fields <= options:  # another command's argument class
                continue
            for option in (name.replace("-", "_") for name in OPTION.findall(text)):
                if option not in options:
                    found.append(f"{path.relative_to(ROOT)}:{line} names --{option}")
    return found


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_option_a_command_advises_is_one_it_has(command):
    assert dead_ends(command) == []


def test_the_walk_finds_the_loaders_advice_in_every_command_that_loads_a_model():
    """The walk reaches pipelines.models.loading, whose refusal of pickled weights advises --allow_pickle."""
    loading = ROOT / "pipelines" / "models" / "loading.py"
    advised = {option for _, text, _ in spoken_texts(loading) for option in OPTION.findall(text)}
    assert {"allow_pickle", "trust_remote_code"} <= advised
    for command in COMMANDS:
        if command != "benchmark":
            assert loading in reachable_files(entry_file(command)), command


def test_the_walk_names_an_option_a_command_lacks(tmp_path):
    """The check can fail: advice naming an option the command does not have is found."""
    script = tmp_path / "script.py"
    script.write_text('def main():\n    raise SystemExit("give --no_such_option true")\n')
    assert [option for _, text, _ in spoken_texts(script) for option in OPTION.findall(text)] == ["no_such_option"]
