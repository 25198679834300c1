"""Numbers about explanations, for the evaluation report: faithfulness, the randomisation check, and agreement
between a reference model's maps (the teacher's) and another model's (a student's) on the same images."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from explain.agreement import blank_maps, randomized_copy, rank_correlation, top_fraction_iou
from explain.faithfulness import deletion_insertion, random_maps
from explain.registry import make_method


@dataclass
class Faithfulness:
    """Deletion/insertion areas of a method's maps and of random maps on the same images (means over images),
    plus the mean curves for plotting."""

    deletion_auc: float
    insertion_auc: float
    random_deletion_auc: float
    random_insertion_auc: float
    fractions: np.ndarray
    deletion_curve: np.ndarray
    insertion_curve: np.ndarray
    random_deletion_curve: np.ndarray
    random_insertion_curve: np.ndarray
    images: int

    def numbers(self) -> dict[str, float | int]:
        return {
            "deletion_auc": self.deletion_auc,
            "insertion_auc": self.insertion_auc,
            "random_deletion_auc": self.random_deletion_auc,
            "random_insertion_auc": self.random_insertion_auc,
            "images": self.images,
        }


def explain_maps(
    model: nn.Module, method: str, pixel_values: torch.Tensor, targets: torch.Tensor | None, **options: object
) -> tuple[torch.Tensor, torch.Tensor]:
    """Maps (N, H, W) and explained targets (N,) of `method` on `model`."""
    explanation = make_method(method, model, **options)(pixel_values, targets)
    return explanation.maps, explanation.target


def faithfulness(
    model: nn.Module,
    pixel_values: torch.Tensor,
    maps: torch.Tensor,
    targets: torch.Tensor,
    steps: int = 20,
    batch_size: int = 64,
    seed: int = 0,
    dtype: torch.dtype | None = None,
) -> Faithfulness:
    """Deletion and insertion (K = `steps`) for `maps` and for uniform random maps, on the same inputs."""
    multi_label = getattr(getattr(model, "config", None), "problem_type", None) == "multi_label_classification"
    options = {"steps": steps, "batch_size": batch_size, "multi_label": multi_label, "dtype": dtype}
    curves = deletion_insertion(model, pixel_values, maps, targets, **options)
    baseline = deletion_insertion(model, pixel_values, random_maps(maps, seed), targets, **options)
    return Faithfulness(
        deletion_auc=float(curves.deletion_auc.mean()),
        insertion_auc=float(curves.insertion_auc.mean()),
        random_deletion_auc=float(baseline.deletion_auc.mean()),
        random_insertion_auc=float(baseline.insertion_auc.mean()),
        fractions=curves.fractions.numpy(),
        deletion_curve=curves.deletion.mean(0).numpy(),
        insertion_curve=curves.insertion.mean(0).numpy(),
        random_deletion_curve=baseline.deletion.mean(0).numpy(),
        random_insertion_curve=baseline.insertion.mean(0).numpy(),
        images=int(pixel_values.shape[0]),
    )


def mean_over(values: np.ndarray, keep: np.ndarray) -> float:
    """Mean of `values` where `keep` holds; NaN when nothing is kept, since a mean of nothing is no score (a 0
    would read as a passed randomisation check or as no agreement)."""
    return float(values[keep].mean()) if keep.any() else float("nan")


@dataclass
class Randomization:
    """Per-image rank correlation between a trained model's maps and a re-initialised copy's, and which of the
    two maps of each image are blank (pairs with a blank map are left out of the mean)."""

    rank_correlation: np.ndarray  # (N,)
    blank: np.ndarray  # (N,) bool: the trained model's map is blank
    reinitialised_blank: np.ndarray  # (N,) bool: the re-initialised model's map is blank

    @property
    def compared(self) -> np.ndarray:
        return ~(self.blank | self.reinitialised_blank)

    def numbers(self) -> dict[str, float | int]:
        return {
            "rank_correlation_mean": mean_over(self.rank_correlation, self.compared),
            "pairs": int(self.compared.sum()),
            "blank_maps": int(self.blank.sum()),
            "blank_reinitialised_maps": int(self.reinitialised_blank.sum()),
            "images": int(len(self.rank_correlation)),
        }


def randomization(
    model: nn.Module,
    method: str,
    pixel_values: torch.Tensor,
    maps: torch.Tensor,
    targets: torch.Tensor,
    seed: int = 0,
    **options: object,
) -> Randomization:
    """Compare `maps` of the trained model with the same method's maps of the same architecture with
    re-initialised weights, for the same targets. Low correlation means the maps depend on what was learnt."""
    reinitialised_maps, _ = explain_maps(randomized_copy(model, seed), method, pixel_values, targets, **options)
    return Randomization(
        rank_correlation=rank_correlation(maps, reinitialised_maps).cpu().numpy(),
        blank=blank_maps(maps).cpu().numpy(),
        reinitialised_blank=blank_maps(reinitialised_maps).cpu().numpy(),
    )


@dataclass
class Agreement:
    """Per-image similarity of two models' maps for the same class, which of those maps are blank (pairs with a
    blank map are left out of the means), and how often the two models predict alike."""

    rank_correlation: np.ndarray  # (N,)
    top_iou: np.ndarray  # (N,)
    same_prediction: float
    reference_blank: np.ndarray  # (N,) bool
    other_blank: np.ndarray  # (N,) bool

    @property
    def compared(self) -> np.ndarray:
        return ~(self.reference_blank | self.other_blank)

    def numbers(self, top_fraction: float) -> dict[str, float | int]:
        return {
            "rank_correlation_mean": mean_over(self.rank_correlation, self.compared),
            f"top{round(top_fraction * 100)}_iou_mean": mean_over(self.top_iou, self.compared),
            "prediction_agreement": self.same_prediction,  # over every image: predictions need no map
            "images": int(len(self.top_iou)),
            "pairs": int(self.compared.sum()),
            "blank_maps": int(self.other_blank.sum()),
            "blank_reference_maps": int(self.reference_blank.sum()),
        }


def agreement(
    reference_maps: torch.Tensor,
    other_maps: torch.Tensor,
    reference_predictions: torch.Tensor,
    other_predictions: torch.Tensor,
    top_fraction: float = 0.1,
) -> Agreement:
    """Compare maps of two models explaining the same class of the same images (any two resolutions)."""
    return Agreement(
        rank_correlation=rank_correlation(reference_maps, other_maps).cpu().numpy(),
        top_iou=top_fraction_iou(reference_maps, other_maps, top_fraction).cpu().numpy(),
        same_prediction=float((reference_predictions == other_predictions).float().mean()),
        reference_blank=blank_maps(reference_maps).cpu().numpy(),
        other_blank=blank_maps(other_maps).cpu().numpy(),
    )


@dataclass
class ExplanationScores:
    """Everything one method's explanations of several models on the same images come to."""

    numbers: dict[str, dict[str, dict]]  # model -> {"faithfulness": ..., "randomization": ..., ["agreement": ...]}
    curves: dict[str, Faithfulness]  # model -> its faithfulness curves
    distributions: dict[str, dict[str, np.ndarray]]  # non-reference model -> agreement of each compared pair


def score_explanations(
    models: dict[str, nn.Module],
    pixel_values: dict[str, torch.Tensor],
    method: str,
    reference_targets: dict[str, torch.Tensor],
    predictions: dict[str, torch.Tensor],
    steps: int = 20,
    top_fraction: float = 0.1,
    batch_size: int = 64,
    seed: int = 0,
    dtype: torch.dtype | None = None,
) -> ExplanationScores:
    """Faithfulness and the randomisation check of each model's maps for its own predictions, and agreement of
    each model's maps with the first model's (the reference) for the class the reference predicts.

    Args:
        models: Name -> classifier; the first is the reference.
        pixel_values: Name -> (N, C, H, W) the same N images, preprocessed for that model.
        method: An explanation method's name.
        reference_targets: Name -> (N,) the reference's predicted class, as that model's output index.
        predictions: Name -> (N,) or (N, L) the model's predictions in a shared label order.
    """
    options = {"dtype": dtype, "batch_size": batch_size}
    numbers, curves, distributions = {}, {}, {}
    reference, reference_maps = next(iter(models)), None
    for name, model in models.items():
        inputs = pixel_values[name]
        maps, targets = explain_maps(model, method, inputs, None, **options)
        curves[name] = faithfulness(model, inputs, maps, targets, steps, batch_size, seed, dtype)
        numbers[name] = {
            "faithfulness": curves[name].numbers(),
            "randomization": randomization(model, method, inputs, maps, targets, seed, **options).numbers(),
        }
        common_maps, _ = explain_maps(model, method, inputs, reference_targets[name], **options)
        if name == reference:
            reference_maps = common_maps
            continue
        result = agreement(reference_maps, common_maps, predictions[reference], predictions[name], top_fraction)
        numbers[name]["agreement"] = result.numbers(top_fraction)
        # Only the compared pairs, so that the histograms (and their means) show what the report's means average.
        compared = result.compared
        distributions[name] = {
            "rank_correlation": result.rank_correlation[compared],
            "top_iou": result.top_iou[compared],
        }
    return ExplanationScores(numbers, curves, distributions)
