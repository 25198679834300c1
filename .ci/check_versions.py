"""Fail unless the installed torch, torchvision, transformers, datasets and accelerate are within the bounds that
setup.cfg declares, and each bound has an upper limit (the next major version).

trainers/compat.py uses private Trainer methods that any transformers release may change; the
declared range is the one the suite runs against (the lower bound is the release it was last run on; CI installs
the newest within it and runs the whole suite, tests/test_compat.py included, on exactly that).
"""

from __future__ import annotations

import configparser
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from packaging.requirements import Requirement

GUARDED = ("torch", "torchvision", "transformers", "datasets", "accelerate")


def declared_requirements(setup_cfg: Path) -> dict[str, Requirement]:
    parser = configparser.ConfigParser()
    parser.read(setup_cfg)
    lines = [line.strip() for line in parser["options"]["install_requires"].splitlines() if line.strip()]
    return {(requirement := Requirement(line)).name.lower(): requirement for line in lines}


def problems(requirements: dict[str, Requirement]) -> list[str]:
    found = []
    for name in GUARDED:
        requirement = requirements.get(name)
        if requirement is None:
            found.append(f"{name} is not declared in setup.cfg")
            continue
        operators = {spec.operator for spec in requirement.specifier}
        if not {">=", "<"} <= operators:
            found.append(f"{requirement} needs a lower bound (>=, the tested release) and an upper one (<)")
        try:
            installed = version(name)
        except PackageNotFoundError:
            found.append(f"{name} is not installed")
            continue
        if not requirement.specifier.contains(installed, prereleases=True):
            found.append(f"{name} {installed} is installed, outside the declared {requirement.specifier}")
        print(f"{name} {installed} (declared {requirement.specifier})")
    return found


if __name__ == "__main__":
    errors = problems(declared_requirements(Path(__file__).resolve().parents[1] / "setup.cfg"))
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    sys.exit(1 if errors else 0)
