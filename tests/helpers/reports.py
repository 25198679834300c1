"""The smallest report dictionaries the report's markdown takes."""

from __future__ import annotations


def report_with(faithfulness_numbers: dict) -> dict:
    """The smallest report render_markdown takes, with one model's faithfulness numbers."""
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
    model = {"classification": classification, "cost": cost, "faithfulness": faithfulness_numbers, "randomization": {}}
    return {
        **dict.fromkeys(["dataset", "split", "images", "explained_images", "device", "dtype", "command"], "x"),
        "reference": "model",
        "labels": [],
        "steps": 4,
        "top_percent": 10,
        "figures": {},
        "models": {"model": model},
    }
