"""The evaluation report of `scripts/report.py`: every model over one dataset split (classification, cost,
calibration) and each explanation method's measures, written as index.md and metrics.json (`run.run_report`)."""
