"""Fine-tune an image classifier: `accelerate launch scripts/finetune.py configs/<name>.yaml [--key value ...]`.

Also runs as plain `python scripts/finetune.py ...`. Writes the model (safetensors, config, preprocessor config),
metrics.json, training_curves.png, confusion_matrix.png and a model card (README.md) into `output_dir`, and prints a
summary table. With `push_to_hub: true` that folder is published once, after the evaluation, to `hub_model_id`
(private unless `hub_private_repo: false`).
"""

from __future__ import annotations

import pipelines.quiet  # noqa: F401  first: drops upstream deprecation noise before transformers loads

# isort: split
import sys

from transformers import set_seed

from pipelines import DataArguments, load_image_dataset, run_cli
from pipelines.config import parse_config
from pipelines.errors import ConfigError
from pipelines.locks import run_folder_lock
from trainers.arguments import (
    ModelArguments,
    OneCycleTrainingArguments,
    apply_precision,
    hide_hub_token,
    launch_command,
)
from trainers.checkpoints import refuse_to_replace_a_model
from trainers.hub import build_finetune_card, planned_push, push_folder, write_model_card
from trainers.image_classification import ImageClassificationTrainer, build_trainer, train_and_save
from trainers.modeling import classifier_from_args
from trainers.run_outputs import dataset_description, evaluate_and_report, summary_table


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else list(argv)
    data_args, model_args, training_args = parse_config(
        (DataArguments, ModelArguments, OneCycleTrainingArguments), argv
    )
    if not training_args.do_train and model_args.model_config is not None:
        raise ConfigError("do_train is false, so the model built from model_config would be evaluated untrained.")
    apply_precision(training_args, model_args.precision)
    hide_hub_token(training_args)
    repo_id = planned_push(training_args)  # refused here, before any work, when it cannot happen
    refuse_to_replace_a_model(training_args.output_dir, training_args)

    with run_folder_lock(training_args.output_dir):  # one writer per run folder
        with training_args.main_process_first(desc="load dataset"):
            data = load_image_dataset(data_args)
        set_seed(training_args.seed)  # a model built from a config starts from the same weights in every run
        model, image_processor = classifier_from_args(model_args, data)
        trainer = build_trainer(ImageClassificationTrainer, model, image_processor, training_args, data, data_args)
        if training_args.do_train:
            train_and_save(trainer)

        command = launch_command("scripts/finetune.py", argv)
        report = evaluate_and_report(trainer, data, training_args.output_dir, command)
        if not trainer.is_world_process_zero():
            return report
        dataset = dataset_description(data_args)
        if training_args.do_train:  # an evaluation only leaves the model's own card alone
            card = build_finetune_card(
                report,
                model_name=repo_id or training_args.hub_model_id or training_args.output_dir,
                dataset=dataset,
                base_model=model_args.model_name_or_path,
                command=command,
                model_folder=training_args.output_dir,
                architecture=model.config.model_type,
            )
            write_model_card(training_args.output_dir, card)
        print(f"\n{model.config.model_type} on {dataset[1]} -> {training_args.output_dir}")
        print(summary_table(report))
        if repo_id:
            private = training_args.hub_private_repo is not False
            url = push_folder(training_args.output_dir, repo_id, private, commit_message="Upload fine-tuned model")
            print(f"Published {training_args.output_dir} to {url}")
        return report


if __name__ == "__main__":
    run_cli(main)
