"""Report-card metrics against hand-computed values: deletion/insertion, agreement, randomisation, calibration."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

import trainers.report.figures as plots
from explain.metrics.agreement import agreement, common_resolution, rank_correlation, top_fraction_iou
from explain.metrics.faithfulness import CurveSettings, deletion_insertion
from explain.metrics.masking import pixel_ranks, random_maps
from explain.metrics.randomization import randomization, randomized_copy
from explain.registry import explain_maps
from pipelines import ConfigError
from pipelines.models import build_classifier
from trainers.report.classification import (
    expected_calibration_error,
    per_class_precision_recall,
    roc_curves,
    shared_label_space,
)

from helpers.models import PROCESSOR_32, TINY_VIT


class SumModel(nn.Module):
    """Two logits: the sum of the visible pixels, and 0. So P(class 0) = sigmoid(sum of pixels)."""

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        total = pixel_values.flatten(1).sum(1)
        return torch.stack([total, torch.zeros_like(total)], dim=1)


def sigmoid(value: float) -> float:
    return 1 / (1 + math.exp(-value))


def test_deletion_and_insertion_curves_and_areas_by_hand() -> None:
    image = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])  # (1, 1, 2, 2): pixel sum 10
    maps = image[:, 0]  # the brightest pixel is the most important
    curves = deletion_insertion(
        SumModel(), image, maps, torch.tensor([0]), CurveSettings(steps=4, insertion_start=torch.zeros_like(image))
    )
    torch.testing.assert_close(curves.fractions, torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0]))
    # deletion removes 4, then 3, then 2, then 1: visible sums 10, 6, 3, 1, 0
    deletion = [sigmoid(v) for v in (10, 6, 3, 1, 0)]
    # insertion reveals 4, 3, 2, 1 on a zero image: sums 0, 4, 7, 9, 10
    insertion = [sigmoid(v) for v in (0, 4, 7, 9, 10)]
    torch.testing.assert_close(curves.deletion[0], torch.tensor(deletion), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(curves.insertion[0], torch.tensor(insertion), rtol=1e-6, atol=1e-6)
    trapezoid = lambda ys: sum((a + b) / 2 * 0.25 for a, b in zip(ys, ys[1:]))  # noqa: E731
    assert float(curves.deletion_auc[0]) == pytest.approx(trapezoid(deletion), rel=1e-6)
    assert float(curves.insertion_auc[0]) == pytest.approx(trapezoid(insertion), rel=1e-6)


def test_curves_do_not_depend_on_the_forward_batch_size() -> None:
    torch.manual_seed(0)
    images = torch.rand(5, 1, 4, 4)
    maps = torch.rand(5, 4, 4)
    targets = torch.tensor([0, 1, 0, 1, 0])
    one = deletion_insertion(SumModel(), images, maps, targets, CurveSettings(steps=3, batch_size=2))
    many = deletion_insertion(SumModel(), images, maps, targets, CurveSettings(steps=3, batch_size=64))
    torch.testing.assert_close(one.deletion, many.deletion)
    torch.testing.assert_close(one.insertion, many.insertion)
    assert one.deletion.shape == (5, 4)


def test_a_faithful_map_beats_random_maps_on_a_model_that_reads_one_region() -> None:
    class LeftHalf(nn.Module):
        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
            evidence = pixel_values[..., :4].mean((1, 2, 3)) * 3
            return torch.stack([evidence, -evidence], dim=1)

    torch.manual_seed(0)
    images = torch.rand(16, 1, 8, 8) + 0.5
    truthful = torch.zeros(16, 8, 8)
    truthful[..., :4] = 1 + torch.rand(16, 8, 4)  # the region the model reads, first
    targets = torch.zeros(16, dtype=torch.long)
    start = torch.zeros_like(images)
    faithful = deletion_insertion(LeftHalf(), images, truthful, targets, CurveSettings(steps=8, insertion_start=start))
    random = deletion_insertion(
        LeftHalf(), images, random_maps(truthful, seed=1), targets, CurveSettings(steps=8, insertion_start=start)
    )
    assert float(faithful.deletion_auc.mean()) < float(random.deletion_auc.mean())
    assert float(faithful.insertion_auc.mean()) > float(random.insertion_auc.mean())


def test_too_few_steps_or_mismatched_maps_are_refused() -> None:
    with pytest.raises(ConfigError, match="at least 2 steps"):
        deletion_insertion(
            SumModel(), torch.rand(1, 1, 2, 2), torch.rand(1, 2, 2), torch.tensor([0]), CurveSettings(steps=1)
        )
    with pytest.raises(ConfigError, match="do not match"):
        deletion_insertion(SumModel(), torch.rand(1, 1, 4, 4), torch.rand(1, 2, 2), torch.tensor([0]))


def test_pixel_ranks_put_the_largest_first() -> None:
    assert pixel_ranks(torch.tensor([[[0.1, 0.9], [0.5, 0.3]]])).tolist() == [[3, 0, 1, 2]]


def test_rank_correlation_and_top_overlap_by_hand() -> None:
    a = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    b = torch.tensor([[[1.0, 3.0], [2.0, 4.0]]])
    # ranks 0,1,2,3 vs 0,2,1,3: d^2 sums to 2; Spearman = 1 - 6 * 2 / (4 * 15) = 0.8
    assert float(rank_correlation(a, b)[0]) == pytest.approx(0.8)
    assert float(rank_correlation(a, a)[0]) == pytest.approx(1.0)
    assert float(rank_correlation(a, -a)[0]) == pytest.approx(-1.0)
    assert float(rank_correlation(a, torch.ones_like(a))[0]) == 0.0  # a flat map ranks nothing
    # top half: a -> pixels {3, 4}, b -> {3 at (0,1), 4}: intersection 1 ({4}), union 3
    assert float(top_fraction_iou(a, b, fraction=0.5)[0]) == pytest.approx(1 / 3)
    assert float(top_fraction_iou(a, a, fraction=0.5)[0]) == pytest.approx(1.0)


def test_maps_of_different_resolutions_are_compared_at_the_smaller() -> None:
    small, large = torch.rand(2, 4, 4), torch.rand(2, 8, 8)
    left, right = common_resolution(large, small)
    assert left.shape == right.shape == (2, 4, 4)
    upsampled = torch.nn.functional.interpolate(small[:, None], size=(8, 8), mode="nearest")[:, 0]
    assert float(rank_correlation(upsampled, small).min()) > 0.9


@pytest.fixture(scope="module")
def trained_model() -> nn.Module:
    """A tiny ViT taught that class 1 lives in the left half of the image."""
    torch.manual_seed(0)
    model, _ = build_classifier(TINY_VIT, ["right", "left"], image_processor_config=PROCESSOR_32)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(60):
        labels = torch.randint(0, 2, (32,))
        images = torch.rand(32, 3, 32, 32) * 0.2
        images[labels == 1, :, :, :16] += 0.8
        images[labels == 0, :, :, 16:] += 0.8
        loss = nn.functional.cross_entropy(model(pixel_values=images).logits, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def test_agreement_of_a_model_with_itself_is_one(trained_model: nn.Module) -> None:
    images = torch.rand(6, 3, 32, 32)
    maps, targets = explain_maps(trained_model, "gradcam", images, None)
    again, _ = explain_maps(copy.deepcopy(trained_model), "gradcam", images, targets)
    result = agreement(maps, again, targets, targets, top_fraction=0.1)
    np.testing.assert_allclose(result.rank_correlation, 1.0, atol=1e-6)
    np.testing.assert_allclose(result.top_iou, 1.0)
    assert result.same_prediction == 1.0


def test_randomisation_check_gives_low_correlation_for_a_trained_model(trained_model: nn.Module) -> None:
    # Noise images: no bright region for an untrained network's activations to follow, so what the maps show
    # comes from the weights (a bright half would light up the maps of a random network too).
    torch.manual_seed(1)
    images = torch.rand(16, 3, 32, 32)
    maps, targets = explain_maps(trained_model, "gradcam", images, None)
    assert float(loss_of(trained_model)) < 0.3  # it did learn
    for seed in (0, 1):
        correlation = randomization(trained_model, "gradcam", images, maps, targets, seed=seed).rank_correlation
        assert abs(float(correlation.mean())) < 0.3
    same_weights = rank_correlation(maps, explain_maps(copy.deepcopy(trained_model), "gradcam", images, targets)[0])
    assert float(same_weights.mean()) == pytest.approx(1.0)  # the check can see a high correlation when it is there
    fresh = randomized_copy(trained_model, seed=0)
    assert not torch.equal(next(fresh.parameters()), next(trained_model.parameters()))


def loss_of(model: nn.Module) -> torch.Tensor:
    torch.manual_seed(2)
    labels = torch.randint(0, 2, (64,))
    images = torch.rand(64, 3, 32, 32) * 0.2
    images[labels == 1, :, :, :16] += 0.8
    images[labels == 0, :, :, 16:] += 0.8
    with torch.no_grad():
        return nn.functional.cross_entropy(model(pixel_values=images).logits, labels)


def test_expected_calibration_error_by_hand() -> None:
    calibration = expected_calibration_error(np.array([0.9, 0.8, 0.6, 0.3]), np.array([1, 0, 1, 0]), bins=2)
    # bin (0, 0.5]: {0.3}, accuracy 0, gap 0.3; bin (0.5, 1]: {0.9, 0.8, 0.6}, accuracy 2/3, confidence 0.7667
    assert calibration.ece == pytest.approx((0.3 + 3 * abs(2 / 3 - 2.3 / 3)) / 4)
    assert calibration.bin_count.tolist() == [1, 3]
    perfect = expected_calibration_error(np.array([1.0, 1.0, 0.0]), np.array([1, 1, 0]), bins=10)
    assert perfect.ece == pytest.approx(0.0)


def test_per_class_precision_and_recall_by_hand() -> None:
    logits = np.log(np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]]))
    result = per_class_precision_recall(logits, np.array([0, 1, 1, 1]), False, ["a", "b"])
    # predictions a, b, a, b: class a precision 1/2, recall 1/1; class b precision 2/2, recall 2/3
    assert result["a"] == {"precision": 0.5, "recall": 1.0, "support": 1}
    assert result["b"]["precision"] == 1.0 and result["b"]["recall"] == pytest.approx(2 / 3)


def test_label_spaces_must_match_unless_limited_to_shared_labels() -> None:
    with pytest.raises(ConfigError, match="allow_label_mismatch"):
        shared_label_space([["a", "b", "c"], ["a", "c"]], ["a", "b", "c"], allow_mismatch=False)
    space = shared_label_space([["a", "b", "c"], ["c", "x", "a"]], ["a", "b", "c"], allow_mismatch=True)
    assert space.names == ["a", "c"] and space.columns == [[0, 2], [2, 0]] and space.dataset_columns == [0, 2]
    keep, labels = space.keep(np.array([0, 1, 2, 2]), multi_label=False)
    assert keep.tolist() == [True, False, True, True] and labels.tolist() == [0, 1, 1]
    np.testing.assert_array_equal(space.restrict(1, np.array([[5.0, 6.0, 7.0]])), [[7.0, 5.0]])
    with pytest.raises(ConfigError, match="share 1 label"):
        shared_label_space([["a", "b"], ["a", "z"]], ["a", "b"], allow_mismatch=True)


def test_binary_roc_names_its_positive_class(monkeypatch: pytest.MonkeyPatch) -> None:
    saved = {}
    monkeypatch.setattr(plots, "atomic_save_figure", lambda figure, path: saved.update(figure=figure))
    logits = np.array([[2.0, -1.0], [0.5, 0.2], [-1.0, 2.0], [0.0, 1.0]])
    curves = roc_curves(logits, np.array([0, 1, 1, 0]), False, ["benign", "malignant"])
    plots.plot_roc({"teacher": curves}, {"teacher": 0.75}, "roc.png")
    legend = saved["figure"].axes[0].get_legend()
    assert [text.get_text() for text in legend.get_texts()] == ["positive class: malignant"]


def test_probability_thumbnails_keep_true_grey_levels(monkeypatch: pytest.MonkeyPatch) -> None:
    saved = []
    monkeypatch.setattr(plots, "atomic_save_figure", lambda figure, path: saved.append(figure))
    dark = np.full((8, 8, 1), 30, dtype=np.uint8)
    dark[0, 0] = 60
    plots.plot_probability_bars(dark[None], {"m": np.array([[0.3, 0.7]])}, ["a", "b"], ["b"], "unused.png")
    [thumbnail] = saved[0].axes[0].images
    assert thumbnail.get_clim() == (0, 255)  # a dark image drawn dark, not stretched to its own 30-60 range


def test_agreement_histograms_count_the_compared_pairs_and_say_when_there_are_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    saved = []
    monkeypatch.setattr(plots, "atomic_save_figure", lambda figure, path: saved.append(figure))
    distributions = {
        "student": {"rank_correlation": np.array([0.2, 0.6]), "top_iou": np.array([0.5, 0.0])},
        "blank": {"rank_correlation": np.array([]), "top_iou": np.array([])},
    }
    with np.errstate(all="raise"):  # no mean of an empty slice
        plots.plot_agreement(distributions, "teacher", "gradcam", "unused.png", 0.1)
    correlation, overlap = saved[0].axes
    assert [text.get_text() for text in correlation.get_legend().get_texts()] == [
        "student (mean 0.40, 2 pairs)",
        "blank (no pair: every map blank, 0 pairs)",
    ]
    assert overlap.get_legend().get_texts()[0].get_text() == "student (mean 0.25, 2 pairs)"
