"""`ImageClassificationTrainer`: transformers' Trainer with device-side preprocessing and the project's losses."""

from __future__ import annotations

import warnings
from typing import Any

import torch
from transformers import Trainer, TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

from pipelines.preprocess import DevicePreprocess
from trainers.losses import classification_loss


class ImageClassificationTrainer(Trainer):
    """Fine-tune any `AutoModelForImageClassification` on batches of uint8 images.

    Batches from `pipelines.ImageCollator` reach the device as uint8; `_prepare_inputs` turns them into
    `pixel_values` there (augmented when the model is in training mode). The loss is cross-entropy, or
    binary cross-entropy with logits for a multi-label model (``config.problem_type``), with
    ``args.label_smoothing_factor``.

    Args:
        preprocess: The device-side preprocessing; by default built from ``processing_class`` without augmentation.
        All other arguments are `transformers.Trainer`'s.
    """

    def __init__(self, *args: Any, preprocess: DevicePreprocess | None = None, **kwargs: Any) -> None:
        training_args: TrainingArguments | None = kwargs.get("args", args[1] if len(args) > 1 else None)
        if training_args is not None:
            # The collator needs the raw `image`/`label` columns, which Trainer would drop as unknown to forward().
            training_args.remove_unused_columns = False
            training_args.label_names = ["labels"]
        with warnings.catch_warnings():
            # Trainer's own LabelSmoother cannot smooth multi-label targets and says so; our loss can (see losses.py).
            warnings.filterwarnings("ignore", message="Label smoothing is not compatible with multi-label")
            super().__init__(*args, **kwargs)
        # Our loss is a per-batch mean; with this off, Trainer divides it by the gradient-accumulation steps.
        self.model_accepts_loss_kwargs = False
        self.multi_label = self.model.config.problem_type == "multi_label_classification"
        self.preprocess = preprocess or DevicePreprocess(
            self.processing_class, num_channels=self.model.config.num_channels, augment=False
        )

    def _prepare_inputs(self, inputs: dict[str, torch.Tensor | Any]) -> dict[str, torch.Tensor | Any]:
        inputs = super()._prepare_inputs(inputs)
        inputs["pixel_values"] = self.preprocess(inputs["pixel_values"], train=self.model.training)
        return inputs

    def floating_point_ops(self, inputs: dict[str, torch.Tensor | Any]) -> int:
        # Trainer's estimate (6 x input elements x parameters) treats each pixel as a token; report none rather
        # than a number off by orders of magnitude. It also cannot handle a list of differently sized images.
        return 0

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, torch.Tensor | Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        labels = inputs["labels"]
        outputs = model(pixel_values=inputs["pixel_values"])
        loss = classification_loss(outputs.logits, labels, self.multi_label, self.args.label_smoothing_factor)
        return (loss, outputs) if return_outputs else loss


def resolve_resume(resume_from_checkpoint: Any, output_dir: str) -> str | None:
    """The checkpoint to resume from: ``true`` means the newest in `output_dir` (none yet: start fresh)."""
    if resume_from_checkpoint in (None, False) or str(resume_from_checkpoint).lower() in ("false", "none", ""):
        return None
    if resume_from_checkpoint is True or str(resume_from_checkpoint).lower() == "true":
        try:
            return get_last_checkpoint(output_dir)
        except FileNotFoundError:
            return None
    return str(resume_from_checkpoint)
