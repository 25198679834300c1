"""The project's layout rules that a reader cannot see from one file: no import-path surgery, no shadowing names."""

from __future__ import annotations

import ast
import importlib.machinery
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

PACKAGES = ("pipelines", "trainers", "explain")


def project_files() -> list[Path]:
    """Every .py file git knows in this checkout (tracked or new), so a virtual environment inside it is skipped."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return [ROOT / name for name in listed if (ROOT / name).is_file()]


def _is_sys_attribute(node: ast.AST, name: str) -> bool:
    """`sys.<name>`, or anything indexed or sliced out of it (`sys.path[:]`, `sys.modules["x"]`)."""
    while isinstance(node, ast.Subscript):
        node = node.value
    return (
        isinstance(node, ast.Attribute)
        and node.attr == name
        and isinstance(node.value, ast.Name)
        and node.value.id == "sys"
    )


def import_path_surgery(source: str) -> list[int]:
    """Lines that assign to, delete from or mutate `sys.path` / `sys.modules`."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        targets: list[ast.AST] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        elif isinstance(node, ast.Delete):
            targets = node.targets
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            mutators = {"insert", "append", "extend", "remove", "pop", "clear", "update", "setdefault"}
            if node.func.attr in mutators:
                targets = [node.func.value]
        if any(_is_sys_attribute(target, name) for target in targets for name in ("path", "modules")):
            lines.append(node.lineno)
    return sorted(lines)


def test_the_surgery_finder_finds_every_form() -> None:
    source = (
        "import sys\nsys.path[:] = []\nsys.path.insert(0, 'x')\nsys.modules['a'] = 1\ndel sys.modules['a']\n"
        "sys.path += ['y']\nsys.path = ['z']\nprint(sys.path, sys.modules.get('a'))\n"
    )
    assert import_path_surgery(source) == [2, 3, 4, 5, 6, 7]


def test_no_project_file_changes_sys_path_or_sys_modules() -> None:
    files = project_files()
    assert any(path.name == "cli.py" for path in files)  # the listing sees the packages, not only tests
    offenders = {
        str(path.relative_to(ROOT)): found for path in files if (found := import_path_surgery(path.read_text()))
    }
    assert offenders == {}


def importable_outside_the_checkout(name: str) -> bool:
    """`name` is a built-in module or is found on sys.path outside this checkout's root. The root's own folders are
    outputs (`make demo` writes report/ there, which the import system would take for a namespace package); this
    project's packages are PACKAGES."""
    if name in sys.builtin_module_names:
        return True
    search = [entry for entry in sys.path if Path(entry or ".").resolve() != ROOT.resolve()]
    return importlib.machinery.PathFinder.find_spec(name, search) is not None


def test_no_script_shares_a_name_with_an_importable_package() -> None:
    # python scripts/x.py puts scripts/ first on sys.path: a scripts/evaluate.py would be imported as `evaluate`.
    clashes = [
        path.name
        for path in (ROOT / "scripts").glob("*.py")
        if path.stem in PACKAGES or importable_outside_the_checkout(path.stem)
    ]
    assert clashes == []


def test_the_shadowing_check_finds_installed_and_built_in_modules_but_not_output_folders() -> None:
    assert importable_outside_the_checkout("evaluate") and importable_outside_the_checkout("sys")
    assert importable_outside_the_checkout("json")
    assert not importable_outside_the_checkout("report")  # whether or not make demo has written report/


def test_python_m_explain_help_names_the_maps_options() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "explain", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("usage: python -m explain ")
    assert all(option in result.stdout for option in ("--model", "--compare_with", "--save_maps", "--push_to_hub"))
