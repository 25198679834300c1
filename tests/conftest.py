"""Fixtures shared by the tests, and the set-up every test runs under: offline Hugging Face libraries and an
isolated cache. Helpers that tests import (data, models, stand-ins, fault injection) live in tests/helpers/."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# Before any Hugging Face import: offline failures are immediate, and nothing is written to the user's cache.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="swys-test-cache-")
os.environ.pop("HF_HOME", None)

import pytest  # noqa: E402
import torch  # noqa: E402

from helpers import rehearsal, standins  # noqa: E402
from helpers.data import make_medmnist_npz  # noqa: E402
from helpers.project import ROOT  # noqa: E402


@pytest.fixture
def npz_dir(tmp_path: Path) -> Path:
    """A folder with a generated BreastMNIST-format file (breastmnist.npz)."""
    make_medmnist_npz(tmp_path / "medmnist" / "breastmnist.npz")
    return tmp_path / "medmnist"


@pytest.fixture
def one_thread():
    """Compute with one thread, as each process of an `accelerate launch` does (accelerate gives each one), so that
    the numbers of a launched run and an in-process run can be compared to the bit."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def standin_caches(tmp_path_factory: pytest.TempPathFactory) -> standins.StandinCaches:
    """The published and the smaller stand-in Hugging Face homes, each checkpoint built the first time it is needed
    (random weights; see tests/helpers/standins.py)."""
    if not standins.HUB_STANDINS.is_dir():
        pytest.skip(f"no stand-in Hub checkpoints: {standins.HUB_STANDINS} is absent")
    return standins.StandinCaches(tmp_path_factory.mktemp("hf-homes"))


@pytest.fixture(scope="session")
def standin_hf_home(standin_caches: standins.StandinCaches) -> Path:
    """A Hugging Face home whose hub cache holds a stand-in of every checkpoint in ../shared/hub-standins/ at its
    published config, laid out as a download. Give it to subprocesses as HF_HOME."""
    return standin_caches.home(standins.standin_ids())


@pytest.fixture(scope="session")
def smaller_standin_hf_home(standin_caches: standins.StandinCaches) -> Path:
    """Like `standin_hf_home`, but the checkpoints in `standins.SMALLER_STANDINS` are built with those few published
    config fields changed (ViT-B/16 and ResNet-18 with fewer and narrower blocks); the others are at their published
    configs."""
    return standin_caches.home(standins.standin_ids(), smaller=True)


@pytest.fixture(scope="session")
def rehearsals(standin_caches: standins.StandinCaches, tmp_path_factory: pytest.TempPathFactory):
    """Every recipe in configs/ rehearsed at most once per session (a distill recipe's teacher recipe first): one
    per architecture family against the published stand-ins, the others against the smaller ones (which is which:
    tests/helpers/rehearsal.py)."""
    return rehearsal.Rehearsals(
        tmp_path_factory.mktemp("rehearsals"), standin_caches, sorted((ROOT / "configs").glob("*.yaml"))
    )
