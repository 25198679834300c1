"""Fine-tune an image classifier: `accelerate launch scripts/finetune.py configs/<name>.yaml [--key value ...]`.

Also runs as plain `python scripts/finetune.py ...`. Writes the model (safetensors, config, preprocessor config),
metrics.json, training_curves.png and confusion_matrix.png into `output_dir`, and prints a summary table.
"""

from __future__ import annotations

from transformers import TrainingArguments

from pipelines import DataArguments, ImageCollator, load_image_dataset, run_cli
from pipelines.errors import ConfigError
from pipelines.preprocess import training_preprocess
from trainers.arguments import ModelArguments, apply_precision, parse_config
from trainers.image_classification import ImageClassificationTrainer, resolve_resume
from trainers.metrics import ComputeMetrics
from trainers.modeling import classifier_from_args
from trainers.reporting import evaluate_and_report, summary_table


def main(argv: list[str] | None = None) -> dict:
    data_args, model_args, training_args = parse_config((DataArguments, ModelArguments, TrainingArguments), argv)
    if not training_args.do_train and model_args.model_config is not None:
        raise ConfigError("do_train is false, so the model built from model_config would be evaluated untrained.")
    apply_precision(training_args, model_args.precision)

    data = load_image_dataset(data_args)
    model, image_processor = classifier_from_args(model_args, data)
    trainer = ImageClassificationTrainer(
        model=model,
        args=training_args,
        train_dataset=data.dataset["train"],
        eval_dataset=data.dataset["validation"],
        processing_class=image_processor,
        data_collator=ImageCollator(data.num_labels, data.multi_label, data_args.image_mode),
        compute_metrics=ComputeMetrics(data.multi_label),
        preprocess=training_preprocess(image_processor, model.config.num_channels, data_args),
    )
    if training_args.do_train:
        checkpoint = resolve_resume(training_args.resume_from_checkpoint, training_args.output_dir)
        trainer.train(resume_from_checkpoint=checkpoint)
        trainer.save_model()

    report = evaluate_and_report(trainer, data, training_args.output_dir)
    if trainer.is_world_process_zero():
        print(
            f"\n{model.config.model_type} on {data_args.dataset_name or data_args.data_dir} -> {training_args.output_dir}"
        )
        print(summary_table(report))
    return report


if __name__ == "__main__":
    run_cli(main)
