"""The smallest report dictionaries the report's markdown takes."""

from __future__ import annotations


def model_entry(**numbers: dict) -> dict:
    """One model's entry in a report: fixed classification and cost numbers, and the explanation numbers given
    (faithfulness, randomization, agreement; each method -> its numbers), empty where not given."""
    cost = {
        "parameters": 10,
        "size_on_disk_mib": 0.5,
        "latency_ms_batch_1": 1.0,
        "latency_ms_batch_1_quartiles": [0.9, 1.1],
        "latency_ms_batch_64": 0.5,
        "latency_ms_batch_64_quartiles": [0.4, 0.6],
        "throughput_images_per_s": 2000.0,
    }
    classification = {"accuracy": 0.5, "auc": 0.5, "f1": 0.5, "ece": 0.1, "per_class": {}}
    return {"classification": classification, "cost": cost, "faithfulness": {}, "randomization": {}, **numbers}


def report_of(models: dict[str, dict]) -> dict:
    """The smallest report render_markdown takes, over `models` (name -> `model_entry`; the first is the reference)."""
    return {
        **dict.fromkeys(["dataset", "split", "images", "explained_images", "device", "dtype", "command"], "x"),
        "reference": next(iter(models)),
        "labels": [],
        "steps": 4,
        "top_percent": 10,
        "figures": {},
        "models": models,
    }


def report_with(faithfulness_numbers: dict) -> dict:
    """A report of one model with the given faithfulness numbers (method -> numbers)."""
    return report_of({"model": model_entry(faithfulness=faithfulness_numbers)})
