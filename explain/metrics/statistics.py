"""The statistics behind the report's verdict: a paired test of a method's maps against random maps, image by image
(two-sided Wilcoxon signed-rank), the one measure whose test decides the verdict and the verdict in words, means over
the images that can be compared, and which images a distributed report tests."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import wilcoxon

# The paired test's measures, and whether a higher value is the better one.
MEASURES = {
    "deletion": False,  # normalised area of MoRF deletion
    "insertion": True,  # normalised area of insertion
    "lerf_minus_morf": True,  # normalised areas, LeRF deletion minus MoRF deletion (Bluecher et al., 2024)
    "road_morf": False,  # mean probability over ROAD's fractions, most relevant removed first
    "road_lerf": True,
    "road_lerf_minus_morf": True,
}


# The one measure whose test decides whether a method's maps beat random maps; the others are supporting evidence,
# shown without a verdict of their own, so that the report gives one answer to one question (issue 26). ROAD removes
# pixels by noisy linear imputation and LeRF - MoRF subtracts what removal does regardless of order, so it depends on
# no baseline image: a grey or blurred image, which deletion and insertion start or end at, can itself be called a
# class (the quickstart's grey image is still called pneumonia).
DECIDING_MEASURE = "road_lerf_minus_morf"

SIGNIFICANCE = 0.01

# The verdict in words, after the method's name: "gradcam beats random maps".
VERDICT_TEXT = {
    "better": "beats random maps",
    "worse": "is worse than random maps",
    "unclear": "cannot be told from random maps",
}


def verdict_of(p_value: float | None, median_advantage: float | None) -> str:
    """better or worse (p < 0.01; the sign of the median advantage says which), else unclear. A function of the
    two numbers metrics.json keeps, so a report's markdown can give the verdict of a report written before it; a
    None is a NaN as metrics.json writes it (no image to compare)."""
    if p_value is None or not p_value < SIGNIFICANCE:
        return "unclear"
    return "better" if median_advantage > 0 else "worse"


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
        """This measure's test alone (`verdict_of`); only the deciding measure's reaches the report."""
        median = float(np.median(self.advantage[self.finite])) if self.finite.any() else float("nan")
        return verdict_of(self.p_value, median)

    @property
    def finite(self) -> np.ndarray:
        """(N,) bool: the images the test compares (a normalised measure is NaN where an image's range is too small)."""
        return np.isfinite(self.advantage)

    def numbers(self) -> dict[str, float | int]:
        """The supporting numbers of any measure: means over the compared images, median advantage, wins, p."""
        finite = self.finite
        mean = lambda values: float(values[finite].mean()) if finite.any() else float("nan")  # noqa: E731
        return {
            "map": mean(self.map_values),
            "random": mean(self.random_values.mean(axis=0)),
            "advantage_mean": mean(self.advantage),
            "advantage_median": float(np.median(self.advantage[finite])) if finite.any() else float("nan"),
            "wins": mean(self.advantage > 0),
            "p_value": self.p_value,
            "images": int(finite.sum()),
        }


def method_verdict(comparisons: dict[str, PairedComparison]) -> str:
    """The method's verdict in words, from the deciding measure's test alone (`DECIDING_MEASURE`)."""
    return VERDICT_TEXT[comparisons[DECIDING_MEASURE].verdict]


def paired_mask(count: int, paired_images: int | None) -> np.ndarray:
    """(N,) bool: the images of the paired test, `paired_images` of the N evenly spread (all when None or N or
    more). A distributed report picks them over every explained image before it cuts the images into chunks."""
    if paired_images is None or paired_images >= count:
        return np.ones(count, dtype=bool)
    mask = np.zeros(count, dtype=bool)
    mask[np.linspace(0, count - 1, paired_images).round().astype(np.int64)] = True
    return mask


def mean_over(values: np.ndarray, keep: np.ndarray) -> float:
    """Mean of `values` where `keep` holds; NaN when nothing is kept, since a mean of nothing is no score (a 0
    would read as a passed randomisation check or as no agreement)."""
    return float(values[keep].mean()) if keep.any() else float("nan")
