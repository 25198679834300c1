"""Model building and file writing details that other tests rely on."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from transformers import DeiTForImageClassification, DeiTForImageClassificationWithTeacher

from pipelines import DataError
from pipelines.io import atomic_write_text
from pipelines.models import build_classifier

from helpers.models import PROCESSOR_32, TINY_RESNET, TINY_VIT


def test_a_deit_config_builds_the_plain_head_unless_asked_for_the_distillation_head() -> None:
    deit = {**TINY_VIT, "model_type": "deit"}
    plain, _ = build_classifier(deit, ["a", "b"], image_processor_config=PROCESSOR_32)
    assert type(plain) is DeiTForImageClassification
    with_teacher, _ = build_classifier(
        deit, ["a", "b"], image_processor_config=PROCESSOR_32, model_class=DeiTForImageClassificationWithTeacher
    )
    assert type(with_teacher) is DeiTForImageClassificationWithTeacher


def test_a_misspelt_config_field_is_named_instead_of_ignored() -> None:
    with pytest.raises(DataError, match="a 'resnet' config has no field 'depthz' \\(did you mean 'depths'\\?\\)"):
        build_classifier({**TINY_RESNET, "depthz": [1]}, ["a", "b"], image_processor_config=PROCESSOR_32)
    model, _ = build_classifier({**TINY_RESNET, "depths": [2, 1]}, ["a", "b"], image_processor_config=PROCESSOR_32)
    assert len(model.resnet.encoder.stages[0].layers) == 2  # a real field still reaches the model


def test_atomic_writes_get_the_permissions_of_a_plain_open(tmp_path: Path) -> None:
    atomic_write_text(tmp_path / "atomic.txt", "x")
    (tmp_path / "plain.txt").write_text("x")
    assert os.stat(tmp_path / "atomic.txt").st_mode == os.stat(tmp_path / "plain.txt").st_mode
