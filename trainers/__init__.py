"""Trainer subclasses (fine-tuning, distillation) and what a run writes, then the commands built on trained models:
the evaluation report (`report/`), shrunk copies (`shrink/`) and the speed benchmarks (`benchmark/`)."""
