"""Issue 29, finding 7: the quickstart recipes find their data when run as their comments say, not only through
make (which points MEDMNIST_ROOT at the bundled files beside the checkout)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from pipelines.medmnist_npz import locate_medmnist, medmnist_file_name, search_folders

from helpers.data import SHARED_MEDMNIST
from helpers.project import ROOT

QUICKSTARTS = ["quickstart.yaml", "quickstart_distill.yaml", "vit_quickstart.yaml", "vit_quickstart_distill.yaml"]
# A command in a config's comment: `[MEDMNIST_ROOT=<folder>] accelerate launch scripts/<script>.py configs/<name>`.
COMMAND = re.compile(r"^#\s+(?:MEDMNIST_ROOT=(\S+) )?accelerate launch scripts/\w+\.py (configs/\S+)$", re.MULTILINE)


@pytest.mark.parametrize("name", QUICKSTARTS)
def test_the_quickstart_commands_find_the_data_they_say(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = (ROOT / "configs" / name).read_text()
    recipe = yaml.safe_load(text)
    commands = COMMAND.findall(text)
    roots = [root for root, config in commands if config == f"configs/{name}"]
    assert None not in roots and "" in roots and len(roots) == 2, commands  # one with MEDMNIST_ROOT, one without
    file_name = medmnist_file_name(recipe["dataset_name"], recipe["medmnist_size"])
    assert f"{file_name} is read from $MEDMNIST_ROOT, else ~/.medmnist (downloaded there when missing)" in " ".join(
        line.lstrip("# ") for line in text.splitlines()
    )
    # The search order the comment states is the loader's (run from the checkout, as the comment says).
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("HOME", str(tmp_path))
    [bundled] = [root for root in roots if root]
    monkeypatch.setenv("MEDMNIST_ROOT", bundled)
    assert search_folders(None) == [Path(bundled), tmp_path / ".medmnist"]
    if not (SHARED_MEDMNIST / file_name).is_file():
        pytest.skip(f"the bundled {file_name} is not beside this checkout ({SHARED_MEDMNIST})")
    found = locate_medmnist(recipe["dataset_name"], recipe["medmnist_size"], None, download=False)
    assert found.resolve() == (SHARED_MEDMNIST / file_name).resolve()
