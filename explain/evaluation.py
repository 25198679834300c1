"""Numbers about explanations, for the evaluation report: faithfulness, the randomisation check, and agreement
between a reference model's maps (the teacher's) and another model's (a student's) on the same images."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import wilcoxon
from torch import nn

from explain.agreement import blank_maps, randomized_copy, rank_correlation, top_fraction_iou
from explain.faithfulness import FaithfulnessCurves, deletion_insertion, random_maps
from explain.registry import make_method
from explain.road import RoadCurves, road_curves
from pipelines.errors import ConfigError


@dataclass
class FaithfulnessSettings:
    """How faithfulness is measured besides the curves' K steps: the baselines, the random maps of the paired
    test, and ROAD's removal fractions. The defaults keep a 256-image report affordable on a CPU: the R random
    maps are scored on `random_steps` curve steps (the method's maps too, for the paired test)."""

    random_maps: int = 8
    random_steps: int = 5
    paired_images: int | None = 128  # the paired test and ROAD run on this many images, spread over the batch
    road_fractions: tuple[float, ...] = (0.2, 0.5, 0.8)
    road_noise: float = 0.01
    deletion_value: float = 0.0
    # (N, C, H, W) images; "blurred" or None: a blurred copy of the inputs (RISE); "removed": every pixel removed
    # (set to `deletion_value`, where deletion ends), for images that a blur does not change (28 px upsampled).
    insertion_start: torch.Tensor | str | None = None

    def __post_init__(self) -> None:
        if self.random_maps < 1:
            raise ConfigError(f"random_maps is {self.random_maps}; the paired test needs at least 1 random map.")
        if self.paired_images is not None and self.paired_images < 1:
            raise ConfigError(f"paired_images is {self.paired_images}; the paired test needs at least 1 image.")
        if self.random_steps < 2:
            raise ConfigError(f"random_steps is {self.random_steps}; the random maps' curves need at least 2 steps.")
        if not self.road_fractions or not all(0 < fraction < 1 for fraction in self.road_fractions):
            raise ConfigError(f"ROAD fractions {self.road_fractions} must each lie strictly between 0 and 1.")
        if isinstance(self.insertion_start, str) and self.insertion_start not in ("blurred", "removed"):
            raise ConfigError(f"insertion_start is '{self.insertion_start}'; use 'blurred', 'removed' or images.")

    def start_images(self, pixel_values: torch.Tensor) -> torch.Tensor | None:
        """What insertion starts from for these inputs; None for the blurred copy `deletion_insertion` makes."""
        if isinstance(self.insertion_start, torch.Tensor):
            return self.insertion_start
        if self.insertion_start == "removed":
            return torch.full_like(pixel_values, self.deletion_value)
        return None

    def baselines(self) -> dict[str, str]:
        """Each curve's baseline in words, for the report."""
        start = {
            None: "a Gaussian blur (RISE)",
            "blurred": "a Gaussian blur (RISE)",
            "removed": f"the image with every pixel removed (set to {self.deletion_value:g}, where deletion ends)",
        }.get(self.insertion_start, "the given start images")
        return {
            "deletion": f"deleted pixels set to {self.deletion_value:g} in the model's input space",
            "insertion": f"starts from {start}",
            "road": f"removed pixels filled by noisy linear imputation (Rong et al., 2022; noise {self.road_noise:g})",
        }


# The paired test's measures, and whether a higher value is the better one.
MEASURES = {
    "deletion": False,  # normalised area of MoRF deletion
    "insertion": True,  # normalised area of insertion
    "lerf_minus_morf": True,  # normalised areas, LeRF deletion minus MoRF deletion (Bluecher et al., 2024)
    "road_morf": False,  # mean probability over ROAD's fractions, most relevant removed first
    "road_lerf": True,
    "road_lerf_minus_morf": True,
}
SIGNIFICANCE = 0.01


@dataclass
class PairedComparison:
    """One measure of a method's maps against R random maps of the same images, image by image."""

    map_values: np.ndarray  # (N,)
    random_values: np.ndarray  # (R, N)
    higher_is_better: bool

    @property
    def advantage(self) -> np.ndarray:
        """(N,) the map's value minus the random maps' mean, signed so that positive means the map is better."""
        difference = self.map_values - self.random_values.mean(axis=0)
        return difference if self.higher_is_better else -difference

    @property
    def p_value(self) -> float:
        """Two-sided Wilcoxon signed-rank test of the advantages; 1 when every advantage is 0, NaN when none is
        finite (a flat curve has no normalised area)."""
        advantage = self.advantage[np.isfinite(self.advantage)]
        if advantage.size == 0:
            return float("nan")
        if not np.any(advantage):
            return 1.0
        return float(wilcoxon(advantage).pvalue)

    @property
    def verdict(self) -> str:
        """better or worse (p < 0.01; the sign of the median advantage says which), else unclear."""
        if not self.p_value < SIGNIFICANCE:
            return "unclear"
        return "better" if np.nanmedian(self.advantage) > 0 else "worse"

    def numbers(self) -> dict[str, float | int | str]:
        finite = np.isfinite(self.advantage)
        mean = lambda values: float(values[finite].mean()) if finite.any() else float("nan")  # noqa: E731
        return {
            "map": mean(self.map_values),
            "random": mean(self.random_values.mean(axis=0)),
            "advantage_mean": mean(self.advantage),
            "advantage_median": float(np.median(self.advantage[finite])) if finite.any() else float("nan"),
            "wins": mean(self.advantage > 0),
            "p_value": self.p_value,
            "images": int(finite.sum()),
            "verdict": self.verdict,
        }


def overall_verdict(verdicts: list[str]) -> str:
    """The measures' verdicts in a few words: better on every measure, worse on every one, or how many of each."""
    better, worse = verdicts.count("better"), verdicts.count("worse")
    if better == len(verdicts):
        return "beats random maps on every measure"
    if worse == len(verdicts):
        return "is worse than random maps on every measure"
    if better == worse == 0:
        return "cannot be told from random maps on any measure"
    return f"beats random maps on {better} of {len(verdicts)} measures and is worse on {worse}"


@dataclass
class Faithfulness:
    """Deletion/insertion areas of a method's maps and of one random map per image (means over images), the
    paired test against R random maps, ROAD, and the mean curves for plotting."""

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
    deletion_range: np.ndarray  # (N,) the intact image's probability minus the deletion baseline's
    insertion_range: np.ndarray  # (N,) the same for insertion's start
    comparisons: dict[str, PairedComparison]
    random_fractions: np.ndarray  # (K' + 1,) the random maps' steps
    paired_curves: dict[
        str, np.ndarray
    ]  # deletion / insertion / lerf_deletion -> (K' + 1,) the maps' means, same images
    random_curves: dict[str, np.ndarray]  # deletion / insertion / lerf_deletion -> (R, K' + 1), means over images
    road_fractions: np.ndarray  # (F,)
    road_curves: dict[str, np.ndarray]  # morf / lerf -> (F,) the maps' means over images
    random_road_curves: dict[str, np.ndarray]  # morf / lerf -> (R, F)
    settings: FaithfulnessSettings

    @property
    def paired_count(self) -> int:
        """Images in the paired test."""
        return len(next(iter(self.comparisons.values())).map_values)

    def random_draws(self) -> dict[str, dict[str, object]]:
        """Deletion and insertion areas on the paired images and steps: the maps' mean area, and each random draw's
        mean area with their spread (sd and range over the R draws), which is how far two random draws differ."""
        area = lambda curve: float(np.trapezoid(curve, self.random_fractions))  # noqa: E731
        draws = {}
        for name in ("deletion", "insertion"):
            values = [area(curve) for curve in self.random_curves[name]]
            draws[name] = {
                "map": area(self.paired_curves[name]),
                "draws": values,
                "mean": float(np.mean(values)),
                "sd": float(np.std(values, ddof=1)) if len(values) > 1 else float("nan"),
                "min": min(values),
                "max": max(values),
            }
        return draws

    @property
    def median_dynamic_range(self) -> dict[str, float]:
        return {
            "deletion": float(np.median(np.abs(self.deletion_range))),
            "insertion": float(np.median(np.abs(self.insertion_range))),
        }

    def numbers(self) -> dict[str, object]:
        return {
            "deletion_auc": self.deletion_auc,
            "insertion_auc": self.insertion_auc,
            "random_deletion_auc": self.random_deletion_auc,
            "random_insertion_auc": self.random_insertion_auc,
            "images": self.images,
            "baselines": self.settings.baselines(),
            "median_dynamic_range": self.median_dynamic_range,
            "random_maps": self.settings.random_maps,
            "random_steps": self.settings.random_steps,
            "paired_images": self.paired_count,
            "road_fractions": [float(fraction) for fraction in self.road_fractions],
            "against_random": {name: comparison.numbers() for name, comparison in self.comparisons.items()},
            "random_draws": self.random_draws(),
            "verdict": overall_verdict([comparison.verdict for comparison in self.comparisons.values()]),
        }


def explain_maps(
    model: nn.Module, method: str, pixel_values: torch.Tensor, targets: torch.Tensor | None, **options: object
) -> tuple[torch.Tensor, torch.Tensor]:
    """Maps (N, H, W) and explained targets (N,) of `method` on `model`."""
    explanation = make_method(method, model, **options)(pixel_values, targets)
    return explanation.maps, explanation.target


# An image whose probability moves less than this between the intact image and the baseline is left out of the
# normalised measures (NaN): dividing by a range of 0.001 multiplies the noise a thousandfold, and such images
# decided the signed-rank test on their own (PneumoniaMNIST's quickstart teacher: deletion areas of +-1,200).
MIN_RANGE = 0.05


def paired_measures(curves: FaithfulnessCurves, road: RoadCurves) -> dict[str, np.ndarray]:
    """The paired test's measures (`MEASURES`) of one set of maps: name -> (N,) per image, NaN where a normalised
    measure has too little range to scale by (`MIN_RANGE`)."""
    wide = curves.deletion_range.abs() >= MIN_RANGE
    lerf, morf = curves.normalised_lerf_deletion_auc, curves.normalised_deletion_auc
    nan = torch.tensor(float("nan"))
    values = {
        "deletion": torch.where(wide, morf, nan),
        "insertion": torch.where(curves.insertion_range.abs() >= MIN_RANGE, curves.normalised_insertion_auc, nan),
        "lerf_minus_morf": torch.where(wide, lerf - morf, nan),
        "road_morf": road.morf_mean,
        "road_lerf": road.lerf_mean,
        "road_lerf_minus_morf": road.lerf_mean - road.morf_mean,
    }
    return {name: value.double().numpy() for name, value in values.items()}


def _paired_subset(
    pixel_values: torch.Tensor,
    maps: torch.Tensor,
    targets: torch.Tensor,
    start: torch.Tensor | None,
    settings: FaithfulnessSettings,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The images of the paired test: `settings.paired_images` of them, evenly spread over the N given."""
    count = pixel_values.shape[0]
    if settings.paired_images is None or settings.paired_images >= count:
        return pixel_values, maps, targets, start
    index = torch.linspace(0, count - 1, settings.paired_images).round().long()
    start = None if start is None else start[index.to(start.device)]
    return (*(values[index.to(values.device)] for values in (pixel_values, maps, targets)), start)


def faithfulness(
    model: nn.Module,
    pixel_values: torch.Tensor,
    maps: torch.Tensor,
    targets: torch.Tensor,
    steps: int = 20,
    batch_size: int = 64,
    seed: int = 0,
    dtype: torch.dtype | None = None,
    settings: FaithfulnessSettings | None = None,
) -> Faithfulness:
    """Faithfulness of `maps` (N, H, W) explaining `targets` (N,) on `pixel_values` (N, C, H, W).

    Deletion and insertion with K = `steps` for the maps and for one uniform random map per image (the report's
    long-standing random row, seed `seed`); then the paired test on `settings.paired_images` of the images (all
    when None or N or more): the maps and `settings.random_maps` more random maps per image (seeds `seed + 1`,
    ...), deletion most and least relevant first and insertion on `settings.random_steps` steps, and ROAD at
    `settings.road_fractions`.
    """
    settings = settings or FaithfulnessSettings()
    multi_label = getattr(getattr(model, "config", None), "problem_type", None) == "multi_label_classification"
    shared = {"batch_size": batch_size, "multi_label": multi_label, "dtype": dtype}
    start = settings.start_images(pixel_values)
    options = {**shared, "deletion_value": settings.deletion_value, "insertion_start": start}
    coarse = {**options, "steps": settings.random_steps, "lerf": True}
    road = {**shared, "fractions": settings.road_fractions, "noise": settings.road_noise, "seed": seed}
    curves = deletion_insertion(model, pixel_values, maps, targets, steps, **options)
    baseline = deletion_insertion(model, pixel_values, random_maps(maps, seed), targets, steps, **options)
    pixel_values, maps, targets, start = _paired_subset(pixel_values, maps, targets, start, settings)
    coarse["insertion_start"] = start
    map_road = road_curves(model, pixel_values, maps, targets, **road)
    map_coarse = deletion_insertion(model, pixel_values, maps, targets, **coarse)
    measured = paired_measures(map_coarse, map_road)
    random_curves, random_road = [], []
    for index in range(settings.random_maps):
        chance = random_maps(maps, seed + 1 + index)
        random_curves.append(deletion_insertion(model, pixel_values, chance, targets, **coarse))
        random_road.append(road_curves(model, pixel_values, chance, targets, **road))
    random_measures = [paired_measures(c, r) for c, r in zip(random_curves, random_road)]
    comparisons = {
        name: PairedComparison(measured[name], np.stack([values[name] for values in random_measures]), higher)
        for name, higher in MEASURES.items()
    }
    mean_curves = lambda results, name: np.stack([getattr(r, name).mean(0).numpy() for r in results])  # noqa: E731
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
        images=int(curves.deletion.shape[0]),
        deletion_range=curves.deletion_range.numpy(),
        insertion_range=curves.insertion_range.numpy(),
        comparisons=comparisons,
        random_fractions=random_curves[0].fractions.numpy(),
        paired_curves={name: mean_curves([map_coarse], name)[0] for name in ("deletion", "insertion", "lerf_deletion")},
        random_curves={name: mean_curves(random_curves, name) for name in ("deletion", "insertion", "lerf_deletion")},
        road_fractions=map_road.fractions.numpy(),
        road_curves={"morf": map_road.morf.mean(0).numpy(), "lerf": map_road.lerf.mean(0).numpy()},
        random_road_curves={name: mean_curves(random_road, name) for name in ("morf", "lerf")},
        settings=settings,
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
    settings: FaithfulnessSettings | None = None,
    given_maps: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> ExplanationScores:
    """Faithfulness and the randomisation check of each model's maps for its own predictions, and agreement of
    each model's maps with the first model's (the reference) for the class the reference predicts.

    Args:
        models: Name -> classifier; the first is the reference.
        pixel_values: Name -> (N, C, H, W) the same N images, preprocessed for that model.
        method: An explanation method's name.
        reference_targets: Name -> (N,) the reference's predicted class, as that model's output index.
        predictions: Name -> (N,) or (N, L) the model's predictions in a shared label order.
        settings: Random maps, their steps and ROAD's fractions for `faithfulness`.
        given_maps: Name -> (maps (N, H, W), targets (N,)) of each model for its own predictions, computed once
            elsewhere (a maps dataset, `explain.maps_dataset.read_maps`); None: computed here. The agreement's maps
            at the reference's class are computed either way.
    """
    options = {"dtype": dtype, "batch_size": batch_size}
    numbers, curves, distributions = {}, {}, {}
    reference, reference_maps = next(iter(models)), None
    for name, model in models.items():
        inputs = pixel_values[name]
        if given_maps is not None:
            maps, targets = (tensor.to(inputs.device) for tensor in given_maps[name])
        else:
            maps, targets = explain_maps(model, method, inputs, None, **options)
        curves[name] = faithfulness(model, inputs, maps, targets, steps, batch_size, seed, dtype, settings)
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
