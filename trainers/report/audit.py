"""What a shrink forgot: a model's predictions audited against the reference's (the original), image by image and
class by class. Numbers only (numpy and scipy); the report's maps of the forgotten images are in
`trainers.report.forgotten`.

    from trainers.report.audit import audit_predictions
    audit = audit_predictions(reference_logits, model_logits, labels, label_names, multi_label=False)

Definitions carried over from the literature:
- Fidelity apart from accuracy (Stanton et al., "Does Knowledge Distillation Really Work?", NeurIPS 2021): top-1
  agreement and KL(reference || model) of the predictive distributions, per image.
- Flips (Yan et al., "Positive-Congruent Training", CVPR 2021): a negative flip is an image the reference gets
  right and the model wrong; a positive flip the other way round. Their rates' difference is the accuracy change.
- Per-class damage and compression-identified exemplars (Hooker et al., "What Do Compressed Deep Neural Networks
  Forget?", arXiv 1911.05248): over several seeds of each model, a Welch t-test per class on the recall taken
  relative to each model's own overall accuracy; an exemplar is an image whose modal prediction over the model's
  seeds differs from the modal prediction over the reference's seeds, ranked (Hooker et al., "Characterising Bias in
  Compressed Models", arXiv 2010.03058) by the taxicab (L1) distance between the two groups' label histograms.

Multi-label data is audited per (image, label) pair: a pair is right when the label's prediction (logit > 0) equals
the truth, so the flips reconcile with MedMNIST's multi-label ACC (the mean over pairs); each label's recall is its
sensitivity; KL is the Bernoulli KL averaged over labels.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import binomtest, ttest_ind

from pipelines.labels import predicted_classes
from trainers.metrics import scores_from_logits

CONFIDENCE = 0.95
SIGNIFICANCE = 0.01  # a class counts as hurt at a corrected p below this
BOOTSTRAP_RESAMPLES = 1000
# Clip probabilities away from 0 and 1 before the log of a KL: a float32 softmax of a confident model rounds to 0.
PROBABILITY_FLOOR = 1e-7


def correct(logits: np.ndarray, labels: np.ndarray, multi_label: bool) -> np.ndarray:
    """Whether each prediction is right: (N,) for one label per image, (N, L) per (image, label) for multi-label."""
    return predicted_classes(np.asarray(logits), multi_label) == np.asarray(labels)


def kl_per_image(reference_logits: np.ndarray, model_logits: np.ndarray, multi_label: bool) -> np.ndarray:
    """(N,) KL(reference || model) of each image's predictive distribution (nats); for multi-label, the mean over
    labels of the Bernoulli KL."""
    p = np.clip(scores_from_logits(reference_logits, multi_label), PROBABILITY_FLOOR, 1.0)
    q = np.clip(scores_from_logits(model_logits, multi_label), PROBABILITY_FLOOR, 1.0)
    if not multi_label:
        return np.maximum((p * (np.log(p) - np.log(q))).sum(axis=1), 0.0)
    p_off = np.clip(1.0 - p, PROBABILITY_FLOOR, 1.0)
    q_off = np.clip(1.0 - q, PROBABILITY_FLOOR, 1.0)
    bernoulli = p * (np.log(p) - np.log(q)) + p_off * (np.log(p_off) - np.log(q_off))
    return np.maximum(bernoulli, 0.0).mean(axis=1)


def fidelity(reference_logits: np.ndarray, model_logits: np.ndarray, multi_label: bool) -> dict[str, Any]:
    """How closely the model follows the reference, whatever the truth: the share of images (or image-label
    pairs) predicted alike, and KL(reference || model) per image (mean and median)."""
    same = predicted_classes(reference_logits, multi_label) == predicted_classes(model_logits, multi_label)
    kl = kl_per_image(reference_logits, model_logits, multi_label)
    numbers = {
        "agreement": float(same.mean()),
        "kl_mean": float(kl.mean()),
        "kl_median": float(np.median(kl)),
    }
    if multi_label:
        numbers["per_label_agreement"] = [float(value) for value in same.mean(axis=0)]
    return numbers


def proportion(count: int, total: int) -> dict[str, Any]:
    """A count out of `total`, its rate and the rate's 95% Wilson interval."""
    if total == 0:
        return {"count": 0, "rate": float("nan"), "interval": [float("nan"), float("nan")]}
    interval = binomtest(int(count), int(total)).proportion_ci(CONFIDENCE, method="wilson")
    return {"count": int(count), "rate": count / total, "interval": [float(interval.low), float(interval.high)]}


def flips(reference_correct: np.ndarray, model_correct: np.ndarray) -> dict[str, Any]:
    """Negative flips (reference right, model wrong) and positive flips (reference wrong, model right) among the
    predictions, and the accuracy change they add up to: (positive - negative) / total equals the model's accuracy
    minus the reference's, to the last bit of the counts."""
    reference_correct, model_correct = np.asarray(reference_correct, bool), np.asarray(model_correct, bool)
    total = reference_correct.size
    negative = int((reference_correct & ~model_correct).sum())
    positive = int((~reference_correct & model_correct).sum())
    return {
        "predictions": total,
        "negative": proportion(negative, total),
        "positive": proportion(positive, total),
        "net_change": (positive - negative) / total,
        "reference_accuracy": float(reference_correct.mean()),
        "model_accuracy": float(model_correct.mean()),
    }


def recalls(predictions: np.ndarray, labels: np.ndarray, classes: int, multi_label: bool) -> np.ndarray:
    """(C,) each class's recall: the share of its images predicted as it (for multi-label, each label's sensitivity);
    NaN for a class with no image."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if multi_label:
        present = labels == 1
        hits = (predictions == 1) & present
        with np.errstate(invalid="ignore", divide="ignore"):
            return hits.sum(axis=0) / present.sum(axis=0)
    values = np.full(classes, np.nan)
    for cls in range(classes):
        members = labels == cls
        if members.any():
            values[cls] = float((predictions[members] == cls).mean())
    return values


def members_of(labels: np.ndarray, cls: int, multi_label: bool) -> np.ndarray:
    """Positions of the images of class `cls` (for multi-label, those that carry the label)."""
    labels = np.asarray(labels)
    return np.flatnonzero(labels[:, cls] == 1 if multi_label else labels == cls)


def recall_changes(
    reference_predictions: np.ndarray,
    model_predictions: np.ndarray,
    labels: np.ndarray,
    names: list[str],
    multi_label: bool,
    seed: int = 0,
    resamples: int = BOOTSTRAP_RESAMPLES,
) -> list[dict[str, Any]]:
    """Each class's recall for the reference and the model, and the change with a 95% bootstrap interval (the
    class's images resampled with replacement, both models on the same resample: a paired interval)."""
    rng = np.random.default_rng(seed)
    reference_recall = recalls(reference_predictions, labels, len(names), multi_label)
    model_recall = recalls(model_predictions, labels, len(names), multi_label)
    rows = []
    for cls, name in enumerate(names):
        members = members_of(labels, cls, multi_label)
        row = {
            "class": name,
            "images": int(len(members)),
            "reference_recall": float(reference_recall[cls]),
            "model_recall": float(model_recall[cls]),
            "change": float(model_recall[cls] - reference_recall[cls]),
            "interval": [float("nan"), float("nan")],
        }
        if len(members):
            difference = _class_hits(model_predictions, members, cls, multi_label).astype(int) - _class_hits(
                reference_predictions, members, cls, multi_label
            ).astype(int)
            # Resampling the class's images with replacement draws how many of each difference (-1, 0, 1) the
            # resample holds: a multinomial draw, without a resamples-by-images index array.
            shares = np.array([(difference == value).mean() for value in (-1, 0, 1)])
            counts = rng.multinomial(len(members), shares, size=resamples)
            means = (counts[:, 2] - counts[:, 0]) / len(members)
            low, high = np.quantile(means, [(1 - CONFIDENCE) / 2, (1 + CONFIDENCE) / 2])
            row["interval"] = [float(low), float(high)]
        rows.append(row)
    return rows


def _class_hits(predictions: np.ndarray, members: np.ndarray, cls: int, multi_label: bool) -> np.ndarray:
    """Whether each member image of a class is predicted as that class."""
    predictions = np.asarray(predictions)
    return predictions[members, cls] == 1 if multi_label else predictions[members] == cls


def holm(p_values: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (family-wise error over the classes); NaN stays NaN and counts for none."""
    values = np.asarray(p_values, dtype=float)
    tested = np.flatnonzero(~np.isnan(values))
    adjusted = np.full(len(values), np.nan)
    running = 0.0
    for rank, position in enumerate(tested[np.argsort(values[tested], kind="stable")]):
        running = max(running, min(1.0, (len(tested) - rank) * values[position]))
        adjusted[position] = running
    return [float(value) for value in adjusted]


def relative_recalls(predictions: np.ndarray, labels: np.ndarray, classes: int, multi_label: bool) -> np.ndarray:
    """(S, C) for S seeds' predictions: each class's recall divided by that seed's overall accuracy (Hooker et al.:
    a class is hurt when it loses more than the model does on average)."""
    rows = []
    for seed_predictions in predictions:
        accuracy = float((np.asarray(seed_predictions) == np.asarray(labels)).mean())
        recall = recalls(seed_predictions, labels, classes, multi_label)
        rows.append(recall / accuracy if accuracy > 0 else np.full(classes, np.nan))  # NaN: nothing right at all
    return np.asarray(rows)


def welch_p(reference: np.ndarray, model: np.ndarray) -> float:
    """Two-sided Welch t-test p-value of two samples; where neither has any spread over its seeds the test is
    undefined: 1 for equal means (nothing to tell apart), NaN for different ones (no class is flagged on a
    difference whose noise cannot be estimated)."""
    if np.var(reference) == 0 and np.var(model) == 0:
        return 1.0 if np.mean(reference) == np.mean(model) else float("nan")
    return float(ttest_ind(model, reference, equal_var=False).pvalue)


def class_damage(
    reference_predictions: np.ndarray,
    model_predictions: np.ndarray,
    labels: np.ndarray,
    names: list[str],
    multi_label: bool,
) -> list[dict[str, Any]]:
    """Hooker et al.'s per-class test over seeds: for each class, Welch's t-test between the two groups' relative
    recalls (`relative_recalls`), Holm-corrected over the classes; a class is hurt when the corrected p is below
    `SIGNIFICANCE` and the model's relative recall is the lower.

    Args:
        reference_predictions: (S_ref, N) or (S_ref, N, L) predictions of the reference's seeds, S_ref >= 2.
        model_predictions: (S_model, N) or (S_model, N, L), S_model >= 2.
    """
    reference = relative_recalls(reference_predictions, labels, len(names), multi_label)
    model = relative_recalls(model_predictions, labels, len(names), multi_label)
    p_values = [
        float("nan")
        if np.isnan(reference[:, cls]).any() or np.isnan(model[:, cls]).any()
        else welch_p(reference[:, cls], model[:, cls])
        for cls in range(len(names))
    ]
    rows = []
    for cls, (name, adjusted) in enumerate(zip(names, holm(p_values))):
        difference = float(model[:, cls].mean() - reference[:, cls].mean())
        rows.append(
            {
                "class": name,
                "reference_relative_recall": [float(value) for value in reference[:, cls]],
                "model_relative_recall": [float(value) for value in model[:, cls]],
                "difference": difference,
                "p_value": p_values[cls],
                "p_holm": adjusted,
                "hurt": bool(adjusted < SIGNIFICANCE and difference < 0),
            }
        )
    return rows


def label_histograms(predictions: np.ndarray, classes: int, multi_label: bool) -> np.ndarray:
    """Each image's predicted-label histogram over seeds, as shares: (S, N) -> (N, C); for multi-label (S, N, L)
    -> (N, L, 2), each label's share of "absent" and "present"."""
    predictions = np.asarray(predictions)
    if multi_label:
        present = predictions.mean(axis=0)
        return np.stack([1.0 - present, present], axis=-1)
    counts = np.stack([(predictions == cls).sum(axis=0) for cls in range(classes)], axis=1)
    return counts / predictions.shape[0]


def mean_probabilities(seed_logits: np.ndarray, multi_label: bool) -> np.ndarray:
    """Each image's predicted probabilities averaged over seeds, shaped as `label_histograms`: (S, N, L) -> (N, L),
    or (N, L, 2) for multi-label (absent, present)."""
    scores = np.stack([scores_from_logits(logits, multi_label) for logits in seed_logits]).mean(axis=0)
    return np.stack([1.0 - scores, scores], axis=-1) if multi_label else scores


def modal_predictions(histograms: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """The most frequent prediction per image (per label for multi-label); a tie (an even number of seeds) goes to
    the tied class with the higher mean probability over seeds, so that the mode does not depend on the label
    order."""
    tied = histograms == histograms.max(axis=-1, keepdims=True)
    return np.where(tied, probabilities, -np.inf).argmax(axis=-1)


def seed_modes(seed_logits: np.ndarray, classes: int, multi_label: bool) -> tuple[np.ndarray, np.ndarray]:
    """A seed group's label histograms (`label_histograms`) and modal predictions (`modal_predictions`)."""
    predictions = np.stack([predicted_classes(logits, multi_label) for logits in seed_logits])
    histograms = label_histograms(predictions, classes, multi_label)
    return histograms, modal_predictions(histograms, mean_probabilities(seed_logits, multi_label))


def seed_exemplars(
    reference_seeds: np.ndarray, model_seeds: np.ndarray, labels: np.ndarray, classes: int, multi_label: bool
) -> dict[str, Any]:
    """Compression-identified exemplars over seeds: images whose modal prediction differs between the groups
    (for multi-label, on any label), ranked by the taxicab distance between the groups' label histograms (summed
    over labels for multi-label), largest first (ties in image order). For one label per image, how many of them
    the shrink forgot (the reference's mode right), learnt (the model's mode right) or changed between two wrong
    classes.

    Args:
        reference_seeds, model_seeds: (S, N, L) logits of each group's seeds.
        labels: (N,) or (N, L) the truth.
    """
    reference, reference_mode = seed_modes(reference_seeds, classes, multi_label)
    model, model_mode = seed_modes(model_seeds, classes, multi_label)
    # Rounded so that float noise in the shares (thirds) does not break ties the counts make equal.
    distance = np.abs(reference - model).reshape(len(reference), -1).sum(axis=1).round(12)
    differs = reference_mode != model_mode
    if multi_label:
        differs = differs.any(axis=1)
    positions = np.flatnonzero(differs)
    order = positions[np.argsort(-distance[positions], kind="stable")]
    found = {
        "rule": "modal prediction over seeds differs; ranked by the taxicab distance of the label histograms",
        "positions": [int(position) for position in order],
        "scores": [float(distance[position]) for position in order],
        "outcomes": None,
    }
    if not multi_label:
        truth = np.asarray(labels)[order]
        outcome = np.where(
            reference_mode[order] == truth, "forgotten", np.where(model_mode[order] == truth, "learnt", "both wrong")
        )
        found["outcomes"] = [str(value) for value in outcome]
    return found


def flip_exemplars(
    reference_logits: np.ndarray, reference_correct: np.ndarray, model_correct: np.ndarray, multi_label: bool
) -> dict[str, Any]:
    """With one model on each side: the images the model newly gets wrong (a negative flip; for multi-label, on
    any label), ranked by the reference's confidence in its own prediction, most confident first."""
    negative = np.asarray(reference_correct, bool) & ~np.asarray(model_correct, bool)
    scores = scores_from_logits(reference_logits, multi_label)
    if multi_label:
        negative = negative.any(axis=1)
        confidence = np.where(scores > 0.5, scores, 1.0 - scores).min(axis=1)
    else:
        confidence = scores.max(axis=1)
    positions = np.flatnonzero(negative)
    order = positions[np.argsort(-confidence[positions], kind="stable")]
    return {
        "rule": "negative flips, ranked by the reference's confidence",
        "positions": [int(position) for position in order],
        "scores": [float(confidence[position]) for position in order],
    }


def seed_pair_flips(
    reference_seeds: np.ndarray, model_seeds: np.ndarray, labels: np.ndarray, multi_label: bool
) -> dict[str, Any]:
    """Fidelity and flips of each seed of the model against the reference's seed in the same place (the groups'
    seed order), for their spread over seeds."""
    pairs = [
        (
            fidelity(reference, model, multi_label),
            flips(correct(reference, labels, multi_label), correct(model, labels, multi_label)),
        )
        for reference, model in zip(reference_seeds, model_seeds)
    ]
    return {
        "agreement": [pair[0]["agreement"] for pair in pairs],
        "negative_rate": [pair[1]["negative"]["rate"] for pair in pairs],
        "positive_rate": [pair[1]["positive"]["rate"] for pair in pairs],
        "net_change": [pair[1]["net_change"] for pair in pairs],
    }


def audit_predictions(
    reference_logits: np.ndarray,
    model_logits: np.ndarray,
    labels: np.ndarray,
    names: list[str],
    multi_label: bool,
    reference_seeds: np.ndarray | None = None,
    model_seeds: np.ndarray | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """The audit of one model against the reference on one split.

    Args:
        reference_logits: (N, L) the reference's logits (the model shown in the report).
        model_logits: (N, L) the model's.
        labels: (N,) class indices or (N, L) multi-hot, in the same label order.
        names: The L class names.
        multi_label: Whether each image has a set of labels.
        reference_seeds: (S, N, L) logits of every seed of the reference's group, or None for one model.
        model_seeds: (S', N, L) of the model's group, or None.
        seed: Seeds the bootstrap.

    Returns:
        ``fidelity``, ``flips``, ``classes`` (per-class recall change), ``class_test`` (the Welch test over seeds,
        or None with ``class_test_note`` saying what was computed instead), ``exemplars`` and ``seeds``.
    """
    labels = np.asarray(labels)
    reference_correct = correct(reference_logits, labels, multi_label)
    model_correct = correct(model_logits, labels, multi_label)
    audit: dict[str, Any] = {
        "fidelity": fidelity(reference_logits, model_logits, multi_label),
        "flips": flips(reference_correct, model_correct),
        "classes": recall_changes(
            predicted_classes(reference_logits, multi_label),
            predicted_classes(model_logits, multi_label),
            labels,
            names,
            multi_label,
            seed,
        ),
        "seeds": {
            "reference": 1 if reference_seeds is None else len(reference_seeds),
            "model": 1 if model_seeds is None else len(model_seeds),
        },
        "class_test": None,
    }
    grouped = reference_seeds is not None and model_seeds is not None
    if grouped and len(reference_seeds) == len(model_seeds) > 1:
        audit["seed_pairs"] = seed_pair_flips(reference_seeds, model_seeds, labels, multi_label)
    if grouped and len(reference_seeds) >= 2 and len(model_seeds) >= 2:
        reference_predictions = np.stack([predicted_classes(logits, multi_label) for logits in reference_seeds])
        model_predictions = np.stack([predicted_classes(logits, multi_label) for logits in model_seeds])
        audit["class_test"] = class_damage(reference_predictions, model_predictions, labels, names, multi_label)
        audit["exemplars"] = seed_exemplars(reference_seeds, model_seeds, labels, len(names), multi_label)
    else:
        counts = audit["seeds"]
        audit["class_test_note"] = (
            f"The per-class Welch test needs at least 2 seeds on each side (reference {counts['reference']}, model "
            f"{counts['model']}); shown instead: each class's recall change with its bootstrap interval, and the "
            "negative flips as the forgotten images."
        )
        audit["exemplars"] = flip_exemplars(reference_logits, reference_correct, model_correct, multi_label)
    return audit
