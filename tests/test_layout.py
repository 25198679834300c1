"""The project's layout rules that a reader cannot see from one file: dependencies that point one way (absolute
imports only, `importlib.import_module` of a literal name included), tests that import helpers and never each
other, a tests folder of test modules and helpers only, no import-path surgery, no shadowing names."""

from __future__ import annotations

import ast
import importlib.machinery
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.project import ROOT

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


# --- the dependency rule -------------------------------------------------------------------------------------------

# What each package may import from this project: scripts -> trainers, explain -> pipelines; trainers may use explain
# (explanation-enhanced distillation trains on Grad-CAM), explain never uses trainers, pipelines uses neither, and
# no package uses scripts or tests.
PROJECT = ("pipelines", "explain", "trainers", "scripts", "tests", "helpers")
ALLOWED = {
    "pipelines": {"pipelines"},
    "explain": {"pipelines", "explain"},
    "trainers": {"pipelines", "explain", "trainers"},
}
# Command lines: modules that parse a command line and run it. Libraries call the functions they wire, never these.
COMMAND_LINES = ("explain.cli", "explain.__main__")


def imported_modules(source: str) -> list[tuple[int, str]]:
    """(line, dotted name) of every module an `import`, `from ... import` or `importlib.import_module("...")` names,
    wherever it stands (a function body included); `from a import b` counts as `a.b` as well as `a`, since `b` may be
    a module. A relative import (`from . import x`) is named by its dots, which no rule allows."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            found.append((node.lineno, "." * node.level + (node.module or "")))
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.lineno, node.module))
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
        elif is_import_module_call(node) and isinstance(node.args[0], ast.Constant):
            found.append((node.lineno, str(node.args[0].value)))
    return found


def is_import_module_call(node: ast.AST) -> bool:
    """`importlib.import_module(...)` or `import_module(...)` with at least one argument."""
    if not isinstance(node, ast.Call) or not node.args:
        return False
    function = node.func
    name = function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", None)
    return name == "import_module"


def package_of(path: Path) -> str | None:
    parts = path.relative_to(ROOT).parts
    return parts[0] if parts[0] in ALLOWED else None


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def dependency_breaches(files: list[Path]) -> list[str]:
    breaches = []
    for path in files:
        package = package_of(path)
        if package is None:
            continue
        this = module_name(path)
        for line, name in imported_modules(path.read_text()):
            top = name.split(".")[0]
            where = f"{path.relative_to(ROOT)}:{line} imports {name}"
            if name.startswith("."):
                breaches.append(f"{where} (a relative import; name the package)")
            elif top in PROJECT and top not in ALLOWED[package]:
                breaches.append(f"{where} ({package} may use {', '.join(sorted(ALLOWED[package]))} only)")
            elif name in COMMAND_LINES and this not in COMMAND_LINES:
                breaches.append(f"{where} (a command line; import the library module it wires instead)")
    return breaches


def test_the_dependency_finder_sees_every_import_form(tmp_path: Path) -> None:
    source = (
        "import trainers.hub\nfrom explain import cli\ndef f():\n    from trainers.report import run\n"
        "from . import base\nimportlib.import_module('trainers.hub')\nimport_module(name)\n"
    )
    assert sorted(imported_modules(source)) == [
        (1, "trainers.hub"),
        (2, "explain"),
        (2, "explain.cli"),
        (4, "trainers.report"),
        (4, "trainers.report.run"),
        (5, "."),
        (6, "trainers.hub"),
    ]


def test_dependencies_point_one_way_and_no_library_imports_a_command_line() -> None:
    files = project_files()
    assert any(package_of(path) == "explain" for path in files)  # the listing sees the packages
    assert dependency_breaches(files) == []


def test_the_dependency_check_refuses_each_kind_of_breach(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    written = {
        "pipelines/a.py": "from explain.base import AttributionMethod\n",
        "explain/b.py": "import trainers.hub\n",
        "explain/c.py": "from explain.cli import main\n",
        "trainers/d.py": "from explain import cli\nfrom pipelines.io import make_folder\n",
        "explain/cli.py": "from explain.explainer import Explainer\n",
        "pipelines/e.py": "from .io import make_folder\n",
        "trainers/f.py": "import importlib\nimportlib.import_module('scripts.report')\n",
        "explain/g.py": "from helpers.data import make_medmnist_npz\n",
    }
    for name, text in written.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    breaches = dependency_breaches([tmp_path / name for name in written])
    assert [breach.split(" imports ")[0] for breach in breaches] == [
        "pipelines/a.py:1",
        "pipelines/a.py:1",
        "explain/b.py:1",
        "explain/c.py:1",
        "trainers/d.py:1",
        "pipelines/e.py:1",
        "trainers/f.py:2",
        "explain/g.py:1",
        "explain/g.py:1",
    ]


# --- tests import helpers, never each other --------------------------------------------------------------------------


def is_test_module(path: Path) -> bool:
    """A file pytest imports itself: a test module or a conftest."""
    return path.suffix == ".py" and (path.stem == "conftest" or path.stem.startswith("test_"))


def names_of_test_modules(folder: Path) -> set[str]:
    """Names under which pytest could import a test module or conftest anywhere under `folder`."""
    return {path.stem for path in folder.rglob("*.py") if is_test_module(path)}


def imports_of_test_modules(files: list[Path], test_names: set[str], root: Path) -> list[str]:
    """Each import of a test module (or conftest) in `files`, once per line (by the module's name, not its members)."""
    found: dict[tuple[Path, int], str] = {}
    for path in files:
        for line, name in imported_modules(path.read_text()):
            if test_names & set(name.split(".")):  # test_a, or tests.test_a
                found[path, line] = min(found.get((path, line), name), name, key=len)
    return [f"{path.relative_to(root)}:{line} imports {name}" for (path, line), name in sorted(found.items())]


def test_no_test_module_imports_another_test_module() -> None:
    tests = ROOT / "tests"
    files = sorted(tests.rglob("*.py"))
    assert imports_of_test_modules(files, names_of_test_modules(tests), ROOT) == []


def test_the_tests_folder_holds_test_modules_conftest_and_helpers_only() -> None:
    # A shared function lives in tests/helpers/, where every test file can import it; anywhere else in tests/ it
    # would be found only by the file beside it, or taken by pytest for tests.
    listed = [path.relative_to(ROOT / "tests") for path in project_files() if path.is_relative_to(ROOT / "tests")]
    assert listed  # the listing sees the tests
    misplaced = [
        str(path)
        for path in listed
        if path.parts[0] != "helpers" and not (len(path.parts) == 1 and is_test_module(path))
    ]
    assert misplaced == []


def test_the_test_import_check_finds_conftest_and_test_modules(tmp_path: Path) -> None:
    for name in ("conftest.py", "test_a.py", "test_b.py"):
        (tmp_path / name).write_text("")
    (tmp_path / "test_b.py").write_text(
        "from conftest import ROOT\nimport test_a\nfrom helpers.data import x\nfrom tests.test_a import y\n"
    )
    assert names_of_test_modules(tmp_path) == {"conftest", "test_a", "test_b"}
    found = imports_of_test_modules([tmp_path / "test_b.py"], names_of_test_modules(tmp_path), tmp_path)
    assert [entry.rsplit(" imports ", 1)[1] for entry in found] == [
        "conftest",
        "test_a",
        "tests.test_a",
    ]
