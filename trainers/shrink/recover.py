"""A short recovery fine-tune of a pruned model on its dataset, through the project's own trainer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, set_seed

from pipelines.arguments import DataArguments
from pipelines.errors import ConfigError
from pipelines.labels import model_label_names
from pipelines.loading import ImageData
from trainers.arguments import OneCycleTrainingArguments
from trainers.image_classification import ImageClassificationTrainer, build_trainer
from trainers.shrink.arguments import ShrinkArguments


def recover(
    model: PreTrainedModel, processor: Any, data: ImageData, data_args: DataArguments, args: ShrinkArguments, work: Path
) -> dict[str, Any]:
    """A short fine-tune of the pruned `model` on `data`'s training split through the project's trainer (its
    collator, device preprocessing, loss and metrics); returns the validation metrics after it.

    Checkpoints are not kept (``save_strategy="no"``): the recovered model is written by `write_shrunk_copy`.
    """
    model_labels = model_label_names(model)
    if model_labels != data.label_names:
        raise ConfigError(
            f"the recovery dataset's labels {data.label_names} are not the model's {model_labels}; "
            "give the dataset the model was trained on."
        )
    training_args = OneCycleTrainingArguments(
        output_dir=str(work),
        num_train_epochs=args.recover_epochs,
        learning_rate=args.recover_learning_rate,
        per_device_train_batch_size=args.recover_batch_size,
        per_device_eval_batch_size=max(args.recover_batch_size, 128),
        lr_scheduler_type="cosine",
        warmup_steps=0.1,
        eval_strategy="no",
        save_strategy="no",
        logging_steps=20,
        report_to="none",
        seed=args.seed,
        use_cpu=not torch.cuda.is_available(),
    )
    set_seed(args.seed)
    trainer = build_trainer(ImageClassificationTrainer, model, processor, training_args, data, data_args)
    trainer.train()
    metrics = trainer.evaluate(data.dataset["validation"], metric_key_prefix="validation")
    return {
        "epochs": args.recover_epochs,
        "learning_rate": args.recover_learning_rate,
        "batch_size": args.recover_batch_size,
        "dataset": data_args.dataset_name or data_args.data_dir,
        "validation": {key: value for key, value in metrics.items() if isinstance(value, (int, float))},
    }
