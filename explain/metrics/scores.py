"""Every measure of one method's maps for several models on the same images, as the evaluation report needs them:
each model's faithfulness and randomisation check for its own predictions, and each model's agreement with the
first model (the reference, e.g. the teacher) at the class the reference predicts.

`explanation_parts` is the per-image step for one chunk of images (its results for chunks concatenate) and
`scores_from_parts` the aggregate; `score_explanations` is the two on one batch."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from explain.metrics.agreement import Agreement, agreement
from explain.metrics.faithfulness import (
    Faithfulness,
    FaithfulnessParts,
    FaithfulnessSettings,
    RandomParts,
    aggregate_faithfulness,
    faithfulness_parts,
    random_parts,
)
from explain.metrics.randomization import Randomization, randomization
from explain.registry import explain_maps


@dataclass
class ExplanationScores:
    """Everything one method's explanations of several models on the same images come to."""

    numbers: dict[str, dict[str, dict]]  # model -> {"faithfulness": ..., "randomization": ..., ["agreement": ...]}
    curves: dict[str, Faithfulness]  # model -> its faithfulness curves
    distributions: dict[str, dict[str, np.ndarray]]  # non-reference model -> agreement of each compared pair


@dataclass
class ModelParts:
    """One model's per-image explanation measures for a batch of images, and how many of its maps were read from
    a maps dataset or computed (its own class for faithfulness and the randomisation check, the reference's for
    agreement; the re-initialised copy's maps are always computed and not counted)."""

    faithfulness: FaithfulnessParts
    randomization: Randomization
    agreement: Agreement | None  # None for the reference
    maps_read: int = 0
    maps_computed: int = 0


@dataclass
class ScoredImages:
    """One batch of N images as each model sees them, and what their maps are compared against.

    Attributes:
        pixel_values: Name -> (N, C, H, W) the same N images, preprocessed for that model.
        reference_targets: Name -> (N,) the reference's predicted class, as that model's output index.
        predictions: Name -> (N,) or (N, L) the model's predictions in a shared label order.
        given_maps: Name -> (maps (N, H, W), targets (N,)) of each model for its own predictions, computed once
            elsewhere (a maps dataset, `explain.maps_dataset.read_maps`); None: computed here. The agreement's maps
            at the reference's class are taken from them too wherever the model's own target is that class, and
            computed for the other images only.
        rows: (N,) the images' rows in their split, which seed each image's random maps and noise; None: 0 to N - 1.
        paired: (N,) bool, the images of the paired test (chosen over every explained image by a caller that
            scores a split in chunks); None: `paired_mask` over these N.
    """

    pixel_values: dict[str, torch.Tensor]
    reference_targets: dict[str, torch.Tensor]
    predictions: dict[str, torch.Tensor]
    given_maps: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None
    rows: Sequence[int] | None = None
    paired: np.ndarray | None = None


def explanation_parts(
    models: dict[str, nn.Module],
    images: ScoredImages,
    method: str,
    settings: FaithfulnessSettings | None = None,
    top_fraction: float = 0.1,
    reinitialised: dict[str, nn.Module] | None = None,
    random_cache: dict[str, RandomParts] | None = None,
) -> dict[str, ModelParts]:
    """The per-image part of `score_explanations` for one batch of images: each model's `ModelParts`.

    Args:
        models: Name -> classifier; the first is the reference.
        images: The images as each model sees them (`ScoredImages`).
        method: An explanation method's name.
        settings: How faithfulness is measured (its batch size, seed and dtype serve every measure).
        top_fraction: Share of top pixels the agreement's overlap compares.
        reinitialised: Name -> the model's `randomized_copy`, made once for many batches; None: made here.
        random_cache: Name -> the random maps' curves of this batch (`RandomParts`), shared by the methods scored
            on it: filled here, and reused while a model's targets stay the same; None: computed for each call.
    """
    settings = settings or FaithfulnessSettings()
    options = {"dtype": settings.dtype, "batch_size": settings.batch_size}
    given_maps = images.given_maps
    parts, reference, reference_maps = {}, next(iter(models)), None
    for name, model in models.items():
        inputs = images.pixel_values[name]
        if given_maps is not None:
            maps, targets = (tensor.to(inputs.device) for tensor in given_maps[name])
        else:
            maps, targets = explain_maps(model, method, inputs, None, **options)
        random = random_cache.get(name) if random_cache is not None else None
        if random is None or not random.fits(targets):
            random = random_parts(model, inputs, targets, settings, images.rows, images.paired)
            if random_cache is not None:
                random_cache[name] = random

        copy = None if reinitialised is None else reinitialised[name]
        given = (maps, targets) if given_maps is not None else None
        common_maps, computed = maps_at_class(model, method, inputs, images.reference_targets[name], given, options)
        own_read = len(maps) if given_maps is not None else 0
        parts[name] = ModelParts(
            faithfulness=faithfulness_parts(model, inputs, maps, targets, settings, images.rows, images.paired, random),
            randomization=randomization(model, method, inputs, maps, targets, settings.seed, copy, **options),
            agreement=None,
            maps_read=own_read + len(maps) - computed,
            maps_computed=len(maps) - own_read + computed,
        )
        if name == reference:
            reference_maps = common_maps
            continue
        parts[name].agreement = agreement(
            reference_maps, common_maps, images.predictions[reference], images.predictions[name], top_fraction
        )
    return parts


def maps_at_class(
    model: nn.Module,
    method: str,
    pixel_values: torch.Tensor,
    classes: torch.Tensor,
    given: tuple[torch.Tensor, torch.Tensor] | None,
    options: dict[str, object],
) -> tuple[torch.Tensor, int]:
    """(N, H, W) the model's maps for `classes` (N,), and how many of them were computed: the given maps (a maps
    dataset's, with their targets) where their target is that class, the method's maps for the others."""
    if given is None:
        return explain_maps(model, method, pixel_values, classes, **options)[0], len(classes)
    maps, targets = given
    missing = torch.nonzero(targets.cpu() != classes.cpu()).flatten()
    if len(missing) == 0:
        return maps, 0
    computed, _ = explain_maps(
        model, method, pixel_values[missing.to(pixel_values.device)], classes[missing], **options
    )
    maps = maps.clone()
    maps[missing.to(maps.device)] = computed.to(maps)
    return maps, len(missing)


def scores_from_parts(
    parts: Sequence[dict[str, ModelParts]], settings: FaithfulnessSettings | None = None, top_fraction: float = 0.1
) -> ExplanationScores:
    """The aggregate step: `ExplanationScores` from the `explanation_parts` of batches of images, in image order
    (one process, or every process's gathered)."""
    settings = settings or FaithfulnessSettings()
    numbers, curves, distributions = {}, {}, {}
    for name in parts[0]:
        own = [part[name] for part in parts]
        curves[name] = aggregate_faithfulness([part.faithfulness for part in own], settings)
        numbers[name] = {
            "faithfulness": curves[name].numbers(),
            "randomization": Randomization.concatenate([part.randomization for part in own]).numbers(),
            "maps": {
                "maps_read": sum(part.maps_read for part in own),
                "maps_computed": sum(part.maps_computed for part in own),
            },
        }
        if own[0].agreement is None:
            continue
        result = Agreement.concatenate([part.agreement for part in own])
        numbers[name]["agreement"] = result.numbers(top_fraction)
        # Only the compared pairs, so that the histograms (and their means) show what the report's means average.
        distributions[name] = {
            "rank_correlation": result.rank_correlation[result.compared],
            "top_iou": result.top_iou[result.compared],
        }
    return ExplanationScores(numbers, curves, distributions)


def score_explanations(
    models: dict[str, nn.Module],
    images: ScoredImages,
    method: str,
    settings: FaithfulnessSettings | None = None,
    top_fraction: float = 0.1,
) -> ExplanationScores:
    """Faithfulness and the randomisation check of each model's maps for its own predictions, and agreement of
    each model's maps with the first model's (the reference) for the class the reference predicts, on one batch
    of images: `explanation_parts`, then `scores_from_parts`.
    """
    parts = explanation_parts(models, images, method, settings, top_fraction)
    return scores_from_parts([parts], settings, top_fraction)
