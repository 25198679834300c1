"""LR range test on a recipe: `python scripts/lr_find.py configs/<name>.yaml [--start 1e-7 --end 10 --steps 100]
[--write_config PATH] [--key value ...]` (or under `accelerate launch`).

Sweeps the learning rate exponentially on the recipe's own model, data and device preprocessing (see
`trainers.lr_find`), restores the model afterwards, writes the loss-versus-learning-rate plot (<output_dir>/lr_find.png
unless --plot) with the sweep as JSON beside it, prints the suggested rate and, with --write_config, writes a copy
of the recipe that uses it.
"""

from __future__ import annotations

import pipelines.quiet  # noqa: F401  first: drops upstream deprecation noise before transformers loads

# isort: split
import sys

from transformers import set_seed

from pipelines import DataArguments, load_image_dataset, run_cli
from pipelines.config import parse_config
from trainers.arguments import ModelArguments, OneCycleTrainingArguments, apply_precision, hide_hub_token
from trainers.image_classification import ImageClassificationTrainer, build_trainer
from trainers.lr_find import LRFindArguments, LRSweep, lr_range_test, rate_key, save_sweep
from trainers.modeling import classifier_from_args


def main(argv: list[str] | None = None) -> LRSweep:
    argv = sys.argv[1:] if argv is None else list(argv)
    parsed = parse_config((DataArguments, ModelArguments, LRFindArguments, OneCycleTrainingArguments), argv)
    data_args, model_args, lr_args, training_args = parsed
    apply_precision(training_args, model_args.precision)
    hide_hub_token(training_args)

    with training_args.main_process_first(desc="load dataset"):
        data = load_image_dataset(data_args)
    set_seed(training_args.seed)  # the same starting weights as scripts/finetune.py gives this recipe
    model, image_processor = classifier_from_args(model_args, data)
    trainer = build_trainer(ImageClassificationTrainer, model, image_processor, training_args, data, data_args)
    sweep = lr_range_test(trainer, lr_args)
    if trainer.is_world_process_zero():
        written = save_sweep(sweep, lr_args, training_args, argv[0])
        ending = "stopped where the loss diverged" if sweep.diverged else "the whole range"
        print(f"\nLR range test: {len(sweep.losses)} steps from {lr_args.start:g} ({ending})")
        print(f"suggested {rate_key(training_args)}: {sweep.suggestion:.2e} ({sweep.rule})")
        for what, path in written.items():
            print(f"{what}: {path}")
    return sweep


if __name__ == "__main__":
    run_cli(main)
