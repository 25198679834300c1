"""Numbers about explanations, for the evaluation report: faithfulness, the randomisation check, and agreement
between a reference model's maps (the teacher's) and another model's (a student's) on the same images.

Each comes in two steps, so that a whole split can be scored in batches on many processes: a per-image part
(`faithfulness_parts`, `randomization`, `agreement`; `explanation_parts` for every model at once), whose results
for batches of images concatenate, and an aggregate (`Faithfulness.from_parts`, the `numbers` of `Randomization`
and `Agreement`; `scores_from_parts`). `faithfulness` and `score_explanations` are the two steps on one batch."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import wilcoxon
from torch import nn

from explain.agreement import blank_maps, randomized_copy, rank_correlation, top_fraction_iou
from explain.faithfulness import FaithfulnessCurves, deletion_insertion, image_rows, random_maps
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

    @classmethod
    def from_parts(cls, parts: FaithfulnessParts, settings: FaithfulnessSettings) -> Faithfulness:
        """The means over images, mean curves and paired tests of per-image parts (`FaithfulnessParts.concatenate`
        joins those of several batches first)."""
        curves, baseline = parts.curves, parts.baseline
        measured, random_measures = parts.measures()
        comparisons = {
            name: PairedComparison(measured[name], random_measures[name], higher) for name, higher in MEASURES.items()
        }
        mean_curves = lambda results, name: np.stack([getattr(r, name).mean(0).numpy() for r in results])  # noqa: E731
        lerf_names = ("deletion", "insertion", "lerf_deletion")
        return cls(
            deletion_auc=float(curves.deletion_auc.mean()),
            insertion_auc=float(curves.insertion_auc.mean()),
            random_deletion_auc=float(baseline.deletion_auc.mean()),
            random_insertion_auc=float(baseline.insertion_auc.mean()),
            fractions=curves.fractions.numpy(),
            deletion_curve=curves.deletion.mean(0).numpy(),
            insertion_curve=curves.insertion.mean(0).numpy(),
            random_deletion_curve=baseline.deletion.mean(0).numpy(),
            random_insertion_curve=baseline.insertion.mean(0).numpy(),
            images=parts.images,
            deletion_range=curves.deletion_range.numpy(),
            insertion_range=curves.insertion_range.numpy(),
            comparisons=comparisons,
            random_fractions=parts.paired.fractions.numpy(),
            paired_curves={name: mean_curves([parts.paired], name)[0] for name in lerf_names},
            random_curves={name: mean_curves(parts.random, name) for name in lerf_names},
            road_fractions=parts.road.fractions.numpy(),
            road_curves={"morf": parts.road.morf.mean(0).numpy(), "lerf": parts.road.lerf.mean(0).numpy()},
            random_road_curves={name: mean_curves(parts.random_road, name) for name in ("morf", "lerf")},
            settings=settings,
        )

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


def paired_mask(count: int, paired_images: int | None) -> np.ndarray:
    """(N,) bool: the images of the paired test, `paired_images` of the N evenly spread (all when None or N or
    more). A distributed report picks them over every explained image before it cuts the images into chunks."""
    if paired_images is None or paired_images >= count:
        return np.ones(count, dtype=bool)
    mask = np.zeros(count, dtype=bool)
    mask[np.linspace(0, count - 1, paired_images).round().astype(np.int64)] = True
    return mask


@dataclass
class FaithfulnessParts:
    """Per-image faithfulness of N maps, before any mean or test: what `Faithfulness.from_parts` aggregates. The
    parts of batches of images concatenate (`concatenate`), so a split can be scored batch by batch on any number
    of processes and aggregated once.

    Attributes:
        curves: (N, K + 1) deletion and insertion of the maps.
        baseline: (N, K + 1) the same for one uniform random map per image.
        rows: (N,) the images' rows in their split (what the random maps and ROAD's noise are seeded by).
        paired: (P, K' + 1) deletion (most and least relevant first) and insertion of the maps on the P images of
            the paired test, K' = `random_steps`.
        random: R curves like `paired`, of R more random maps per paired image.
        road: (P, F) ROAD of the maps on the paired images.
        random_road: R curves like `road`, of the same R random maps.
    """

    curves: FaithfulnessCurves
    baseline: FaithfulnessCurves
    rows: np.ndarray
    paired: FaithfulnessCurves
    random: list[FaithfulnessCurves]
    road: RoadCurves
    random_road: list[RoadCurves]

    @property
    def images(self) -> int:
        return int(self.curves.deletion.shape[0])

    def measures(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """The paired test's measures (`MEASURES`) per paired image: the maps' (P,) and the random maps' (R, P)."""
        maps = paired_measures(self.paired, self.road)
        random = [paired_measures(curves, road) for curves, road in zip(self.random, self.random_road)]
        return maps, {name: np.stack([values[name] for values in random]) for name in MEASURES}

    @classmethod
    def concatenate(cls, parts: Sequence[FaithfulnessParts]) -> FaithfulnessParts:
        """The parts of several batches of images, in order, as one."""
        curves = lambda name: FaithfulnessCurves.concatenate([getattr(part, name) for part in parts])  # noqa: E731
        draws = range(len(parts[0].random))
        return cls(
            curves=curves("curves"),
            baseline=curves("baseline"),
            rows=np.concatenate([part.rows for part in parts]),
            paired=curves("paired"),
            random=[FaithfulnessCurves.concatenate([part.random[draw] for part in parts]) for draw in draws],
            road=RoadCurves.concatenate([part.road for part in parts]),
            random_road=[RoadCurves.concatenate([part.random_road[draw] for part in parts]) for draw in draws],
        )


def faithfulness_parts(
    model: nn.Module,
    pixel_values: torch.Tensor,
    maps: torch.Tensor,
    targets: torch.Tensor,
    steps: int = 20,
    batch_size: int = 64,
    seed: int = 0,
    dtype: torch.dtype | None = None,
    settings: FaithfulnessSettings | None = None,
    rows: Sequence[int] | None = None,
    paired: np.ndarray | None = None,
) -> FaithfulnessParts:
    """The per-image part of `faithfulness`: curves of `maps` (N, H, W) explaining `targets` (N,) on
    `pixel_values` (N, C, H, W), and of their random maps, with nothing averaged.

    Args:
        rows: (N,) the images' rows in their split: image i's random maps are seeded by (`seed` + d, rows[i]) for
            draw d (0 the long-standing random row, 1 to R the paired test's) and its ROAD noise by (`seed`,
            rows[i], ...), so an image's numbers do not depend on the batch or process it is scored in. None:
            0, 1, ..., N - 1.
        paired: (N,) bool, the images of the paired test and ROAD; None: `paired_mask(N, settings.paired_images)`.
    """
    settings = settings or FaithfulnessSettings()
    rows = image_rows(pixel_values.shape[0], rows)
    paired = paired_mask(len(rows), settings.paired_images) if paired is None else np.asarray(paired, dtype=bool)
    multi_label = getattr(getattr(model, "config", None), "problem_type", None) == "multi_label_classification"
    shared = {"batch_size": batch_size, "multi_label": multi_label, "dtype": dtype}
    start = settings.start_images(pixel_values)
    options = {**shared, "deletion_value": settings.deletion_value, "insertion_start": start}
    curves = deletion_insertion(model, pixel_values, maps, targets, steps, **options)
    baseline = deletion_insertion(model, pixel_values, random_maps(maps, seed, rows), targets, steps, **options)
    index = np.flatnonzero(paired)
    chosen = lambda values: None if values is None else values[torch.from_numpy(index).to(values.device)]  # noqa: E731
    pixel_values, maps, targets, start = (chosen(values) for values in (pixel_values, maps, targets, start))
    paired_rows = [rows[i] for i in index]
    coarse = {**options, "steps": settings.random_steps, "lerf": True, "insertion_start": start}
    road = {**shared, "fractions": settings.road_fractions, "noise": settings.road_noise, "seed": seed}
    random_curves, random_road = [], []
    for draw in range(settings.random_maps):
        chance = random_maps(maps, seed + 1 + draw, paired_rows)
        random_curves.append(deletion_insertion(model, pixel_values, chance, targets, **coarse))
        random_road.append(road_curves(model, pixel_values, chance, targets, **road, rows=paired_rows))
    return FaithfulnessParts(
        curves=curves,
        baseline=baseline,
        rows=np.asarray(rows, dtype=np.int64),
        paired=deletion_insertion(model, pixel_values, maps, targets, **coarse),
        random=random_curves,
        road=road_curves(model, pixel_values, maps, targets, **road, rows=paired_rows),
        random_road=random_road,
    )


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
    `settings.road_fractions`. Random maps and ROAD's noise are drawn per image (`faithfulness_parts`, the images
    taken as rows 0 to N - 1); this is `faithfulness_parts` then `Faithfulness.from_parts`.
    """
    settings = settings or FaithfulnessSettings()
    parts = faithfulness_parts(model, pixel_values, maps, targets, steps, batch_size, seed, dtype, settings)
    return Faithfulness.from_parts(parts, settings)


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

    @classmethod
    def concatenate(cls, parts: Sequence[Randomization]) -> Randomization:
        """The checks of several batches of images, in order, as one."""
        joined = lambda name: np.concatenate([getattr(part, name) for part in parts])  # noqa: E731
        return cls(joined("rank_correlation"), joined("blank"), joined("reinitialised_blank"))


def randomization(
    model: nn.Module,
    method: str,
    pixel_values: torch.Tensor,
    maps: torch.Tensor,
    targets: torch.Tensor,
    seed: int = 0,
    reinitialised: nn.Module | None = None,
    **options: object,
) -> Randomization:
    """Compare `maps` of the trained model with the same method's maps of the same architecture with
    re-initialised weights, for the same targets. Low correlation means the maps depend on what was learnt.

    Args:
        reinitialised: `randomized_copy(model, seed)` made once by a caller that scores many batches; None: made
            here.
    """
    reinitialised = randomized_copy(model, seed) if reinitialised is None else reinitialised
    reinitialised_maps, _ = explain_maps(reinitialised, method, pixel_values, targets, **options)
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

    @classmethod
    def concatenate(cls, parts: Sequence[Agreement]) -> Agreement:
        """The agreement over several batches of images, in order, as one (`same_prediction` weighted by images)."""
        joined = lambda name: np.concatenate([getattr(part, name) for part in parts])  # noqa: E731
        counts = [len(part.top_iou) for part in parts]
        same = float(np.average([part.same_prediction for part in parts], weights=counts)) if sum(counts) else 0.0
        return cls(
            joined("rank_correlation"), joined("top_iou"), same, joined("reference_blank"), joined("other_blank")
        )


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


def explanation_parts(
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
    rows: Sequence[int] | None = None,
    paired: np.ndarray | None = None,
    reinitialised: dict[str, nn.Module] | None = None,
) -> dict[str, ModelParts]:
    """The per-image part of `score_explanations` for one batch of images: each model's `ModelParts`.

    Args (beyond `score_explanations`'):
        given_maps: As there; the agreement's maps at the reference's class are taken from them too wherever the
            model's own target is that class, and computed for the other images only.
        rows: (N,) the images' rows in their split, which seed each image's random maps and noise.
        paired: (N,) bool, the images of the paired test (chosen over every explained image by the caller).
        reinitialised: Name -> the model's `randomized_copy`, made once for many batches; None: made here.
    """
    options = {"dtype": dtype, "batch_size": batch_size}
    parts, reference, reference_maps = {}, next(iter(models)), None
    for name, model in models.items():
        inputs = pixel_values[name]
        if given_maps is not None:
            maps, targets = (tensor.to(inputs.device) for tensor in given_maps[name])
        else:
            maps, targets = explain_maps(model, method, inputs, None, **options)
        copy = None if reinitialised is None else reinitialised[name]
        common_maps, computed = maps_at_class(
            model, method, inputs, reference_targets[name], (maps, targets) if given_maps is not None else None, options
        )
        own_read = len(maps) if given_maps is not None else 0
        parts[name] = ModelParts(
            faithfulness=faithfulness_parts(
                model, inputs, maps, targets, steps, batch_size, seed, dtype, settings, rows, paired
            ),
            randomization=randomization(model, method, inputs, maps, targets, seed, copy, **options),
            agreement=None,
            maps_read=own_read + len(maps) - computed,
            maps_computed=len(maps) - own_read + computed,
        )
        if name == reference:
            reference_maps = common_maps
            continue
        parts[name].agreement = agreement(
            reference_maps, common_maps, predictions[reference], predictions[name], top_fraction
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


def aggregate_faithfulness(parts: Sequence[FaithfulnessParts], settings: FaithfulnessSettings) -> Faithfulness:
    """`Faithfulness` over the per-image parts of several batches of images, in order."""
    return Faithfulness.from_parts(FaithfulnessParts.concatenate(parts), settings)


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
    each model's maps with the first model's (the reference) for the class the reference predicts, on one batch
    of images (rows 0 to N - 1): `explanation_parts`, then `scores_from_parts`.

    Args:
        models: Name -> classifier; the first is the reference.
        pixel_values: Name -> (N, C, H, W) the same N images, preprocessed for that model.
        method: An explanation method's name.
        reference_targets: Name -> (N,) the reference's predicted class, as that model's output index.
        predictions: Name -> (N,) or (N, L) the model's predictions in a shared label order.
        settings: Random maps, their steps and ROAD's fractions for `faithfulness`.
        given_maps: Name -> (maps (N, H, W), targets (N,)) of each model for its own predictions, computed once
            elsewhere (a maps dataset, `explain.maps_dataset.read_maps`); None: computed here. The agreement's maps
            at the reference's class are taken from them where the model's own target is that class, and computed
            for the other images.
    """
    parts = explanation_parts(
        models,
        pixel_values,
        method,
        reference_targets,
        predictions,
        steps,
        top_fraction,
        batch_size,
        seed,
        dtype,
        settings,
        given_maps,
    )
    return scores_from_parts([parts], settings, top_fraction)
