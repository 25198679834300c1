"""The random maps' curves are computed once per model and batch for all the methods a report scores, and give the
same numbers as computing them for each method."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import explain.metrics.scores as scores_module
from explain.metrics.faithfulness import FaithfulnessSettings
from explain.metrics.scores import ScoredImages, explanation_parts

from helpers.explain_models import images, tiny

pytestmark = pytest.mark.usefixtures("one_thread")  # the models are tiny: one thread is faster


def test_methods_share_the_random_curves_and_their_numbers_are_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    models = {"teacher": tiny("vit", seed=0), "student": tiny("deit", seed=1)}
    pixels = images(6)
    with torch.no_grad():
        predictions = {name: model(pixel_values=pixels).logits.argmax(1) for name, model in models.items()}
    scored = ScoredImages(
        pixel_values={name: pixels for name in models},
        reference_targets={name: predictions["teacher"] for name in models},
        predictions=predictions,
        rows=[10, 11, 12, 13, 14, 15],
        paired=np.array([True, False, True, True, False, True]),
    )
    settings = FaithfulnessSettings(steps=4, random_maps=2, random_steps=2, road_fractions=(0.5,), batch_size=8)
    calls = []
    original = scores_module.random_parts
    monkeypatch.setattr(scores_module, "random_parts", lambda *args: calls.append(args[0]) or original(*args))

    cache = {}
    shared = {m: explanation_parts(models, scored, m, settings, random_cache=cache) for m in ("gradcam", "legrad")}
    assert len(calls) == 2  # once per model, not once per model and method
    for method in ("gradcam", "legrad"):
        alone = explanation_parts(models, scored, method, settings)
        for name in models:
            ours, theirs = shared[method][name].faithfulness, alone[name].faithfulness
            assert torch.equal(ours.baseline.deletion, theirs.baseline.deletion)
            assert all(torch.equal(a.insertion, b.insertion) for a, b in zip(ours.random, theirs.random))
            assert all(torch.equal(a.morf, b.morf) for a, b in zip(ours.random_road, theirs.random_road))
            assert torch.equal(ours.road.lerf, theirs.road.lerf) and torch.equal(
                ours.curves.deletion, theirs.curves.deletion
            )
    assert len(calls) == 2 + 4  # without the cache every call computes them again
