"""What the shrink forgot (trainers.report.audit, trainers.report.forgotten): planted answers on logits built so the
answer is known, the statistics against their written-out formulas, and the seed groups' refusals."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import ttest_ind

from trainers.metrics import classification_metrics
from trainers.report.audit import (
    audit_predictions,
    flips,
    holm,
    kl_per_image,
    proportion,
    seed_exemplars,
    welch_p,
)
from trainers.report.forgotten import audit_images, map_agreement_by_change

NAMES = ["a", "b", "c"]
IMAGES = 600
HURT = 1  # the class the planted shrink forgets
FORGOTTEN = np.arange(0, 60)  # positions among class HURT's images that the planted shrink gets wrong


def planted_reference(seed: int, labels: np.ndarray) -> np.ndarray:
    """Logits of a reference seed: the true class ahead by 3 plus noise, so each seed gets a few images wrong,
    differently per seed (recall varies a little from seed to seed)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 1.0, size=(len(labels), len(NAMES)))
    logits[np.arange(len(labels)), labels] += 3.0
    return logits.astype(np.float32)


@pytest.fixture(scope="module")
def planted() -> dict:
    """Three reference seeds; the model's seeds are the same seeds with class HURT's logit lowered by 50 on a known
    set of that class's images (every one of which each reference seed gets right)."""
    labels = np.arange(IMAGES) % len(NAMES)
    references = np.stack([planted_reference(seed, labels) for seed in range(3)])
    right_everywhere = np.flatnonzero((labels == HURT) & (references.argmax(axis=2) == labels).all(axis=0))
    forgotten = right_everywhere[FORGOTTEN]
    models = references.copy()
    models[:, forgotten, HURT] -= 50.0
    return {"labels": labels, "references": references, "models": models, "forgotten": forgotten}


def test_a_copy_of_the_reference_has_agreement_1_kl_0_no_flip_and_no_class_hurt(planted: dict) -> None:
    references = planted["references"]
    audit = audit_predictions(
        references[0], references[0].copy(), planted["labels"], NAMES, False, references, references.copy()
    )
    assert audit["fidelity"]["agreement"] == 1.0
    assert audit["fidelity"]["kl_mean"] == 0.0 and audit["fidelity"]["kl_median"] == 0.0
    assert audit["flips"]["negative"]["count"] == 0 and audit["flips"]["positive"]["count"] == 0
    assert audit["flips"]["net_change"] == 0.0
    assert [row["change"] for row in audit["classes"]] == [0.0, 0.0, 0.0]
    assert not any(row["hurt"] for row in audit["class_test"])
    assert all(row["p_holm"] == 1.0 for row in audit["class_test"])
    assert audit["exemplars"]["positions"] == []


def test_lowering_one_class_on_known_images_flips_exactly_those_and_flags_that_class_alone(planted: dict) -> None:
    labels, references, models = planted["labels"], planted["references"], planted["models"]
    audit = audit_predictions(references[0], models[0], labels, NAMES, False, references, models)
    # One model each side: the negative flips are exactly the planted images, most confident first.
    assert sorted(audit["exemplars"]["positions"]) == sorted(planted["forgotten"].tolist())
    assert audit["flips"]["negative"]["count"] == len(planted["forgotten"])
    assert audit["flips"]["positive"]["count"] == 0
    # Seed by seed (model seed k against reference seed k) the same planted images flip.
    assert audit["seed_pairs"]["negative_rate"] == [len(planted["forgotten"]) / IMAGES] * 3
    assert audit["seed_pairs"]["positive_rate"] == [0.0] * 3
    # Over seeds: class HURT (and no other) is hurt, at p < 0.01 after the correction over classes.
    hurt = [row["class"] for row in audit["class_test"] if row["hurt"]]
    assert hurt == [NAMES[HURT]]
    assert audit["class_test"][HURT]["p_holm"] < 0.01
    # Its recall dropped by the planted share of its images.
    members = (labels == HURT).sum()
    change = audit["classes"][HURT]["change"]
    assert change == pytest.approx(-len(planted["forgotten"]) / members)
    low, high = audit["classes"][HURT]["interval"]
    assert low <= change <= high < 0


def test_seed_exemplars_are_the_planted_images_when_every_seed_forgets_them(planted: dict) -> None:
    labels, references, models = planted["labels"], planted["references"], planted["models"]
    audit = audit_predictions(references[0], models[0], labels, NAMES, False, references, models)
    found = audit["exemplars"]["positions"]
    # Every reference seed predicts HURT on a planted image and no model seed does; elsewhere the model's seeds are
    # the reference's, so the exemplars are exactly the planted images, each at the largest distance (2).
    assert sorted(found) == sorted(planted["forgotten"].tolist())
    assert audit["exemplars"]["scores"] == [2.0] * len(planted["forgotten"])
    assert audit["exemplars"]["outcomes"] == ["forgotten"] * len(planted["forgotten"])


def test_flips_and_accuracies_reconcile_exactly() -> None:
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 3, 997)
    reference, model = rng.normal(size=(997, 3)), rng.normal(size=(997, 3))
    audit = audit_predictions(reference, model, labels, NAMES, False)
    numbers = audit["flips"]
    positive, negative = numbers["positive"]["count"], numbers["negative"]["count"]
    right_reference = int((reference.argmax(1) == labels).sum())
    right_model = int((model.argmax(1) == labels).sum())
    assert positive - negative == right_model - right_reference
    assert numbers["net_change"] == pytest.approx(numbers["model_accuracy"] - numbers["reference_accuracy"], abs=1e-15)
    assert numbers["model_accuracy"] == classification_metrics(model, labels, False)["accuracy"]


def test_multi_label_flips_reconcile_with_medmnist_multi_label_acc() -> None:
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 2, size=(300, 4))
    reference, model = rng.normal(size=(300, 4)), rng.normal(size=(300, 4))
    audit = audit_predictions(reference, model, labels, list("wxyz"), True)
    change = audit["flips"]["net_change"]
    medmnist = [classification_metrics(logits, labels, True)["accuracy"] for logits in (reference, model)]
    assert change == pytest.approx(medmnist[1] - medmnist[0], abs=1e-12)
    same = (reference > 0) == (model > 0)
    assert audit["fidelity"]["per_label_agreement"] == pytest.approx(same.mean(axis=0).tolist())
    assert audit["fidelity"]["agreement"] == pytest.approx(same.mean())


def test_kl_is_the_written_out_formula() -> None:
    rng = np.random.default_rng(5)
    reference, model = rng.normal(size=(20, 3)), rng.normal(size=(20, 3))
    p, q = torch.softmax(torch.tensor(reference), 1), torch.softmax(torch.tensor(model), 1)
    expected = (p * (p.log() - q.log())).sum(1).numpy()
    assert kl_per_image(reference, model, False) == pytest.approx(expected, rel=1e-6)
    p, q = torch.sigmoid(torch.tensor(reference)), torch.sigmoid(torch.tensor(model))
    bernoulli = p * (p.log() - q.log()) + (1 - p) * ((1 - p).log() - (1 - q).log())
    assert kl_per_image(reference, model, True) == pytest.approx(bernoulli.mean(1).numpy(), rel=1e-6)


def test_wilson_interval_is_the_written_out_formula() -> None:
    count, total, z = 12, 624, 1.959963984540054
    rate = count / total
    centre = (rate + z**2 / (2 * total)) / (1 + z**2 / total)
    half = z / (1 + z**2 / total) * math.sqrt(rate * (1 - rate) / total + z**2 / (4 * total**2))
    numbers = proportion(count, total)
    assert numbers["rate"] == rate
    assert numbers["interval"] == pytest.approx([centre - half, centre + half], rel=1e-9)


def test_holm_is_the_step_down_correction() -> None:
    # Sorted 0.01, 0.02, 0.04 times 3, 2, 1: 0.03, 0.04, 0.04 (kept monotone); NaN untested.
    assert holm([0.04, 0.01, float("nan"), 0.02]) == pytest.approx([0.04, 0.03, float("nan"), 0.04], nan_ok=True)


def test_the_class_test_is_welch_on_recall_relative_to_accuracy(planted: dict) -> None:
    labels, references, models = planted["labels"], planted["references"], planted["models"]
    audit = audit_predictions(references[0], models[0], labels, NAMES, False, references, models)
    relative = lambda logits: np.array(  # noqa: E731
        [
            [(seed.argmax(1)[labels == cls] == cls).mean() / (seed.argmax(1) == labels).mean() for cls in range(3)]
            for seed in logits
        ]
    )
    reference_values, model_values = relative(references), relative(models)
    for cls, row in enumerate(audit["class_test"]):
        assert row["reference_relative_recall"] == pytest.approx(reference_values[:, cls].tolist())
        expected = ttest_ind(model_values[:, cls], reference_values[:, cls], equal_var=False).pvalue
        assert row["p_value"] == pytest.approx(expected)


def as_logits(predictions: np.ndarray, classes: int = 2, margin: float = 2.0) -> np.ndarray:
    """(S, N) predicted classes -> (S, N, C) logits that predict them."""
    return np.eye(classes)[np.asarray(predictions)] * margin


def test_exemplars_are_ranked_by_the_taxicab_distance_of_the_histograms() -> None:
    # Three seeds each side, 2 classes. Image 0: 0,0,0 against 1,1,1 (distance 2); image 1: 0,0,1 against
    # 1,1,0 (modes differ, distance 2/3); image 2: 0,0,1 against 0,1,0 (same mode: none); image 3: 1,1,0
    # against 0,0,0 (distance 4/3).
    reference = np.array([[0, 0, 0, 1], [0, 0, 0, 1], [0, 1, 1, 0]])
    model = np.array([[1, 1, 0, 0], [1, 1, 1, 0], [1, 0, 0, 0]])
    labels = np.array([0, 1, 0, 0])
    found = seed_exemplars(as_logits(reference), as_logits(model), labels, 2, multi_label=False)
    assert found["positions"] == [0, 3, 1]
    assert found["scores"] == pytest.approx([2.0, 4 / 3, 2 / 3])
    # Image 0: the reference's mode (0) is right; image 3: the model's (0); image 1 (truth 1): the model's mode 1.
    assert found["outcomes"] == ["forgotten", "learnt", "learnt"]


def test_a_tied_mode_goes_to_the_more_probable_class_whatever_the_label_order() -> None:
    # Two reference seeds split 1-1 on image 0; the seed calling class 1 is the more confident one, so the mode is
    # class 1, as the model's three seeds say: no exemplar, with the labels in either order.
    reference = np.array([[[2.0, 0.0]], [[0.0, 5.0]]])  # (S=2, N=1, C=2)
    model = as_logits(np.array([[1], [1], [0]]))
    labels = np.array([1])
    assert seed_exemplars(reference, model, labels, 2, False)["positions"] == []
    swapped = seed_exemplars(reference[..., ::-1], model[..., ::-1], 1 - labels, 2, False)
    assert swapped["positions"] == []


def test_a_class_without_spread_over_seeds_is_not_flagged_on_a_difference() -> None:
    # Every seed alike on both sides: a difference whose noise cannot be estimated is not a test (NaN, not p = 0).
    assert math.isnan(welch_p(np.array([1.0, 1.0]), np.array([0.99, 0.99])))
    assert welch_p(np.array([1.0, 1.0]), np.array([1.0, 1.0])) == 1.0


def test_one_model_a_side_names_what_was_computed_instead_of_the_test(planted: dict) -> None:
    references = planted["references"]
    audit = audit_predictions(references[0], planted["models"][0], planted["labels"], NAMES, False, references, None)
    assert audit["class_test"] is None
    assert "needs at least 2 seeds on each side (reference 3, model 1)" in audit["class_test_note"]
    assert "bootstrap interval" in audit["class_test_note"]


def test_flip_counts_are_the_definitions() -> None:
    reference_correct = np.array([1, 1, 0, 0, 1], bool)
    model_correct = np.array([1, 0, 1, 0, 0], bool)
    numbers = flips(reference_correct, model_correct)
    assert (numbers["negative"]["count"], numbers["positive"]["count"]) == (2, 1)
    assert numbers["net_change"] == pytest.approx(-1 / 5)


def test_maps_that_moved_on_changed_images_are_told_apart_from_kept_ones() -> None:
    generator = torch.Generator().manual_seed(0)
    reference = torch.rand(40, 8, 8, generator=generator)
    model = reference.clone()
    changed = np.arange(40) < 20
    model[:20] = torch.rand(20, 8, 8, generator=generator)  # unrelated maps where the prediction changed
    numbers = map_agreement_by_change(reference, model, changed, 0.1)
    assert numbers["kept"]["rank_correlation_mean"] == pytest.approx(1.0)
    assert abs(numbers["changed"]["rank_correlation_mean"]) < 0.2
    assert numbers["rank_correlation_p"] < 1e-6
    same = map_agreement_by_change(reference, reference.clone(), changed, 0.1)
    assert same["changed"]["rank_correlation_mean"] == pytest.approx(1.0) and same["top10_iou_p"] == 1.0


def test_audit_images_take_every_changed_image_and_as_many_kept() -> None:
    changed = np.zeros(100, bool)
    changed[[3, 50, 70]] = True
    chosen = audit_images(changed, cap=64, seed=0)
    assert chosen.changed.tolist() == [3, 50, 70]
    assert len(chosen.kept) == 16 and not changed[chosen.kept].any()  # at least 16 kept, none changed
    assert audit_images(changed, cap=64, seed=0).kept.tolist() == chosen.kept.tolist()  # seeded
    # Over the cap, a seeded sample of the changed images, not the first ones in split order.
    many = np.zeros(1000, bool)
    many[::2] = True
    sampled = audit_images(many, cap=64, seed=0)
    assert len(sampled.changed) == 64 and many[sampled.changed].all() and sampled.changed.max() > 500
    assert len(sampled.kept) == 64 and not many[sampled.kept].any()
    # Nothing changed: nothing to compare. Everything changed: no kept image to compare with.
    assert (
        len(audit_images(np.zeros(50, bool), 64, 0).changed),
        len(audit_images(np.zeros(50, bool), 64, 0).kept),
    ) == (0, 0)
    assert len(audit_images(np.ones(50, bool), 64, 0).kept) == 0
