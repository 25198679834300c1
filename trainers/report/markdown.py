"""The evaluation report: every number in metrics.json, and index.md drawn from exactly those numbers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from explain.metrics.statistics import DECIDING_MEASURE, VERDICT_TEXT, verdict_of
from pipelines.io import atomic_write_json, atomic_write_text
from trainers.report.cost import latency_text


def _f4(value: float) -> str:
    return "n/a" if value is None or value != value else f"{value:.4f}"


def _count(value: int | None) -> str:
    """A count, or n/a for a report written before the count was kept."""
    return "n/a" if value is None else str(value)


BLANK_NOTE = (
    "A blank map (one value throughout, e.g. Grad-CAM's all-zero map when no region supports the class) ranks "
    "nothing, so pairs with a blank map are left out of the means; n/a means no pair was left."
)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown table's lines."""
    return [f"| {' | '.join(header)} |", "|---" * len(header) + "|", *(f"| {' | '.join(cells)} |" for cells in rows)]


def _precision_recall(model: dict[str, Any], labels: list[str]) -> list[str]:
    per_class = model["classification"]["per_class"]
    return [f"{_f4(per_class[label]['precision'])} / {_f4(per_class[label]['recall'])}" for label in labels]


def _cost_cells(cost: dict[str, Any]) -> list[str]:
    return [
        f"{cost['parameters']:,}",
        f"{cost['size_on_disk_mib']:.2f}",
        latency_text(cost["latency_ms_batch_1"], cost["latency_ms_batch_1_quartiles"], 3),
        latency_text(cost["latency_ms_batch_64"], cost["latency_ms_batch_64_quartiles"], 3),
        f"{cost['throughput_images_per_s']:,.0f}",
    ]


MEASURE_TEXT = {
    "deletion": "deletion, most relevant first (normalised area, lower is better)",
    "insertion": "insertion (normalised area, higher is better)",
    "lerf_minus_morf": "deletion LeRF - MoRF (normalised areas, higher is better)",
    "road_morf": "ROAD, most relevant first (mean probability, lower is better)",
    "road_lerf": "ROAD, least relevant first (mean probability, higher is better)",
    "road_lerf_minus_morf": "ROAD LeRF - MoRF (mean probabilities, higher is better; decides the verdict)",
}
MEASURE_NAME = "ROAD LeRF - MoRF"
DECIDING_TEXT = (
    f"One measure decides the verdict: {MEASURE_NAME}, because ROAD fills removed pixels from their neighbours and "
    "the difference of the two orders cancels what removal does regardless of order, so it depends on no baseline "
    "image, which a model may itself call a class (a grey or blurred image). The other five measures are supporting "
    "evidence: their numbers are shown, without a verdict of their own."
)
# Below this median dynamic range a curve moves too little for its area to say anything about the map.
SMALL_RANGE = 0.1


def _percent(value: float | None) -> str:
    return "n/a" if value is None or value != value else f"{value:.0%}"


def _p_text(value: float | None) -> str:
    return "n/a" if value is None or value != value else f"{value:.2g}"


def _faithfulness_rows(models: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(model, method, numbers) for each method's faithfulness numbers that hold the paired test (reports
    written before it do not)."""
    return [
        (name, method, numbers)
        for name, model in models.items()
        for method, numbers in model["faithfulness"].items()
        if "against_random" in numbers
    ]


def _against_random(models: dict[str, Any]) -> list[str]:
    """The baselines, the dynamic-range table and its warnings, the paired test against random maps and its
    verdicts in words."""
    rows = _faithfulness_rows(models)
    if not rows:
        return []
    first = rows[0][2]
    baselines = first["baselines"]
    lines = [
        "",
        f"Baselines: deletion: {baselines['deletion']}; insertion: {baselines['insertion']}; ROAD: "
        f"{baselines['road']}. Dynamic range: the intact image's probability minus the baseline's, per image; "
        "each curve is normalised by it (1 at the intact image, 0 at the baseline).",
        "",
    ]
    lines += _table(
        ["model", "method", "median dynamic range, deletion", "median dynamic range, insertion"],
        [
            [name, method, *(_f4(numbers["median_dynamic_range"][curve]) for curve in ("deletion", "insertion"))]
            for name, method, numbers in rows
        ],
    )
    for name, method, numbers in rows:
        small = [
            f"{curve} {spread:.3f}" for curve, spread in numbers["median_dynamic_range"].items() if spread < SMALL_RANGE
        ]
        if small:
            lines += [
                "",
                f"**Warning** ({name}, {method}): median dynamic range below {SMALL_RANGE} ({', '.join(small)}): "
                "these curves measure the baseline, not the maps.",
            ]
    if all("random_draws" in numbers for _, _, numbers in rows):
        lines += [
            "",
            f"Normalised deletion and insertion areas on the paired images ({first['random_steps']} steps): the maps' "
            f"against each of the {first['random_maps']} random draws (mean, and the range and sd over the draws: how "
            "far two random draws differ).",
            "",
        ]
        lines += _table(
            ["model", "method", "curve", "map", "random draws: mean", "random draws: min–max", "random draws: sd"],
            [
                [
                    name,
                    method,
                    curve,
                    _f4(draw["map"]),
                    _f4(draw["mean"]),
                    f"{_f4(draw['min'])}–{_f4(draw['max'])}",
                    _f4(draw["sd"]),
                ]
                for name, method, numbers in rows
                for curve, draw in numbers["random_draws"].items()
            ],
        )
    fractions = ", ".join(f"{fraction:g}" for fraction in first["road_fractions"])
    lines += [
        "",
        f"Against random maps, on {first['paired_images']} of the explained images: each image's map against the "
        f"mean of {first['random_maps']} uniform random maps of the same image, curves on {first['random_steps']} "
        f"steps, ROAD at removal fractions {fractions}. Advantage: "
        "the map's value minus the random maps' mean, signed so that positive means the map is better; wins: the "
        "share of images where it is; map and random maps: means over images (for deletion and insertion, the areas "
        "under the figure's curves); p: two-sided Wilcoxon signed-rank test of the advantages. " + DECIDING_TEXT,
        "",
    ]
    lines += _table(
        ["model", "method", "measure", "map", "random maps", "median advantage", "wins", "p", "verdict"],
        [
            [
                name,
                method,
                MEASURE_TEXT.get(measure, measure),
                *(_f4(result[key]) for key in ("map", "random", "advantage_median", "wins", "p_value")),
                _verdict_cell(numbers, measure),
            ]
            for name, method, numbers in rows
            for measure, result in numbers["against_random"].items()
        ],
    )
    lines += [""]
    for name, method, numbers in rows:
        deciding = numbers["against_random"][_deciding_measure(numbers)]
        lines.append(
            f"- **{name}**: {method} {_verdict(numbers)} ({MEASURE_NAME}: median advantage "
            f"{_f4(deciding['advantage_median'])}, the map wins on {_percent(deciding['wins'])} of "
            f"{deciding['images']} images, p = {_p_text(deciding['p_value'])})."
        )
    return lines


def _deciding_measure(numbers: dict[str, Any]) -> str:
    """The measure whose test decided the verdict: written down since issue 26, ROAD LeRF - MoRF for older reports
    too (it was their headline measure)."""
    return numbers.get("deciding_measure", DECIDING_MEASURE)


def _verdict(numbers: dict[str, Any]) -> str:
    """The method's verdict in words, from its deciding measure's p and median advantage: a report written before
    issue 26 keeps a sentence counting the measures, which is not today's verdict, so it is given again from the
    numbers it kept."""
    deciding = numbers["against_random"][_deciding_measure(numbers)]
    return VERDICT_TEXT[verdict_of(deciding["p_value"], deciding["advantage_median"])]


def _verdict_cell(numbers: dict[str, Any], measure: str) -> str:
    """The table's verdict column: the verdict on the deciding measure's row, "(supporting)" on the others'."""
    return _verdict(numbers) if measure == _deciding_measure(numbers) else "(supporting)"


def _shrunk_copies(models: dict[str, Any]) -> list[str]:
    """What was done to each model made by scripts/shrink.py (its shrink.json), and how its maps are computed."""
    rows = []
    for name, model in models.items():
        record = model.get("shrink")
        if not record:
            continue
        details = record["details"]
        if record["method"] == "int8":
            layers = details.get("layers", "nn.Linear and nn.Conv2d")  # copies made before dynamic int8 lack it
            what = (
                f"{details['scheme']}; {len(details['quantized_modules'])} {layers} layers, "
                f"{_percent(details['quantized_weight_share'])} of the parameters"
            )
            if "speed" in details:  # this report times every model eagerly
                what += f"; {details['speed']}"
            maps = f"Grad-CAM runs: {details['gradients']}"
        else:
            recovery = record.get("recovery")
            what = (
                f"ratio {details['ratio']}: {details['parameters_removed_fraction']:.1%} fewer parameters; "
                + ", ".join(f"{key} {value}" for key, value in details["config_changes"].items())
                + (f"; recovery fine-tune {recovery['epochs']} epochs" if recovery else "; no recovery fine-tune")
            )
            maps = "a plain (smaller) model: every method runs as on the original"
        rows.append([name, f"{record['method']} of `{record['source']}`", what, maps])
    if not rows:
        return []
    return ["", "### Shrunk copies", "", *_table(["model", "made as", "what was done", "explanations"], rows)]


AUDIT_TEXT = (
    "Each model against the reference, image by image. Fidelity (Stanton et al., 2021): how often the two predict "
    "alike and KL(reference || model) of each image's predicted probabilities, whatever the truth. Flips (Yan et "
    "al., 2021): a negative flip is an image the reference gets right and the model wrong, a positive flip the "
    "reverse; positive minus negative is the model's accuracy change, exactly. Flips as count (rate; 95% Wilson "
    "interval)."
)


def _interval(numbers: dict[str, Any]) -> str:
    """'12 (0.0192; 0.0110 to 0.0330)': a count, its rate and the rate's 95% interval."""
    low, high = numbers["interval"]
    return f"{numbers['count']} ({_f4(numbers['rate'])}; {_f4(low)} to {_f4(high)})"


def _spread(values: list[float]) -> str:
    """'0.0321 ± 0.0040 (0.0288, 0.0364, 0.0311)': mean ± sample standard deviation, then each value."""
    mean = sum(values) / len(values)
    sd = (sum((value - mean) ** 2 for value in values) / (len(values) - 1)) ** 0.5
    return f"{mean:.4f} ± {sd:.4f} ({', '.join(f'{value:.4f}' for value in values)})"


def _signed(value: float | None) -> str:
    return "n/a" if value is None or value != value else f"{value:+.4f}"


def _audit(models: dict[str, Any], reference: str, report_seconds: dict[str, Any] | None) -> list[str]:
    """The audit of every model against the reference: fidelity and flips, per-class recall changes and the test
    over seeds, the forgotten images found, and the maps on the changed against the kept images."""
    audits = {name: model["audit"] for name, model in models.items() if model.get("audit")}
    if not audits:
        return []
    lines = ["", f"## What the shrink forgot (audit against `{reference}`)", "", AUDIT_TEXT, ""]
    lines += _table(
        ["model", "same prediction", "KL mean / median", "negative flips", "positive flips", "accuracy change"],
        [
            [
                name,
                f"{audit['fidelity']['agreement']:.4f}",
                f"{audit['fidelity']['kl_mean']:.4f} / {audit['fidelity']['kl_median']:.4f}",
                _interval(audit["flips"]["negative"]),
                _interval(audit["flips"]["positive"]),
                _signed(audit["flips"]["net_change"]),
            ]
            for name, audit in audits.items()
        ],
    )
    lines += [
        "",
        "Per class: the recall of each model, and the change with a 95% paired bootstrap interval. Over seed groups, "
        "Hooker et al.'s test (2019): Welch's t-test on each class's recall relative to the model's own accuracy, "
        "Holm-corrected over the classes; a class is hurt at a corrected p below 0.01 with a lower relative recall.",
        "",
    ]
    rows = []
    for name, audit in audits.items():
        tests = {row["class"]: row for row in audit["class_test"] or []}
        for row in audit["classes"]:
            test = tests.get(row["class"])
            low, high = row["interval"]
            rows.append(
                [
                    name,
                    row["class"],
                    f"{_f4(row['reference_recall'])} -> {_f4(row['model_recall'])}",
                    f"{_signed(row['change'])} ({_signed(low)} to {_signed(high)})",
                    "n/a" if test is None else _p_text(test["p_holm"]),
                    "n/a" if test is None else ("**hurt**" if test["hurt"] else "no"),
                ]
            )
    lines += _table(["model", "class", "recall", "change (95% interval)", "Welch p (Holm)", "hurt"], rows)
    notes: dict[str, list[str]] = {}  # one sentence for the models whose test was not run for the same reason
    for name, audit in audits.items():
        if audit["class_test"] is None:
            notes.setdefault(audit["class_test_note"], []).append(name)
    lines += [f"\n{', '.join(names)}: {note}" for note, names in notes.items()]
    lines += ["", "Forgotten images and the test over seeds:", ""]
    for name, audit in audits.items():
        exemplars = audit["exemplars"]
        line = f"- {name}: {len(exemplars['positions'])} forgotten images ({exemplars['rule']})"
        if exemplars.get("outcomes") is not None:
            outcomes = exemplars["outcomes"]
            line = (
                f"- {name}: {len(outcomes)} images changed over seeds ({exemplars['rule']}): "
                f"{outcomes.count('forgotten')} forgotten (the reference's mode right), {outcomes.count('learnt')} "
                f"learnt (the model's mode right), {outcomes.count('both wrong')} both wrong"
            )
        if audit["class_test"] is not None:
            hurt = [row["class"] for row in audit["class_test"] if row["hurt"]]
            seeds = audit["seeds"]
            line += f"; {seeds['model']} seeds against the reference's {seeds['reference']}, classes hurt: " + (
                ", ".join(hurt) if hurt else "none"
            )
        pairs = audit.get("seed_pairs")
        if pairs:
            line += (
                f"; seed by seed against the reference's seed in the same place, negative flip rate "
                f"{_spread(pairs['negative_rate'])}, positive {_spread(pairs['positive_rate'])}, same prediction "
                f"{_spread(pairs['agreement'])}"
            )
        lines.append(line + ".")
    lines += _audit_maps(audits)
    seconds = report_seconds.get("audit") if report_seconds else None
    if seconds is not None:
        lines += ["", f"The audit took {seconds} s of the report's {report_seconds['total']} s."]
    return lines


def _audit_maps(audits: dict[str, Any]) -> list[str]:
    """Did it also look elsewhere? The maps' agreement on the images whose prediction changed against those
    predicted alike."""
    rows = []
    for name, audit in audits.items():
        numbers = audit.get("map_agreement")
        if not numbers:
            continue
        iou_key = next(key for key in numbers["changed"] if key.endswith("_iou_mean"))
        iou_p_key = iou_key.removesuffix("_mean") + "_p"
        changed, kept = numbers["changed"], numbers["kept"]
        rows.append(
            [
                name,
                numbers["method"],
                f"{changed['images']} of {numbers.get('changed_images', changed['images'])} / {kept['images']}",
                f"{_f4(changed['rank_correlation_mean'])} / {_f4(kept['rank_correlation_mean'])}",
                _p_text(numbers["rank_correlation_p"]),
                f"{_f4(changed[iou_key])} / {_f4(kept[iou_key])}",
                _p_text(numbers[iou_p_key]),
            ]
        )
    if not rows:
        return []
    return [
        "",
        "Did it also look elsewhere? Agreement of the two models' maps at the reference's class on the images whose "
        "prediction changed (negative and positive flips, and one wrong class for another; a seeded sample when there "
        "are more than `--audit_map_images`) against a seeded sample of the images predicted alike (two-sided "
        "Mann-Whitney U test). A seed group is compared by its first seed. " + BLANK_NOTE,
        "",
        *_table(
            [
                "model",
                "method",
                "images changed (of all changed) / kept",
                "rank correlation changed / kept",
                "p",
                "top IoU changed / kept",
                "p",
            ],
            rows,
        ),
    ]


ROBUSTNESS_TEXT = (
    "Balanced error E = 1 - balanced accuracy (the mean recall over the classes; per label for multi-label data). As "
    "MedMNIST-C defines them (Di Salvo et al., 2024): BE = the model's E summed over severities 1-5 / the reference's; "
    "rBE = the error a corruption adds to the model's clean E, summed over severities / what it adds to the "
    "reference's; the means are over the corruptions where each is defined. "
    "Below 1: more robust than the reference. Agreement: how often the model predicts what the reference predicts on "
    "the same corrupted image. Map stability: rank correlation between the model's map of the clean image and of the "
    "corrupted one, at the class it predicts on the clean image (pairs with a blank map left out)."
)


def _robustness(report: dict[str, Any]) -> list[str]:
    """Robustness under corruption: the corruptions, each model's BE and rBE against the reference, agreement and map
    stability, overall and per corruption."""
    record = report.get("corruptions")
    numbers = {name: model["robustness"] for name, model in report["models"].items() if model.get("robustness")}
    if not record or not numbers:
        return []
    height, width = record["image_size"]
    source = record["dataset"] or "no MedMNIST-C dataset: parameters of the dataset of its kind"
    lines = [
        "",
        f"## Robustness under corruption ({record['reference_text']})",
        "",
        f"Every model on the same {record['images']} images of the split, each corrupted by {len(record['names'])} of "
        f"MedMNIST-C's corruptions at severities 1-5 ({source}; parameters below) at its native {height}x{width} px, "
        "before each model's own preprocessing; every image's draws seeded by its row "
        f"(seed {record['seed']}: one draw of the noise, not a spread over draws). " + ROBUSTNESS_TEXT,
        "",
        "rBE departs from MedMNIST-C in one way: it is n/a where the corruption adds less than one image's worth of "
        f"balanced error ({record['rbe_resolution']:.4f} here) to the reference, whose added error it divides by; "
        "MedMNIST-C's AlexNet is hurt by every corruption, a teacher may not be, and the ratio would then be sampling "
        "noise of any size and sign.",
        "",
    ]
    lines += _table(
        [
            "model",
            "clean E",
            "mean corrupted E",
            "BE",
            "rBE (corruptions)",
            "agreement with the reference",
            "map stability",
        ],
        [
            [
                name,
                _f4(values["clean_error"]),
                _f4(values["mean_corrupted_error"]),
                _f4(values["be_mean"]),
                f"{_f4(values['rbe_mean'])} ({values['rbe_defined']})",
                _f4(values["agreement_mean"]),
                f"{_f4(values['map_stability_mean'])} ({values['map_method']})",
            ]
            for name, values in numbers.items()
        ],
    )
    lines += ["", "Per corruption (E at severities 1 to 5; agreement and map stability as means over them):", ""]
    lines += _table(
        ["corruption", "model", "E at each severity", "BE", "rBE", "agreement", "map stability"],
        [
            [
                corruption,
                name,
                " / ".join(f"{error:.3f}" for error in values["errors"][corruption]),
                _f4(values["be"][corruption]),
                _f4(values["rbe"][corruption]),
                _f4(values["agreement_by_corruption"][corruption]),
                _f4(values["map_stability_by_corruption"][corruption]),
            ]
            for corruption in record["names"]
            for name, values in numbers.items()
        ],
    )
    lines += [
        "",
        f"Map stability on the first {record['map_images']} of those images. The corruptions' parameters "
        "(MedMNIST-C's, `pipelines.corruptions`: lengths in pixels scaled by the image's shorter side / 224):",
        "",
    ]
    lines += _table(
        ["corruption", "parameter", "at each severity", "from"],
        [
            [
                name,
                entry["meaning"],
                " / ".join(_parameter_text(value) for value in entry["parameters"]),
                entry["source"],
            ]
            for name, entry in record["parameters"].items()
        ],
    )
    if record["no_effect"]:
        lines += [
            "",
            f"At {height}x{width} px, {', '.join(record['no_effect'])} changed no image at any severity (a blur under "
            "half a pixel once scaled from 224 px): its errors equal the clean ones and its rBE is n/a.",
        ]
    seconds = report.get("seconds") or {}
    if seconds.get("robustness") is not None:
        lines += ["", f"The robustness evaluation took {seconds['robustness']} s of the report's {seconds['total']} s."]
    return lines


def _parameter_text(value: Any) -> str:
    """A severity's parameter in a table cell: a pair or a range as "5; 5" (the cell's " / " separates severities)."""
    return "; ".join(str(part) for part in value) if isinstance(value, list | tuple) else str(value)


def _maps_read(models: dict[str, Any]) -> list[str]:
    """A sentence on the maps taken from a maps dataset (`--maps`) and those computed, when any was read."""
    counts = [
        f"{name} {method}: {numbers['maps_read']:,} read, {numbers['maps_computed']:,} computed"
        for name, model in models.items()
        for method, numbers in model.get("maps", {}).items()
    ]
    if not any(numbers["maps_read"] for model in models.values() for numbers in model.get("maps", {}).values()):
        return []
    return ["", f"Maps read from the maps dataset (`--maps`) and computed here: {'; '.join(counts)}."]


def render_markdown(report: dict[str, Any], figures: bool = True) -> str:
    """index.md's text from the report dictionary (also what metrics.json holds), so the two cannot disagree."""
    models = report["models"]
    lines = [
        "# Evaluation report",
        "",
        f"Dataset {report['dataset']}, split `{report['split']}`: {report['images']} images "
        f"({report['explained_images']} explained). Reference model: `{report['reference']}`. "
        f"Measured on {report['device']} ({report['dtype']}).",
        "",
        f"Made by: `{report['command']}`",
        "",
        "## Classification",
        "",
    ]
    lines += _table(
        ["model", "ACC", "AUC", "macro F1", "ECE"],
        [
            [name, *(_f4(model["classification"][key]) for key in ("accuracy", "auc", "f1", "ece"))]
            for name, model in models.items()
        ],
    )
    lines += ["", "Per class (precision / recall):", ""]
    lines += _table(
        ["model", *report["labels"]],
        [[name, *_precision_recall(model, report["labels"])] for name, model in models.items()],
    )
    lines += ["", "## Cost", ""]
    lines += _table(
        [
            "model",
            "parameters",
            "size on disk (MiB)",
            "latency/image, batch 1 (ms): median (quartiles)",
            "latency/image, batch 64 (ms): median (quartiles)",
            "throughput (img/s)",
        ],
        [[name, *_cost_cells(model["cost"])] for name, model in models.items()],
    )
    lines += _shrunk_copies(models)
    lines += [
        "",
        "## Explanations",
        "",
        f"Faithfulness: deletion and insertion curves with {report['steps']} steps (RISE); the random row of each "
        "model uses uniform random maps on the same images. Lower deletion and higher insertion areas are better. "
        "These raw areas depend on the baselines; whether the maps beat random maps is decided below.",
        "",
    ]
    curves = ("deletion_auc", "random_deletion_auc", "insertion_auc", "random_insertion_auc")
    lines += _table(
        ["model", "method", "deletion AUC", "random deletion AUC", "insertion AUC", "random insertion AUC"],
        [
            [name, method, *(_f4(numbers[key]) for key in curves)]
            for name, model in models.items()
            for method, numbers in model["faithfulness"].items()
        ],
    )
    lines += _against_random(models)
    lines += [
        "",
        "Sanity check (model-parameter randomisation): mean rank correlation between each model's maps and the maps "
        "of the same architecture with re-initialised weights. Low is good: the maps depend on what was learnt. "
        + BLANK_NOTE,
        "",
    ]
    lines += _table(
        [
            "model",
            "method",
            "rank correlation with re-initialised model",
            "pairs compared",
            "blank maps (trained / re-initialised)",
        ],
        [
            [
                name,
                method,
                _f4(numbers["rank_correlation_mean"]),
                _count(numbers.get("pairs")),
                f"{_count(numbers.get('blank_maps'))} / {_count(numbers.get('blank_reinitialised_maps'))}",
            ]
            for name, model in models.items()
            for method, numbers in model["randomization"].items()
        ],
    )
    iou_key = f"top{report['top_percent']}_iou_mean"
    lines += [
        "",
        f"Agreement with the reference (`{report['reference']}`): per image, the rank correlation and the overlap "
        f"(IoU) of the top {report['top_percent']}% pixels between the reference's map and the model's map for the "
        "same class, and how often the two predict the same (over every image). " + BLANK_NOTE,
        "",
    ]
    lines += _table(
        [
            "model",
            "method",
            "mean rank correlation",
            f"mean top-{report['top_percent']}% IoU",
            "same prediction",
            "pairs compared",
            "blank maps (reference / model)",
        ],
        [
            [
                name,
                method,
                *(_f4(numbers[key]) for key in ("rank_correlation_mean", iou_key, "prediction_agreement")),
                _count(numbers.get("pairs")),
                f"{_count(numbers.get('blank_reference_maps'))} / {_count(numbers.get('blank_maps'))}",
            ]
            for name, model in models.items()
            for method, numbers in model.get("agreement", {}).items()
        ],
    )
    lines += _maps_read(models)
    lines += _audit(models, report["reference"], report.get("seconds"))
    lines += _robustness(report)
    if figures:
        lines += ["", "## Figures", ""]
        for title, file_name in report["figures"].items():
            lines += [f"### {title}", "", f"![{title}]({file_name})", ""]
    return "\n".join(lines).rstrip() + "\n"


def write_report(out: str | Path, report: dict[str, Any]) -> Path:
    """Write metrics.json and index.md into `out`; returns the path of index.md."""
    out = Path(out)
    atomic_write_json(out / "metrics.json", report)
    atomic_write_text(out / "index.md", render_markdown(report))
    return out / "index.md"
