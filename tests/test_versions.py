"""The declared versions of the libraries whose private API the trainers lean on are bounded and installed."""

from __future__ import annotations

import importlib.util

from packaging.requirements import Requirement

from helpers.project import ROOT


def load_check():
    spec = importlib.util.spec_from_file_location("check_versions", ROOT / ".ci" / "check_versions.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_this_environment_is_within_the_declared_bounds() -> None:
    check = load_check()
    assert check.problems(check.declared_requirements(ROOT / "setup.cfg")) == []


def test_an_unbounded_or_missing_requirement_and_an_installed_version_outside_are_refused() -> None:
    check = load_check()
    requirements = check.declared_requirements(ROOT / "setup.cfg")
    requirements["transformers"] = Requirement("transformers>=4.56")  # no upper bound
    requirements["torch"] = Requirement("torch>=0.1,<0.2")  # the installed torch is newer
    del requirements["datasets"]
    found = check.problems(requirements)
    assert len(found) == 3
    assert any("transformers>=4.56 needs" in problem and "upper" in problem for problem in found)
    assert any(problem.startswith("torch ") and "outside the declared" in problem for problem in found)
    assert "datasets is not declared in setup.cfg" in found
