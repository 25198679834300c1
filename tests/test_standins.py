"""The stand-in Hub checkpoints resolve through huggingface_hub's cache lookup, as a cached download does, and are
the published checkpoints: in the published cache exactly their published configs, in the smaller cache the
published configs with exactly the fields `SMALLER_STANDINS` changes, and in both the published preprocessors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import transformers
from huggingface_hub import try_to_load_from_cache
from safetensors import safe_open
from transformers import AutoConfig, AutoImageProcessor

from helpers.standins import HUB_STANDINS, SMALLER_STANDINS, config_differences, standin_ids

pytestmark = pytest.mark.skipif(not HUB_STANDINS.is_dir(), reason=f"{HUB_STANDINS} is absent")
HOMES = {"published": "standin_hf_home", "smaller": "smaller_standin_hf_home"}


@pytest.mark.parametrize("which", HOMES)
@pytest.mark.parametrize("repo_id", standin_ids())
def test_a_stand_in_resolves_by_its_hub_id_from_the_cache(
    request: pytest.FixtureRequest, which: str, repo_id: str
) -> None:
    cache = request.getfixturevalue(HOMES[which]) / "hub"
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = (repo / "refs" / "main").read_text()
    assert len(commit) == 40 and int(commit, 16) >= 0
    for name in ("config.json", "model.safetensors", "preprocessor_config.json"):
        assert try_to_load_from_cache(repo_id, name, cache_dir=cache) == str(repo / "snapshots" / commit / name)
    published = HUB_STANDINS / repo_id.replace("/", "--")
    config = AutoConfig.from_pretrained(repo_id, cache_dir=cache)
    assert config.model_type == json.loads((published / "config.json").read_text())["model_type"]
    assert config.architectures == json.loads((published / "config.json").read_text())["architectures"]
    expected = SMALLER_STANDINS.get(repo_id, {}) if which == "smaller" else {}
    assert config_differences(repo_id, config) == expected
    processor = AutoImageProcessor.from_pretrained(repo_id, cache_dir=cache)
    assert list(processor.image_mean) == json.loads((published / "preprocessor_config.json").read_text())["image_mean"]
    snapshot = repo / "snapshots" / commit
    assert (snapshot / "preprocessor_config.json").read_bytes() == (published / "preprocessor_config.json").read_bytes()
    # The weights are those of that config, tensor for tensor (save_pretrained renames some keys to the published
    # checkpoints' names, so the shapes are compared, not the names).
    with torch.device("meta"):
        model = getattr(transformers, config.architectures[0])(config)
    with safe_open(snapshot / "model.safetensors", "pt") as weights:
        saved = sorted(tuple(weights.get_slice(name).get_shape()) for name in weights.keys())  # noqa: SIM118
    assert saved == sorted(tuple(tensor.shape) for tensor in model.state_dict().values())


def test_the_non_distilled_deit_stand_in_is_a_plain_vit(standin_hf_home: Path) -> None:
    # Why the flagship distillation starts from the -distilled- checkpoint: only it has a distillation token.
    cache = standin_hf_home / "hub"
    assert AutoConfig.from_pretrained("facebook/deit-tiny-patch16-224", cache_dir=cache).model_type == "vit"
    assert AutoConfig.from_pretrained("facebook/deit-tiny-distilled-patch16-224", cache_dir=cache).model_type == "deit"
