"""The statistics behind the report's verdicts: a paired test of a method's maps against random maps, image by image
(two-sided Wilcoxon signed-rank), its verdicts in words, means over the images that can be compared, and which
images a distributed report tests."""

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
