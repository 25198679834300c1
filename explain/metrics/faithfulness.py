"""How faithful a map is to the model: deletion and insertion curves (Petsiuk et al., 2018, "RISE").

Deletion removes pixels in order of attribution, most important first, and follows the model's probability for
the explained class: a faithful map makes it fall fast (low area under the curve). Insertion starts from a
blurred image and puts the original pixels back in the same order: a faithful map makes the probability rise
fast (high area). Both are computed for all images at once on the device; the (image, step) pairs are run
through the model in chunks of `batch_size`, so memory does not grow with the number of steps.

Where the curves start and end is set by the baseline (what a deleted pixel becomes, what insertion starts from),
not by the map: every map of an image shares the intact image's probability and the baseline's. So each curve is
also given normalised by that dynamic range, and deletion is also run least relevant first (LeRF): the
LeRF - MoRF difference depends far less on the baseline than either curve (Bluecher et al., 2024, "Decoupling
pixel flipping and occlusion strategy").
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
import torchvision.transforms.functional as TF
from torch import nn

from explain.metrics.masking import check_maps_fit, class_probability, image_rows, pixel_ranks, random_maps
from explain.metrics.road import RoadCurves, RoadSettings, road_curves
from explain.metrics.statistics import DECIDING_MEASURE, MEASURES, PairedComparison, method_verdict, paired_mask
from pipelines.errors import ConfigError
from pipelines.labels import is_multi_label_model


@dataclass
class FaithfulnessCurves:
    """Deletion and insertion curves for N maps.

    Attributes:
        fractions: (K + 1,) the fraction of pixels removed (deletion) or revealed (insertion) at each step.
        deletion: (N, K + 1) the explained class's probability at each step of deletion, most relevant first.
        insertion: (N, K + 1) the same for insertion.
        lerf_deletion: (N, K + 1) deletion least relevant first, when asked for (else None).
    """

    fractions: torch.Tensor
    deletion: torch.Tensor
    insertion: torch.Tensor
    lerf_deletion: torch.Tensor | None = None

    @property
    def deletion_auc(self) -> torch.Tensor:
        """(N,) area under each deletion curve (trapezoid rule over fractions in [0, 1]); lower is better."""
        return torch.trapezoid(self.deletion, self.fractions, dim=-1)

    @property
    def insertion_auc(self) -> torch.Tensor:
        """(N,) area under each insertion curve; higher is better."""
        return torch.trapezoid(self.insertion, self.fractions, dim=-1)

    @property
    def deletion_range(self) -> torch.Tensor:
        """(N,) the intact image's probability minus the deletion baseline's (every pixel deleted)."""
        return dynamic_range(self.deletion, start_is_intact=True)

    @property
    def insertion_range(self) -> torch.Tensor:
        """(N,) the intact image's probability minus insertion's start (a blurred image unless another is given)."""
        return dynamic_range(self.insertion, start_is_intact=False)

    def normalised(self, name: str) -> torch.Tensor:
        """(N, K + 1) float64 curve `name` (deletion, insertion or lerf_deletion) of each image scaled to 1 at the
        intact image and 0 at the baseline (`normalised_curves`); NaN rows where it has no range."""
        curves = getattr(self, name)
        if curves is None:
            raise ConfigError("These curves were computed without lerf=True; there is no LeRF deletion curve.")
        return normalised_curves(curves, start_is_intact=name != "insertion")

    def normalised_area(self, name: str) -> torch.Tensor:
        """(N,) float64 area under `normalised(name)`."""
        return torch.trapezoid(self.normalised(name), self.fractions.double(), dim=-1)

    @property
    def normalised_deletion_auc(self) -> torch.Tensor:
        """(N,) deletion area with each curve scaled to 1 at the intact image and 0 at the baseline; lower is
        better (0: the probability reaches the baseline's at the first step)."""
        return self.normalised_area("deletion")

    @property
    def normalised_insertion_auc(self) -> torch.Tensor:
        """(N,) insertion area scaled the same way; higher is better."""
        return self.normalised_area("insertion")

    @property
    def normalised_lerf_deletion_auc(self) -> torch.Tensor:
        """(N,) least-relevant-first deletion area, scaled like deletion's; higher is better."""
        return self.normalised_area("lerf_deletion")

    @classmethod
    def concatenate(cls, parts: Sequence[FaithfulnessCurves]) -> FaithfulnessCurves:
        """The curves of several sets of maps (batches of images, in order) as one set; all share `fractions`."""
        lerf = None if parts[0].lerf_deletion is None else torch.cat([part.lerf_deletion for part in parts])
        deletion, insertion = (torch.cat([getattr(part, name) for part in parts]) for name in ("deletion", "insertion"))
        return cls(parts[0].fractions, deletion, insertion, lerf)


# A curve whose ends differ by less than this has no range to scale by: its normalised area is NaN.
FLAT = 1e-6


def dynamic_range(curves: torch.Tensor, start_is_intact: bool) -> torch.Tensor:
    """(N, K + 1) curves -> (N,) probability of the intact image minus the baseline's.

    Args:
        curves: Deletion curves (start at the intact image, end at the baseline) or insertion curves (the
            other way round).
        start_is_intact: True for deletion curves.
    """
    intact, baseline = (curves[:, 0], curves[:, -1]) if start_is_intact else (curves[:, -1], curves[:, 0])
    return intact - baseline


def normalised_curves(curves: torch.Tensor, start_is_intact: bool) -> torch.Tensor:
    """(N, K + 1) curves -> (N, K + 1) float64 (p - p_baseline) / (p_intact - p_baseline): 1 at the intact image, 0 at
    the baseline. A row is NaN where the curve's ends are closer than 1e-6: nothing to normalise by.

    In float64 so that the report's figure, which plots means of these, and its table, which tests their areas,
    agree to far below any digit they print.
    """
    curves = curves.double()
    baseline = curves[:, -1:] if start_is_intact else curves[:, :1]
    spread = dynamic_range(curves, start_is_intact)[:, None]
    flat = spread.abs() < FLAT
    return torch.where(flat, float("nan"), (curves - baseline) / torch.where(flat, 1.0, spread))


def normalised_area(curves: torch.Tensor, fractions: torch.Tensor, start_is_intact: bool) -> torch.Tensor:
    """(N, K + 1) curves -> (N,) area under `normalised_curves` (float64).

    An affine change of the probabilities (a * p + b, a != 0), as a baseline that lifts or squeezes the whole curve
    would make, leaves it unchanged. NaN where the curve's ends are closer than 1e-6: nothing to normalise by.
    """
    return torch.trapezoid(normalised_curves(curves, start_is_intact), fractions.double(), dim=-1)


def blurred(pixel_values: torch.Tensor) -> torch.Tensor:
    """The insertion start: a Gaussian blur with sigma 5 px at 224 px, scaled with the image (RISE's setting)."""
    sigma = 5.0 * pixel_values.shape[-1] / 224
    kernel = 2 * math.ceil(2 * sigma) + 1
    return TF.gaussian_blur(pixel_values, [kernel, kernel], [sigma, sigma])


@dataclass(frozen=True)
class CurveSettings:
    """How `deletion_insertion` draws its curves.

    Attributes:
        steps: K, the number of steps: pixels change in K equal shares.
        batch_size: Images per forward pass (half of them deleted, half revealed).
        multi_label: Score with a sigmoid instead of a softmax.
        deletion_value: What a deleted pixel becomes, in the model's input space (0 is the normalised mean grey
            for mean/std normalisation; RISE uses black).
        insertion_start: (N, C, H, W) what insertion starts from; default a blurred copy of the inputs (RISE).
        dtype: Compute dtype; lower than the parameters' (bf16 for an fp32 model) runs the forward passes under
            autocast.
        lerf: Also delete least relevant pixels first (a third curve, a third more forward passes).
    """

    steps: int = 20
    batch_size: int = 64
    multi_label: bool = False
    deletion_value: float = 0.0
    insertion_start: torch.Tensor | None = None
    dtype: torch.dtype | None = None
    lerf: bool = False


@torch.no_grad()
def deletion_insertion(
    model: nn.Module,
    pixel_values: torch.Tensor,
    maps: torch.Tensor,
    targets: torch.Tensor,
    settings: CurveSettings | None = None,
) -> FaithfulnessCurves:
    """Deletion and insertion curves of `maps` for `model`.

    Args:
        model: The classifier the maps explain (eval mode is the caller's business).
        pixel_values: (N, C, H, W) the model's inputs.
        maps: (N, H, W) attributions at the input resolution; larger means more important.
        targets: (N,) the class each map explains.
        settings: Steps, batching, baselines (`CurveSettings`); None: its defaults.

    Returns:
        `FaithfulnessCurves` with (N, K + 1) curves.
    """
    settings = settings or CurveSettings()
    steps, batch_size, multi_label = settings.steps, settings.batch_size, settings.multi_label
    deletion_value, insertion_start, dtype, lerf = (
        settings.deletion_value,
        settings.insertion_start,
        settings.dtype,
        settings.lerf,
    )
    if steps < 2:
        raise ConfigError(f"steps is {steps}; deletion and insertion curves need at least 2 steps.")
    check_maps_fit(maps, pixel_values)
    count, channels, height, width = pixel_values.shape
    device = pixel_values.device
    ranks = pixel_ranks(maps.to(device))  # (N, H * W)
    reversed_ranks = height * width - 1 - ranks  # 0 for the least important pixel
    thresholds = torch.round(torch.linspace(0, height * width, steps + 1, device=device)).long()  # (K + 1,)
    start = blurred(pixel_values) if insertion_start is None else insertion_start.to(pixel_values)
    targets = targets.to(device)
    pairs = count * (steps + 1)
    names = ("deletion", "insertion", "lerf_deletion") if lerf else ("deletion", "insertion")
    curves = {name: torch.empty(pairs, device=device) for name in names}
    chunk = max(1, batch_size // len(names))
    for first in range(0, pairs, chunk):
        index = torch.arange(first, min(first + chunk, pairs), device=device)
        image, step = index // (steps + 1), index % (steps + 1)
        changed = (ranks[image] < thresholds[step][:, None]).view(-1, 1, height, width)  # (b, 1, H, W)
        original = pixel_values[image]
        batch = [
            torch.where(changed, torch.full_like(original, deletion_value), original),
            torch.where(changed, original, start[image]),
        ]
        if lerf:
            least = (reversed_ranks[image] < thresholds[step][:, None]).view(-1, 1, height, width)
            batch.append(torch.where(least, torch.full_like(original, deletion_value), original))
        scores = class_probability(model, torch.cat(batch), targets[image].repeat(len(batch)), multi_label, dtype)
        for name, values in zip(names, scores.chunk(len(batch))):
            curves[name][index] = values
    fractions = thresholds.float() / (height * width)
    shaped = {name: values.view(count, steps + 1).cpu() for name, values in curves.items()}
    return FaithfulnessCurves(fractions.cpu(), **shaped)


@dataclass
class FaithfulnessSettings:
    """How faithfulness is measured: the curves' K steps, batching, seed and compute dtype, the baselines, the random
    maps of the paired test, and ROAD's removal fractions. The defaults keep a 256-image report affordable on a CPU:
    the R random maps are scored on `random_steps` curve steps (the method's maps too, for the paired test).

    Random maps and ROAD's noise are seeded per image by (`seed` + draw, the image's row), so an image's numbers do
    not depend on the batch or process it is scored in."""

    random_maps: int = 8
    random_steps: int = 5
    paired_images: int | None = 128  # the paired test and ROAD run on this many images, spread over the batch
    road_fractions: tuple[float, ...] = (0.2, 0.5, 0.8)
    road_noise: float = 0.01
    deletion_value: float = 0.0
    # (N, C, H, W) images; "blurred" or None: a blurred copy of the inputs (RISE); "removed": every pixel removed
    # (set to `deletion_value`, where deletion ends), for images that a blur does not change (28 px upsampled).
    insertion_start: torch.Tensor | str | None = None
    steps: int = 20
    batch_size: int = 64
    seed: int = 0
    dtype: torch.dtype | None = None

    def __post_init__(self) -> None:
        if self.steps < 2:
            raise ConfigError(f"steps is {self.steps}; deletion and insertion curves need at least 2 steps.")
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


@dataclass
class Faithfulness:
    """Deletion/insertion areas of a method's maps and of one random map per image (means over images), the
    paired test against R random maps, ROAD, and the mean curves for plotting: those of the paired test's images,
    normalised per image for deletion and insertion, so that their areas are the test's means."""

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
    # deletion / insertion / lerf_deletion -> (K' + 1,) the maps' mean normalised curve over the images the paired
    # test compares for the measure it is the area of (`CURVE_MEASURES`): its area is that row's "map" mean.
    paired_curves: dict[str, np.ndarray]
    random_curves: dict[str, np.ndarray]  # the same name -> (R, K' + 1), one mean normalised curve per random draw
    road_fractions: np.ndarray  # (F,)
    road_curves: dict[str, np.ndarray]  # morf / lerf -> (F,) the maps' means over the images the deciding test compares
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
        paired_curves, random_curves = normalised_mean_curves(parts, comparisons)
        road_curves, random_road_curves = road_mean_curves(parts, comparisons[DECIDING_MEASURE].finite)
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
            paired_curves=paired_curves,
            random_curves=random_curves,
            road_fractions=parts.road.fractions.numpy(),
            road_curves=road_curves,
            random_road_curves=random_road_curves,
            settings=settings,
        )

    @property
    def paired_count(self) -> int:
        """Images in the paired test."""
        return len(next(iter(self.comparisons.values())).map_values)

    def random_draws(self) -> dict[str, dict[str, object]]:
        """Normalised deletion and insertion areas on the paired test's images and steps: the maps' mean area (the
        paired test's "map"), and each random draw's mean area with their spread (sd and range over the R draws),
        which is how far two random draws differ."""
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
            "deciding_measure": DECIDING_MEASURE,
            "verdict": method_verdict(self.comparisons),
        }


# The curves the figure plots against random maps, and the paired test's measure that is an area under each: the
# mean curve is taken over that measure's images, so that its area is the measure's "map" mean in the table.
CURVE_MEASURES = {"deletion": "deletion", "insertion": "insertion", "lerf_deletion": "lerf_minus_morf"}


def normalised_mean_curves(
    parts: FaithfulnessParts, comparisons: dict[str, PairedComparison]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The maps' (K' + 1,) and each random draw's (R, K' + 1) mean normalised curves, per name in `CURVE_MEASURES`,
    over the images the paired test compares for that measure (range >= MIN_RANGE, NaN left out). The trapezoid
    area of a mean curve is the mean of the images' areas, so the figure and the table show the same numbers;
    means of raw probabilities would weight each image by its dynamic range, which the test does not."""
    maps, random = {}, {}
    for name, measure in CURVE_MEASURES.items():
        compared = torch.from_numpy(comparisons[measure].finite)
        maps[name] = mean_normalised_curve(parts.paired, name, compared)
        random[name] = np.stack([mean_normalised_curve(draw, name, compared) for draw in parts.random])
    return maps, random


def mean_normalised_curve(curves: FaithfulnessCurves, name: str, compared: torch.Tensor) -> np.ndarray:
    """(K + 1,) the mean over the `compared` images (N,) bool of their normalised curve `name`; NaN when none."""
    return curves.normalised(name)[compared].mean(0).numpy()


def road_mean_curves(
    parts: FaithfulnessParts, compared: np.ndarray
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """ROAD's MoRF and LeRF mean curves, the maps' (F,) and each random draw's (R, F), over the `compared` images
    (the deciding test's: every paired image unless a probability was NaN), so that the mean of the plotted LeRF
    curve minus that of the MoRF curve is the deciding measure's "map" mean."""
    kept = torch.from_numpy(compared)
    mean = lambda curves, name: getattr(curves, name).double()[kept].mean(0).numpy()  # noqa: E731
    maps = {name: mean(parts.road, name) for name in ("morf", "lerf")}
    random = {name: np.stack([mean(draw, name) for draw in parts.random_road]) for name in ("morf", "lerf")}
    return maps, random


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
    road_morf, road_lerf = road.morf.double().mean(-1), road.lerf.double().mean(-1)  # as `road_mean_curves` averages
    values = {
        "deletion": torch.where(wide, morf, nan),
        "insertion": torch.where(curves.insertion_range.abs() >= MIN_RANGE, curves.normalised_insertion_auc, nan),
        "lerf_minus_morf": torch.where(wide, lerf - morf, nan),
        "road_morf": road_morf,
        "road_lerf": road_lerf,
        "road_lerf_minus_morf": road_lerf - road_morf,
    }
    return {name: value.double().numpy() for name, value in values.items()}


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


@dataclass
class RandomParts:
    """The random maps' curves of one batch of images: the deletion and insertion baseline row and the paired test's
    R draws (curves and ROAD). Random maps are seeded by the images' rows, not drawn from the method's maps, so
    every method that explains the same classes of the same images shares them: the report computes them once per
    model and batch (`explain.metrics.scores.explanation_parts`)."""

    targets: torch.Tensor
    baseline: FaithfulnessCurves
    random: list[FaithfulnessCurves]
    random_road: list[RoadCurves]

    def fits(self, targets: torch.Tensor) -> bool:
        """Whether these curves explain exactly `targets` (N,)."""
        return self.targets.shape == targets.shape and bool(torch.equal(self.targets, targets.to(self.targets.device)))


@dataclass(frozen=True)
class FaithfulnessPlan:
    """What one batch's curves are run with: the settings resolved for its images."""

    rows: list[int]
    paired_index: np.ndarray
    curve: CurveSettings
    coarse: CurveSettings
    road: RoadSettings

    @property
    def paired_rows(self) -> list[int]:
        """The split rows of the paired test's images (what their random maps and ROAD noise are seeded by)."""
        return [self.rows[i] for i in self.paired_index]


def faithfulness_plan(
    model: nn.Module,
    pixel_values: torch.Tensor,
    settings: FaithfulnessSettings,
    rows: Sequence[int] | None,
    paired: np.ndarray | None,
) -> FaithfulnessPlan:
    """The rows, paired images and curve settings of one batch (see `faithfulness_parts`)."""
    rows = image_rows(pixel_values.shape[0], rows)
    paired = paired_mask(len(rows), settings.paired_images) if paired is None else np.asarray(paired, dtype=bool)
    index = np.flatnonzero(paired)
    multi_label = is_multi_label_model(model)
    start = settings.start_images(pixel_values)
    curve = CurveSettings(
        steps=settings.steps,
        batch_size=settings.batch_size,
        multi_label=multi_label,
        deletion_value=settings.deletion_value,
        insertion_start=start,
        dtype=settings.dtype,
    )
    paired_start = None if start is None else start[torch.from_numpy(index).to(start.device)]
    coarse = replace(curve, steps=settings.random_steps, lerf=True, insertion_start=paired_start)
    road = RoadSettings(
        fractions=settings.road_fractions,
        batch_size=settings.batch_size,
        multi_label=multi_label,
        noise=settings.road_noise,
        seed=settings.seed,
        dtype=settings.dtype,
    )
    return FaithfulnessPlan(list(rows), index, curve, coarse, road)


def on_paired(values: torch.Tensor, plan: FaithfulnessPlan) -> torch.Tensor:
    """The paired test's images of a batch tensor."""
    return values[torch.from_numpy(plan.paired_index).to(values.device)]


def random_parts(
    model: nn.Module,
    pixel_values: torch.Tensor,
    targets: torch.Tensor,
    settings: FaithfulnessSettings | None = None,
    rows: Sequence[int] | None = None,
    paired: np.ndarray | None = None,
) -> RandomParts:
    """The random maps' curves for `targets` (N,) on `pixel_values` (N, C, H, W): what `faithfulness_parts` compares
    a method's maps with, the same for every method."""
    settings = settings or FaithfulnessSettings()
    seed = settings.seed
    plan = faithfulness_plan(model, pixel_values, settings, rows, paired)
    like = pixel_values[:, 0]  # random maps at the input resolution, as every method's maps are scored
    baseline = deletion_insertion(model, pixel_values, random_maps(like, seed, plan.rows), targets, plan.curve)
    paired_pixels, paired_targets = on_paired(pixel_values, plan), on_paired(targets, plan)
    paired_rows = plan.paired_rows
    random_curves, random_road = [], []
    for draw in range(settings.random_maps):
        chance = random_maps(on_paired(like, plan), seed + 1 + draw, paired_rows)
        random_curves.append(deletion_insertion(model, paired_pixels, chance, paired_targets, plan.coarse))
        random_road.append(road_curves(model, paired_pixels, chance, paired_targets, plan.road, paired_rows))
    return RandomParts(targets.detach().clone(), baseline, random_curves, random_road)


def faithfulness_parts(
    model: nn.Module,
    pixel_values: torch.Tensor,
    maps: torch.Tensor,
    targets: torch.Tensor,
    settings: FaithfulnessSettings | None = None,
    rows: Sequence[int] | None = None,
    paired: np.ndarray | None = None,
    random: RandomParts | None = None,
) -> FaithfulnessParts:
    """The per-image part of `faithfulness`: curves of `maps` (N, H, W) explaining `targets` (N,) on
    `pixel_values` (N, C, H, W), and of their random maps, with nothing averaged.

    Args:
        rows: (N,) the images' rows in their split: image i's random maps are seeded by (seed + d, rows[i]) for
            draw d (0 the random row of the deletion and insertion table, 1 to R the paired test's) and its ROAD
            noise by (seed, rows[i], ...), so an image's numbers do not depend on the batch or process it is scored
            in. None: 0, 1, ..., N - 1.
        paired: (N,) bool, the images of the paired test and ROAD; None: `paired_mask(N, settings.paired_images)`.
        random: The random maps' curves of these images and targets (`random_parts`), computed once for several
            methods; None, or curves for other targets: computed here.
    """
    settings = settings or FaithfulnessSettings()
    if random is None or not random.fits(targets):
        random = random_parts(model, pixel_values, targets, settings, rows, paired)
    plan = faithfulness_plan(model, pixel_values, settings, rows, paired)
    paired_pixels, paired_maps, paired_targets = (on_paired(values, plan) for values in (pixel_values, maps, targets))
    paired_rows = plan.paired_rows
    return FaithfulnessParts(
        curves=deletion_insertion(model, pixel_values, maps, targets, plan.curve),
        baseline=random.baseline,
        rows=np.asarray(plan.rows, dtype=np.int64),
        paired=deletion_insertion(model, paired_pixels, paired_maps, paired_targets, plan.coarse),
        random=random.random,
        road=road_curves(model, paired_pixels, paired_maps, paired_targets, plan.road, paired_rows),
        random_road=random.random_road,
    )


def faithfulness(
    model: nn.Module,
    pixel_values: torch.Tensor,
    maps: torch.Tensor,
    targets: torch.Tensor,
    settings: FaithfulnessSettings | None = None,
) -> Faithfulness:
    """Faithfulness of `maps` (N, H, W) explaining `targets` (N,) on `pixel_values` (N, C, H, W).

    Deletion and insertion with K = ``settings.steps`` for the maps and for one uniform random map per image (the
    random row of the report's deletion and insertion table, seed ``settings.seed``); then the paired test on
    ``settings.paired_images`` of the images (all when None or N or more): the maps and ``settings.random_maps``
    more random maps per image (seeds ``seed + 1``, ...), deletion most and least relevant first and insertion on
    ``settings.random_steps`` steps, and ROAD at ``settings.road_fractions``. Random maps and ROAD's noise are drawn
    per image (`faithfulness_parts`, the images taken as rows 0 to N - 1); this is `faithfulness_parts` then
    `Faithfulness.from_parts`.
    """
    settings = settings or FaithfulnessSettings()
    return Faithfulness.from_parts(faithfulness_parts(model, pixel_values, maps, targets, settings), settings)


def aggregate_faithfulness(parts: Sequence[FaithfulnessParts], settings: FaithfulnessSettings) -> Faithfulness:
    """`Faithfulness` over the per-image parts of several batches of images, in order."""
    return Faithfulness.from_parts(FaithfulnessParts.concatenate(parts), settings)
