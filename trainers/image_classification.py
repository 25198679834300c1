"""`ImageClassificationTrainer`: transformers' Trainer with device-side preprocessing and the project's losses."""

from __future__ import annotations

import json
import logging
import pickle
import warnings
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, TrainerState, TrainingArguments
from transformers.image_processing_utils import BaseImageProcessor

from pipelines.arguments import DataArguments
from pipelines.collate import ImageCollator
from pipelines.errors import DataError
from pipelines.labels import is_multi_label_model, model_label_names
from pipelines.loading import ImageData
from pipelines.preprocess import DevicePreprocess, training_preprocess
from pipelines.runtime import default_device
from trainers.arguments import ONE_CYCLE, check_training_arguments
from trainers.checkpoints import is_complete_checkpoint, is_finished, newest_complete_checkpoint, save_final_model
from trainers.compat import TrainerHooks, load_best_model, load_checkpoint, mark_scheduler_created
from trainers.guards import NonFiniteGuard
from trainers.losses import classification_loss
from trainers.metrics import ComputeMetrics
from trainers.schedules import one_cycle_schedule

logger = logging.getLogger(__name__)


class ImageClassificationTrainer(TrainerHooks):
    """Fine-tune any `AutoModelForImageClassification` on batches of uint8 images.

    Batches from `pipelines.ImageCollator` reach the device as uint8; `preprocess_batch` turns them into
    `pixel_values` there (augmented when the model is in training mode). The loss is cross-entropy, or
    binary cross-entropy with logits for a multi-label model (``config.problem_type``), with
    ``args.label_smoothing_factor``. A loss or weights that become NaN or infinite stop the run on every process
    (`NonFiniteError`) before they are saved (see `trainers.guards`).

    Args:
        preprocess: The device-side preprocessing; by default built from ``processing_class`` without augmentation.
        All other arguments are `transformers.Trainer`'s.
    """

    def __init__(self, *args: Any, preprocess: DevicePreprocess | None = None, **kwargs: Any) -> None:
        training_args: TrainingArguments | None = kwargs.get("args", args[1] if len(args) > 1 else None)
        if training_args is not None:
            check_training_arguments(training_args, getattr(kwargs.get("compute_metrics"), "names", None))
            # The collator needs the raw `image`/`label` columns, which Trainer would drop as unknown to forward().
            training_args.remove_unused_columns = False
            training_args.label_names = ["labels"]
            if default_device(training_args.use_cpu).type == "cpu":
                training_args.dataloader_pin_memory = False  # pinning needs an accelerator; it only warns without
            elif training_args.dataloader_pin_memory:
                # accelerate copies each pinned batch to the GPU with a blocking copy by default, which waits for
                # the previous step's kernels: the host then cannot queue ahead, and the step pays for its Python
                # time on top of the GPU's (see pipelines.preprocess.to_device_async).
                training_args.accelerator_config.non_blocking = True
            # The filter reads every step's loss on the host (a device sync per step); NonFiniteGuard stops the run
            # at the first non-finite loss instead, so there is nothing left for the filter to filter.
            training_args.logging_nan_inf_filter = False
        with warnings.catch_warnings():
            # Trainer's own LabelSmoother cannot smooth multi-label targets and says so; our loss can (see losses.py).
            warnings.filterwarnings("ignore", message="Label smoothing is not compatible with multi-label")
            super().__init__(*args, **kwargs)
        # Our loss is a per-batch mean; with this off, Trainer divides it by the gradient-accumulation steps.
        self.model_accepts_loss_kwargs = False
        self.multi_label = is_multi_label_model(self.model)
        self.preprocess = preprocess or DevicePreprocess(
            self.processing_class, num_channels=self.model.config.num_channels, augment=False
        )
        self.non_finite_guard = NonFiniteGuard()
        self.add_callback(self.non_finite_guard)

    def training_step(
        self,
        model: torch.nn.Module,
        inputs: dict[str, torch.Tensor | Any],
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor:
        loss = super().training_step(model, inputs, num_items_in_batch)
        self.non_finite_guard.record(loss, self.state.global_step + 1)  # device work only; read when logging/saving
        return loss

    def create_scheduler(
        self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None
    ) -> torch.optim.lr_scheduler.LRScheduler:
        """Trainer's schedules, plus ``lr_scheduler_type: one_cycle`` (see `OneCycleTrainingArguments`)."""
        if self.args.lr_scheduler_type != ONE_CYCLE:
            return super().create_scheduler(num_training_steps, optimizer)
        if self.lr_scheduler is None:
            self.lr_scheduler = one_cycle_schedule(optimizer or self.optimizer, self.args, num_training_steps)
            mark_scheduler_created(self)
        return self.lr_scheduler

    def preprocess_batch(self, inputs: dict[str, torch.Tensor | Any]) -> dict[str, torch.Tensor | Any]:
        """uint8 images on the device -> the model's `pixel_values` (augmented while the model trains)."""
        inputs["pixel_values"] = self.preprocess(inputs["pixel_values"], train=self.model.training)
        return inputs

    def prediction_step(
        self,
        model: torch.nn.Module,
        inputs: dict[str, torch.Tensor | Any],
        prediction_loss_only: bool,
        ignore_keys: list[str] | None = None,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        loss, logits, labels = super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)
        if isinstance(logits, tuple):
            # Models with extra heads (DeiT with a distillation token) return (logits, cls_logits, ...): keep the
            # combined prediction only, and gather one tensor across processes instead of three.
            logits = logits[0]
        return loss, logits, labels

    def reload_checkpoint(self, folder: str, model: torch.nn.Module) -> bool:
        """Reload a plain checkpoint through `from_pretrained`, strictly (see `trainers.compat`); False for the
        checkpoints Trainer must load itself (DeepSpeed, FSDP, other weight formats)."""
        plain = (
            isinstance(model, PreTrainedModel)
            and not (self.is_deepspeed_enabled or self.is_fsdp_enabled)
            and (Path(folder) / "model.safetensors").is_file()
        )
        if plain:
            load_checkpoint_weights(model, folder)
        return plain

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


def load_checkpoint_weights(model: PreTrainedModel, folder: str) -> None:
    """Load a `save_pretrained` folder's weights into `model` in place, with transformers' key conversions.

    Raises when any weight is missing or left over, instead of training on with half-loaded weights, and when the
    checkpoint was trained on other labels (a reused output_dir).
    """
    refuse_other_labels(model, folder)
    loaded = type(model).from_pretrained(folder, config=model.config)
    model.load_state_dict(loaded.state_dict(), strict=True)


def refuse_other_labels(model: PreTrainedModel, folder: str) -> None:
    saved = json.loads((Path(folder) / "config.json").read_text()).get("id2label", {})
    saved_names = [saved[key] for key in sorted(saved, key=int)]
    names = model_label_names(model)
    if saved_names != names:
        raise DataError(
            f"{folder} was trained on the labels {saved_names}, but this run's data has {names}; resume only from a "
            "checkpoint of this dataset, or give a new output_dir."
        )


def build_trainer(
    trainer_class: type[ImageClassificationTrainer],
    model: PreTrainedModel,
    image_processor: BaseImageProcessor,
    args: TrainingArguments,
    data: ImageData,
    data_args: DataArguments,
    collator_class: type[ImageCollator] = ImageCollator,
    **extra: Any,
) -> ImageClassificationTrainer:
    """A trainer of `trainer_class` wired to `data`: its splits, collator, metrics and device preprocessing."""
    return trainer_class(
        model=model,
        args=args,
        train_dataset=data.dataset["train"],
        eval_dataset=data.dataset["validation"],
        processing_class=image_processor,
        data_collator=collator_class(data.num_labels, data.multi_label, data_args.image_mode),
        compute_metrics=ComputeMetrics(data.multi_label),
        preprocess=training_preprocess(image_processor, model.config.num_channels, data_args),
        **extra,
    )


def train_and_save(trainer: ImageClassificationTrainer) -> None:
    """Train (resuming from the newest checkpoint when asked) and save the final model into `output_dir`.

    The final save is atomic per file and leaves config.json for last (see `checkpoints.save_final_model`).
    """
    args = trainer.args
    checkpoint = resolve_resume(args.resume_from_checkpoint, args.output_dir)
    if checkpoint is None and trainer.is_world_process_zero():
        warn_about_earlier_checkpoints(args.output_dir)
    if checkpoint and is_finished(checkpoint, args):
        restore_finished_run(trainer, checkpoint)
    else:
        try:
            trainer.train(resume_from_checkpoint=checkpoint)
        except pickle.UnpicklingError:
            # Trainer reads a checkpoint's optimizer, scheduler and RNG states with torch.load(weights_only=True).
            raise DataError(
                f"{checkpoint} holds pickled training state (optimizer, scheduler or RNG) with objects other than "
                "tensors, which could run code, so torch.load(weights_only=True) refused it; resume only from checkpoints you made."
            ) from None
        except ValueError as error:
            if BATCH_NORM_OF_ONE not in str(error):
                raise
            raise DataError(
                "A training batch of one image left the model's batch norm a single value per channel (its last "
                "feature map is 1x1 at this image size), which it cannot normalise; set dataloader_drop_last: true, "
                "or a per_device_train_batch_size that leaves no single image over."
            ) from None
    save_final_model(trainer)


# torch.nn.functional.batch_norm's message when a training batch gives it one value per channel.
BATCH_NORM_OF_ONE = "Expected more than 1 value per channel when training"


def warn_about_earlier_checkpoints(output_dir: str) -> None:
    """A fresh run into a folder holding another run's checkpoints: Trainer's checkpoint rotation
    (save_total_limit) may delete them, and a reader may take them for this run's."""
    earlier = newest_complete_checkpoint(output_dir)
    if earlier is not None:
        logger.warning(
            "%s already holds %s from an earlier run; this run starts from scratch and may delete it when it saves "
            "(save_total_limit): set resume_from_checkpoint: true to continue that run, or give a new output_dir.",
            output_dir,
            Path(earlier).name,
        )


def restore_finished_run(trainer: ImageClassificationTrainer, checkpoint: str) -> None:
    """Take the trainer state and weights of a checkpoint saved after the last step, without training.

    Some transformers releases resume such a checkpoint by running one more optimizer step (5.23 checked max_steps
    only after a step; 5.25 runs none, checked), and a run killed during its final save would then come back with
    max_steps + 1 steps and other weights than the run it continues; restoring it without `train()` does not depend
    on how the release resumes.
    """
    trainer.state = TrainerState.load_from_json(str(Path(checkpoint) / "trainer_state.json"))
    load_checkpoint(trainer, checkpoint)
    best = trainer.state.best_model_checkpoint
    if trainer.args.load_best_model_at_end and best and Path(best).is_dir():
        load_best_model(trainer)


def resolve_resume(resume_from_checkpoint: Any, output_dir: str) -> str | None:
    """The checkpoint to resume from: ``true`` means the newest complete one in `output_dir` (none yet: start fresh).

    A checkpoint the run died while writing is skipped (``true``) or refused (a path): Trainer would otherwise
    restart from step 0 on its half-written weights, or fail on a cut-off file.
    """
    if resume_from_checkpoint in (None, False) or str(resume_from_checkpoint).lower() in ("false", "none", ""):
        return None
    if resume_from_checkpoint is True or str(resume_from_checkpoint).lower() == "true":
        checkpoint = newest_complete_checkpoint(output_dir)
        return str(checkpoint) if checkpoint else None
    if not is_complete_checkpoint(resume_from_checkpoint):
        raise DataError(
            f"{resume_from_checkpoint} is not a complete checkpoint (it has no readable trainer_state.json, as when a "
            "run dies while saving); resume from an earlier one, or set resume_from_checkpoint: true to pick the newest complete one."
        )
    return str(resume_from_checkpoint)
