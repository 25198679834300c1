"""Robustness under corruption: every model of a report on the same corrupted images (`pipelines.corruptions`,
MedMNIST-C's families at severities 1-5), measured as MedMNIST-C measures it, with the first model in the role
MedMNIST-C gives AlexNet; how often each model still predicts what the reference predicts on the same corrupted image;
and whether each model's map holds, its rank correlation between the clean and the corrupted image.

Definitions (Di Salvo et al., MedMNIST-C, 2024, after Hendrycks and Dietterich's ImageNet-C, 2019):
- E(f, c, s): balanced error, 1 - balanced accuracy, of model f under corruption c at severity s; E(f, clean) on the
  same images uncorrupted. Balanced accuracy: the mean recall over the classes present (binary and multi-class,
  argmax; MedMNIST-C's binary threshold 0.5 on the positive class is the same decision); multi-label, the mean over
  labels of each label's balanced accuracy at probability 0.5 (logit 0).
- BE(f, c) = sum over s of E(f, c, s) / sum over s of E(ref, c, s).
- rBE(f, c) = sum over s of (E(f, c, s) - E(f, clean)) / sum over s of (E(ref, c, s) - E(ref, clean)): the error a
  corruption adds, relative to what it adds to the reference; undefined (n/a) where it adds none to the reference.
- BE(f) and rBE(f): the means over the corruptions (those where each is defined).
The reference against itself has BE = rBE = 1 on every corruption, by construction. One departure: rBE is given only
where the corruption adds at least one image's worth of balanced error to the reference (`error_resolution`): a
reference the corruption barely touches (a teacher under noise MedMNIST-C tuned for AlexNet) would make the ratio one
of sampling noise, of any size and sign.

Under `accelerate launch` the corrupted images are predicted in fixed chunks of the sample, process r taking chunks
r, r + W, ..., and gathered in chunk order; every draw of a corruption is seeded by the image's row, so the numbers are
the same on any number of processes (trainers.report.run says how the rest of the report shares its work).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

from explain.metrics.agreement import blank_maps, rank_correlation
from explain.plots import display_images, panel_grid, resize_maps
from explain.registry import default_method, method_title
from pipelines.corruptions import REFERENCE_SIDE, SEVERITIES, corrupt_images, describe, severity_parameter
from pipelines.errors import ConfigError
from pipelines.io import atomic_save_figure
from pipelines.labels import label_text, predicted_classes
from pipelines.progress import chunks_with_progress
from trainers.report.split import ReportSplit, in_order, my_chunks

# AlexNet's balanced errors as MedMNIST-C publishes them (medmnistc/utils/baselines.py, BASELINES, commit b6dee0e):
# the clean error and each corruption's error averaged over severities 1-5, at 224 px. The corruptions not available
# here (stain_deposit, bubble, black_corner, characters) are left out.
ALEXNET: dict[str, dict[str, Any]] = {
    "bloodmnist": {
        "clean": 0.018369282094266692,
        "corrupted": {
            "pixelate": 0.05975618949678589,
            "jpeg_compression": 0.13976187053705183,
            "defocus_blur": 0.22399795597780647,
            "motion_blur": 0.1845192137218041,
            "brightness_up": 0.06946294328845175,
            "brightness_down": 0.0790077546902872,
            "contrast_up": 0.05215362284240639,
            "contrast_down": 0.07966068499560328,
            "saturate": 0.03478558170020538,
        },
    },
    "breastmnist": {
        "clean": 0.14536340852130336,
        "corrupted": {
            "pixelate": 0.46127819548872184,
            "jpeg_compression": 0.2986215538847118,
            "speckle_noise": 0.38709273182957393,
            "motion_blur": 0.25902255639097743,
            "brightness_up": 0.3197994987468672,
            "brightness_down": 0.21127819548872181,
            "contrast_down": 0.15864661654135334,
        },
    },
    "chestmnist": {
        "clean": 0.2839064387513035,
        "corrupted": {
            "pixelate": 0.44895070087295996,
            "jpeg_compression": 0.34575690815860566,
            "gaussian_noise": 0.47688317292098203,
            "speckle_noise": 0.45687894795025785,
            "impulse_noise": 0.48553631547337917,
            "shot_noise": 0.4926966815396587,
            "gaussian_blur": 0.3176801263607164,
            "brightness_up": 0.2993721457134663,
            "brightness_down": 0.29711530406534037,
            "contrast_up": 0.28751004051276824,
            "contrast_down": 0.2954742427570406,
            "gamma_corr_up": 0.287462117104012,
            "gamma_corr_down": 0.2891642074561852,
        },
    },
    "dermamnist": {
        "clean": 0.3985775597242611,
        "corrupted": {
            "pixelate": 0.5105118313063095,
            "jpeg_compression": 0.47716296678659287,
            "gaussian_noise": 0.770161396521756,
            "speckle_noise": 0.7688784860204994,
            "impulse_noise": 0.7995552265467947,
            "shot_noise": 0.8391552104792783,
            "defocus_blur": 0.7008318467374395,
            "motion_blur": 0.6266414682428412,
            "zoom_blur": 0.5277668583085878,
            "brightness_up": 0.4473990148869178,
            "brightness_down": 0.5772968080812169,
            "contrast_up": 0.430415384126964,
            "contrast_down": 0.5398210493891896,
        },
    },
    "octmnist": {
        "clean": 0.20199999999999996,
        "corrupted": {
            "pixelate": 0.3124,
            "jpeg_compression": 0.29640000000000005,
            "speckle_noise": 0.386,
            "defocus_blur": 0.3084,
            "motion_blur": 0.4892,
            "contrast_down": 0.4196,
        },
    },
    "organamnist": {
        "clean": 0.050053710403475504,
        "corrupted": {
            "pixelate": 0.07589728744538755,
            "jpeg_compression": 0.10233182799848468,
            "gaussian_noise": 0.558867512509986,
            "speckle_noise": 0.5008977196696448,
            "impulse_noise": 0.6005122792556206,
            "shot_noise": 0.5704549211261293,
            "gaussian_blur": 0.23340661727240267,
            "brightness_up": 0.14763547790322412,
            "brightness_down": 0.2646445055204496,
            "contrast_up": 0.10977873034814234,
            "contrast_down": 0.1268424696095805,
            "gamma_corr_up": 0.10360009998047674,
            "gamma_corr_down": 0.10577092296366888,
        },
    },
    "organcmnist": {
        "clean": 0.07596783210891289,
        "corrupted": {
            "pixelate": 0.12161270665759313,
            "jpeg_compression": 0.10754481922990186,
            "gaussian_noise": 0.5736544084235357,
            "speckle_noise": 0.5130960298987614,
            "impulse_noise": 0.5997780092763433,
            "shot_noise": 0.5492477253691926,
            "gaussian_blur": 0.316895537101905,
            "brightness_up": 0.16011849294420644,
            "brightness_down": 0.2324271692594097,
            "contrast_up": 0.09991836613387597,
            "contrast_down": 0.15327395964015147,
            "gamma_corr_up": 0.1426418229218433,
            "gamma_corr_down": 0.12390902424472901,
        },
    },
    "organsmnist": {
        "clean": 0.24300485476777922,
        "corrupted": {
            "pixelate": 0.31259415418134306,
            "jpeg_compression": 0.26996994867350865,
            "gaussian_noise": 0.5889124203738291,
            "speckle_noise": 0.5450100158501043,
            "impulse_noise": 0.6010108858901404,
            "shot_noise": 0.5519125643755777,
            "gaussian_blur": 0.4466645657200248,
            "brightness_up": 0.3598501969979232,
            "brightness_down": 0.3592866403894267,
            "contrast_up": 0.2871702451645464,
            "contrast_down": 0.3128243336438499,
            "gamma_corr_up": 0.30253196514691594,
            "gamma_corr_down": 0.3116016263827458,
        },
    },
    "pathmnist": {
        "clean": 0.08839299601334816,
        "corrupted": {
            "pixelate": 0.20934201922262957,
            "jpeg_compression": 0.24709267033930377,
            "defocus_blur": 0.4621259742146214,
            "motion_blur": 0.3689076534699618,
            "brightness_up": 0.41551581022730166,
            "brightness_down": 0.2811688318161528,
            "contrast_up": 0.2338925659881773,
            "contrast_down": 0.13718687818913905,
            "saturate": 0.3341143518079194,
        },
    },
    "pneumoniamnist": {
        "clean": 0.10085470085470083,
        "corrupted": {
            "pixelate": 0.22102564102564104,
            "jpeg_compression": 0.2798290598290598,
            "gaussian_noise": 0.4414529914529915,
            "speckle_noise": 0.3457264957264957,
            "impulse_noise": 0.4581196581196581,
            "shot_noise": 0.4106837606837607,
            "gaussian_blur": 0.2730769230769231,
            "brightness_up": 0.14649572649572645,
            "brightness_down": 0.2782051282051282,
            "contrast_up": 0.09529914529914527,
            "contrast_down": 0.23743589743589744,
            "gamma_corr_up": 0.09606837606837607,
            "gamma_corr_down": 0.16641025641025642,
        },
    },
    "retinamnist": {
        "clean": 0.5582064849927977,
        "corrupted": {
            "pixelate": 0.6017003263074344,
            "jpeg_compression": 0.6795223564688244,
            "gaussian_noise": 0.7040832524914012,
            "speckle_noise": 0.6135258841167651,
            "defocus_blur": 0.6882905018079196,
            "motion_blur": 0.7075760943057883,
            "brightness_down": 0.5844791133844842,
            "contrast_down": 0.6092882382338243,
        },
    },
    "tissuemnist": {
        "clean": 0.3917787199385978,
        "corrupted": {
            "pixelate": 0.49272908707597907,
            "jpeg_compression": 0.508070087070269,
            "impulse_noise": 0.7970869222746931,
            "gaussian_blur": 0.4805143361974326,
            "brightness_up": 0.4618274173802247,
            "brightness_down": 0.51981943234386,
            "contrast_up": 0.5026233641102424,
            "contrast_down": 0.5369342652194591,
        },
    },
}
REFERENCES = ("first", "alexnet")  # what BE and rBE are relative to: the first model, or AlexNet's published errors
FIGURE_SEVERITY = 3


@dataclass
class RobustnessSettings:
    """What the robustness evaluation corrupts and how.

    Attributes:
        names: The corruptions (`pipelines.corruptions.FAMILIES`), in order.
        dataset: The MedMNIST-C dataset whose parameters they take (None: the fallback's, see
            `pipelines.corruptions.parameter_dataset`).
        seed: Seeds every image's draws.
        batch_size: Images per chunk (a chunk is corrupted and predicted at once).
        map_images: How many of the sample's images (the first ones) the map stability is measured on.
        reference: 'first' (the first model) or 'alexnet' (MedMNIST-C's published AlexNet errors).
    """

    names: list[str]
    dataset: str | None
    seed: int = 0
    batch_size: int = 64
    map_images: int = 16
    reference: str = "first"


def check_reference(reference: str, dataset: str | None, names: list[str]) -> None:
    """Refuse AlexNet's errors as the reference for a dataset, or a corruption, MedMNIST-C did not publish them for
    (`ReportArguments` refuses an unknown reference).

    Raises:
        ConfigError: naming what to use instead.
    """
    if reference == "alexnet" and dataset not in ALEXNET:
        raise ConfigError(
            f"corruption_reference alexnet needs a MedMNIST dataset with MedMNIST-C's published AlexNet errors "
            f"({', '.join(ALEXNET)}); {dataset or 'this dataset'} has none, so use first."
        )
    missing = [name for name in names if reference == "alexnet" and name not in ALEXNET[dataset]["corrupted"]]
    if missing:
        raise ConfigError(
            f"MedMNIST-C publishes no AlexNet error for {', '.join(missing)} on {dataset}; leave them out or use first."
        )


# ------------------------------------------------------------------------------------------------ the measures


def mean_recall(truth: np.ndarray, predicted: np.ndarray) -> float:
    """The mean over the classes present in `truth` of the share of their images predicted as them."""
    truth, predicted = np.asarray(truth), np.asarray(predicted)
    return float(np.mean([(predicted[truth == cls] == cls).mean() for cls in np.unique(truth)]))


def balanced_error(logits: np.ndarray, labels: np.ndarray, multi_label: bool) -> float:
    """1 - balanced accuracy (MedMNIST-C's error): single-label, the mean recall over the classes present; multi-label,
    the mean over labels of each label's balanced accuracy at logit 0."""
    predicted = predicted_classes(np.asarray(logits), multi_label)
    labels = np.asarray(labels)
    if multi_label:
        return 1.0 - float(np.mean([mean_recall(labels[:, i], predicted[:, i]) for i in range(labels.shape[1])]))
    return 1.0 - mean_recall(labels, predicted)


def ratio_or_nan(numerator: float, denominator: float) -> float:
    """numerator / denominator, NaN where the denominator is 0 (the measure is undefined there)."""
    return float(numerator / denominator) if abs(denominator) > 1e-12 else float("nan")


def relative_errors(
    errors: list[float], clean: float, reference_errors: float, reference_clean: float, resolution: float = 0.0
) -> dict[str, float]:
    """BE and rBE of one model on one corruption.

    Args:
        errors: The model's balanced error at each severity.
        clean: Its balanced error on the same images uncorrupted.
        reference_errors: The reference's mean error over the severities.
        reference_clean: The reference's clean error.
        resolution: The smallest error the reference must gain for rBE to be given: below one image's worth of
            balanced error (`error_resolution`), or where the corruption lowers the reference's error, the ratio
            divides by sampling noise (a departure from MedMNIST-C, whose AlexNet every corruption hurts).
    """
    mean = float(np.mean(errors))
    added = reference_errors - reference_clean
    return {
        "be": ratio_or_nan(mean, reference_errors),
        "rbe": ratio_or_nan(mean - clean, added) if added >= resolution else float("nan"),
    }


def error_resolution(labels: np.ndarray, multi_label: bool) -> float:
    """What one image changes a balanced error by, at most: 1 / (classes x the smallest class's count), the classes
    being those present (for multi-label, each label's present and absent images, over the labels)."""
    labels = np.asarray(labels)
    if multi_label:
        present = labels.sum(axis=0)
        smallest = np.minimum(present, len(labels) - present)
        smallest = smallest[smallest > 0]
        return float(1 / (2 * labels.shape[1] * smallest.min())) if smallest.size else 0.0
    _, counts = np.unique(labels, return_counts=True)
    return float(1 / (len(counts) * counts.min()))


def nan_mean(values: list[float]) -> float:
    """The mean of the defined values, NaN when none is."""
    defined = [value for value in values if value == value]
    return float(np.mean(defined)) if defined else float("nan")


# ------------------------------------------------------------------------------------------------ on the processes


def on_device(images: torch.Tensor | list[torch.Tensor], device: torch.device) -> torch.Tensor | list[torch.Tensor]:
    """uint8 images moved to where the models run (corrupted there)."""
    return images.to(device) if isinstance(images, torch.Tensor) else [image.to(device) for image in images]


def unchanged(corrupted: torch.Tensor | list[torch.Tensor], images: torch.Tensor | list[torch.Tensor]) -> bool:
    """Whether a corruption left every image as it was (a blur under half a pixel at this size)."""
    if isinstance(images, torch.Tensor):
        return bool(torch.equal(corrupted, images))
    return all(torch.equal(after, before) for after, before in zip(corrupted, images))


def corrupted_predictions(
    run: ReportSplit, settings: RobustnessSettings, positions: np.ndarray
) -> tuple[dict[str, dict[int, dict[str, np.ndarray]]], dict[str, list[bool]]]:
    """Every model's logits on the images at `positions`, under every corruption at every severity; each process
    corrupts and predicts its share of the fixed chunks, gathered in order on every process.

    Returns:
        logits[corruption][severity][model] (N, L) in the shared label order, and per corruption whether each severity
        changed any image.
    """
    explainers = list(run.explainers.items())
    device = explainers[0][1].device
    done = []
    mine = chunks_with_progress(
        my_chunks(run.state, len(positions), settings.batch_size), "corruptions", run.state.is_main_process
    )
    for number, chunk in mine:
        chosen = positions[chunk]
        images = on_device(run.images(chosen), device)
        rows = run.kept[chosen]
        result: dict[tuple[str, int], Any] = {}
        for name in settings.names:
            for severity in SEVERITIES:
                corrupted = corrupt_images(images, name, severity, settings.dataset, settings.seed, rows)
                logits = {
                    model: run.space.restrict(index, explainer.predict_batch(corrupted).numpy())
                    for index, (model, explainer) in enumerate(explainers)
                }
                result[name, severity] = (logits, not unchanged(corrupted, images))
        done.append((number, result))
    chunks = in_order(run.state, done)
    logits = {
        name: {
            severity: {
                model: np.concatenate([chunk[name, severity][0][model] for chunk in chunks]) for model, _ in explainers
            }
            for severity in SEVERITIES
        }
        for name in settings.names
    }
    changed = {
        name: [any(chunk[name, severity][1] for chunk in chunks) for severity in SEVERITIES] for name in settings.names
    }
    return logits, changed


def model_classes(run: ReportSplit, index: int, logits: np.ndarray) -> torch.Tensor:
    """A model's own predicted (top) class of each image, as its output index (for its maps)."""
    return torch.tensor(run.space.columns[index])[torch.from_numpy(logits.argmax(axis=1))]


def stability_of(clean: torch.Tensor, corrupted: torch.Tensor) -> np.ndarray:
    """(N,) rank correlation of each image's map before and after a corruption (both at the same class); NaN where
    either map is blank (it ranks nothing)."""
    correlation = rank_correlation(clean, corrupted).numpy().astype(float)
    correlation[(blank_maps(clean) | blank_maps(corrupted)).numpy()] = np.nan
    return correlation


def map_stability(
    run: ReportSplit, settings: RobustnessSettings, positions: np.ndarray, logits: dict[str, np.ndarray]
) -> dict[str, dict[str, list[np.ndarray]]]:
    """Each model's map stability on the images at `positions`: per corruption and severity, the rank correlation of
    its default method's map (`explain.registry.default_method`) between the clean and the corrupted image, both at
    the class it predicts on the clean image. Chunks shared among the processes, gathered in order.

    Returns:
        stability[model][corruption] = one (N,) array per severity (NaN for pairs with a blank map).
    """
    explainers = list(run.explainers.items())
    device = explainers[0][1].device
    done = []
    mine = chunks_with_progress(
        my_chunks(run.state, len(positions), settings.batch_size), "corrupted maps", run.state.is_main_process
    )
    for number, chunk in mine:
        chosen = positions[chunk]
        images = on_device(run.images(chosen), device)
        rows = run.kept[chosen]
        result: dict[tuple[str, str, int], np.ndarray] = {}
        corrupted = {
            (name, severity): corrupt_images(images, name, severity, settings.dataset, settings.seed, rows)
            for name in settings.names
            for severity in SEVERITIES
        }
        for index, (model, explainer) in enumerate(explainers):
            method = default_method(explainer.model)
            classes = model_classes(run, index, logits[model][chosen])
            clean = explainer.explain(method, images, classes).maps
            for key, after in corrupted.items():
                result[(model, *key)] = stability_of(clean, explainer.explain(method, after, classes).maps)
        done.append((number, result))
    chunks = in_order(run.state, done)
    return {
        model: {
            name: [
                np.concatenate([chunk[model, name, severity] for chunk in chunks]) if chunks else np.empty(0)
                for severity in SEVERITIES
            ]
            for name in settings.names
        }
        for model, _ in explainers
    }


@dataclass
class CorruptedSplit:
    """What every process computed of the corrupted sample, gathered (the same on every process).

    Attributes:
        positions: The sample's positions in the report's split.
        map_positions: The first of them, whose maps were compared.
        logits: logits[corruption][severity][model] (N, L).
        changed: Per corruption, whether each severity changed any image.
        stability: stability[model][corruption], one (M,) array per severity.
    """

    positions: np.ndarray
    map_positions: np.ndarray
    logits: dict[str, dict[int, dict[str, np.ndarray]]]
    changed: dict[str, list[bool]]
    stability: dict[str, dict[str, list[np.ndarray]]]


def corrupt_split(
    run: ReportSplit, settings: RobustnessSettings, positions: np.ndarray, logits: dict[str, np.ndarray]
) -> CorruptedSplit:
    """The distributed part: predictions under every corruption and the maps' stability (on every process)."""
    predictions, changed = corrupted_predictions(run, settings, positions)
    map_positions = positions[: settings.map_images]
    stability = map_stability(run, settings, map_positions, logits)
    return CorruptedSplit(positions, map_positions, predictions, changed, stability)


# ------------------------------------------------------------------------------------------------ on the main process


def robustness_numbers(
    run: ReportSplit, settings: RobustnessSettings, corrupted: CorruptedSplit, logits: dict[str, np.ndarray]
) -> dict[str, dict[str, Any]]:
    """Each model's numbers (see the module's docstring), by model name.

    Args:
        logits: Each model's clean logits (N_split, L) on the whole split.
    """
    names = list(run.explainers)
    reference = names[0]
    labels = run.labels[corrupted.positions]
    multi_label = run.multi_label
    clean = {model: balanced_error(logits[model][corrupted.positions], labels, multi_label) for model in names}
    errors = {
        model: {
            name: [balanced_error(corrupted.logits[name][s][model], labels, multi_label) for s in SEVERITIES]
            for name in settings.names
        }
        for model in names
    }
    if settings.reference == "alexnet":
        published = ALEXNET[settings.dataset]
        reference_clean, reference_errors = published["clean"], published["corrupted"]
    else:
        reference_clean = clean[reference]
        reference_errors = {name: float(np.mean(values)) for name, values in errors[reference].items()}
    resolution = error_resolution(labels, multi_label)
    numbers = {}
    for model in names:
        relative = {
            name: relative_errors(
                errors[model][name], clean[model], reference_errors[name], reference_clean, resolution
            )
            for name in settings.names
        }
        agreement = {
            name: [
                agreement_rate(corrupted.logits[name][s][model], corrupted.logits[name][s][reference], multi_label)
                for s in SEVERITIES
            ]
            for name in settings.names
        }
        stability = {
            name: [nan_mean(list(values)) for values in per_severity]
            for name, per_severity in corrupted.stability[model].items()
        }
        pairs = {
            name: [int(np.isfinite(values).sum()) for values in per_severity]
            for name, per_severity in corrupted.stability[model].items()
        }
        mean_error = {name: float(np.mean(values)) for name, values in errors[model].items()}
        by_corruption = {name: nan_mean(values) for name, values in stability.items()}
        numbers[model] = {
            "clean_error": clean[model],
            "errors": errors[model],
            "mean_error": mean_error,
            "mean_corrupted_error": float(np.mean(list(mean_error.values()))),
            "be": {name: values["be"] for name, values in relative.items()},
            "rbe": {name: values["rbe"] for name, values in relative.items()},
            "be_mean": nan_mean([values["be"] for values in relative.values()]),
            "rbe_mean": nan_mean([values["rbe"] for values in relative.values()]),
            "rbe_defined": sum(values["rbe"] == values["rbe"] for values in relative.values()),
            "agreement": agreement,
            "agreement_by_corruption": {name: float(np.mean(values)) for name, values in agreement.items()},
            "agreement_mean": float(np.mean([np.mean(values) for values in agreement.values()])),
            "map_method": default_method(run.explainers[model].model),
            "map_stability": stability,
            "map_stability_by_corruption": by_corruption,
            "map_pairs": pairs,
            "map_stability_mean": nan_mean(list(by_corruption.values())),
        }
    return numbers


def agreement_rate(logits: np.ndarray, reference_logits: np.ndarray, multi_label: bool) -> float:
    """The share of predictions (images, or image-label pairs) the model makes as the reference does."""
    return float((predicted_classes(logits, multi_label) == predicted_classes(reference_logits, multi_label)).mean())


def corruption_record(
    run: ReportSplit, settings: RobustnessSettings, corrupted: CorruptedSplit, channels: int
) -> dict[str, Any]:
    """What the report says about the corruptions themselves: their parameters and whose, the sample, the reference,
    the images' size and the corruptions that changed nothing at it."""
    size = tuple(int(side) for side in run.images(corrupted.positions[:1])[0].shape[-2:])
    return {
        "names": settings.names,
        "dataset": settings.dataset,
        "parameters": {name: describe(name, settings.dataset, channels) for name in settings.names},
        "images": int(len(corrupted.positions)),
        "map_images": int(len(corrupted.map_positions)),
        "seed": settings.seed,
        "reference": settings.reference,
        "image_size": list(size),
        "reference_side": REFERENCE_SIDE,  # the size MedMNIST-C's lengths are in pixels of
        "rbe_resolution": error_resolution(run.labels[corrupted.positions], run.multi_label),
        "no_effect": [name for name, changed in corrupted.changed.items() if not any(changed)],
    }


def plot_errors(
    numbers: dict[str, dict[str, Any]], names: list[str], path: str | Path, reference_text: str | None = None
) -> None:
    """Balanced error against severity (0: the clean images), one panel per corruption, one line per model."""
    columns = min(4, len(names))
    rows = -(-len(names) // columns)
    figure = Figure(figsize=(3.4 * columns, 2.8 * rows + 0.8), layout="constrained")
    axes = np.atleast_1d(figure.subplots(rows, columns, sharex=True, sharey=True, squeeze=False)).ravel()
    for axis, name in zip(axes, names):
        for index, (model, values) in enumerate(numbers.items()):
            axis.plot(
                range(6), [values["clean_error"], *values["errors"][name]], "o-", ms=3, color=f"C{index}", label=model
            )
        axis.set_title(name, fontsize=9)
        axis.grid(alpha=0.3)
    for axis in axes[len(names) :]:
        axis.set_axis_off()
    for axis in axes[max(len(names) - columns, 0) : len(names)]:  # the lowest panel of each column
        axis.set_xlabel("severity (0: clean)")
        axis.xaxis.set_tick_params(labelbottom=True)
    for axis in axes[::columns]:
        axis.set_ylabel("balanced error")
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 4), fontsize=8)
    figure.suptitle(
        "Balanced error (1 - balanced accuracy) under each corruption"
        + (f"; {reference_text}" if reference_text else "")
    )
    atomic_save_figure(figure, path)


def corruption_figure(
    run: ReportSplit, settings: RobustnessSettings, position: int, logits: dict[str, np.ndarray]
) -> Figure:
    """One image under every corruption at severity 3 (the clean image first), each model's default map beside it at
    the class the model predicts on the clean image, and its prediction on the corrupted one."""
    explainers = list(run.explainers.items())
    device = explainers[0][1].device
    image = on_device(run.images(np.array([position])), device)
    row = run.kept[[position]]
    versions = {"clean": image}
    for name in settings.names:
        parameter = severity_parameter(name, FIGURE_SEVERITY, settings.dataset, _channels(image))
        versions[f"{name} ({_short(parameter)})"] = corrupt_images(
            image, name, FIGURE_SEVERITY, settings.dataset, settings.seed, row
        )
    batch = _join(list(versions.values()))
    columns, captions = {}, {}
    for index, (model, explainer) in enumerate(explainers):
        method = default_method(explainer.model)
        classes = model_classes(run, index, logits[model][[position]]).repeat(len(versions))
        explanation = explainer.explain(method, batch, classes)
        title = f"{model}: {method_title(method)}"
        columns[title] = explanation.maps
        predicted = run.space.restrict(index, explainer.predict_batch(batch).numpy())
        captions[title] = [
            f"{label_text(predicted_classes(values[None], run.multi_label)[0], run.space.names)}"
            for values in predicted
        ]
    size = max((tuple(maps.shape[-2:]) for maps in columns.values()), key=lambda shape: shape[0] * shape[1])
    shown = display_images(batch.cpu() if isinstance(batch, torch.Tensor) else [b.cpu() for b in batch], size)
    panels = {title: resize_maps(maps, size) for title, maps in columns.items()}
    true = label_text(run.labels[position], run.space.names)
    heading = (
        f"Image {int(row[0])} (true: {true}) under every corruption at severity {FIGURE_SEVERITY}; each model's map at the "
        "class it predicts on the clean image, its prediction on each version below"
    )
    return panel_grid(shown, panels, list(versions), captions, heading)


def _channels(images: torch.Tensor | list[torch.Tensor]) -> int:
    return int(images.shape[1] if isinstance(images, torch.Tensor) else images[0].shape[0])


def _join(batches: list[torch.Tensor | list[torch.Tensor]]) -> torch.Tensor | list[torch.Tensor]:
    """One batch of several one-image batches."""
    if isinstance(batches[0], torch.Tensor):
        return torch.cat(batches)
    return [image for batch in batches for image in batch]


def _short(parameter: Any) -> str:
    """A parameter as a figure's row label shows it."""
    if isinstance(parameter, tuple) and len(parameter) == 3 and parameter[0] == 1:  # zoom factors' range
        return f"zoom to {parameter[1]:g}"
    return ", ".join(f"{value:g}" for value in parameter) if isinstance(parameter, tuple) else f"{parameter:g}"


def robustness_report(
    run: ReportSplit,
    settings: RobustnessSettings,
    corrupted: CorruptedSplit,
    logits: dict[str, np.ndarray],
    out: Path,
) -> tuple[dict[str, dict[str, Any]], dict[str, Any], dict[str, str]]:
    """The main process's part: each model's numbers, the corruptions' record and the two figures.

    Returns:
        numbers by model, the record (report["corruptions"]), and the figures (title -> file name).
    """
    numbers = robustness_numbers(run, settings, corrupted, logits)
    channels = _channels(run.images(corrupted.positions[:1]))
    record = corruption_record(run, settings, corrupted, channels)
    reference = next(iter(run.explainers))
    reference_text = (
        "AlexNet's published errors (MedMNIST-C, 224 px) as the reference"
        if settings.reference == "alexnet"
        else f"{reference} is the reference"
    )
    record["reference_text"] = reference_text
    plot_errors(numbers, settings.names, out / "robustness_errors.png", reference_text)
    figures = {"Balanced error against severity, per corruption": "robustness_errors.png"}
    if len(corrupted.map_positions):
        figure = corruption_figure(run, settings, int(corrupted.map_positions[0]), logits)
        atomic_save_figure(figure, out / "robustness_maps.png")
        figures[f"One image under every corruption at severity {FIGURE_SEVERITY}, and each model's map"] = (
            "robustness_maps.png"
        )
    return numbers, record, figures
