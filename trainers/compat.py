"""Every use of transformers' private API in this project, in one place, each with the release it was checked on and
the test that pins it (tests/test_compat.py). A transformers release that renames or reshapes one fails those tests
instead of quietly training or resuming wrongly; setup.cfg bounds transformers to the releases tested.

- `Trainer._prepare_inputs` (overridden): the one place a batch is on the device before the model sees it, where
  uint8 images become the model's `pixel_values` (device preprocessing), for training, evaluation and prediction
  alike. Checked on 5.25.
- `Trainer._load_from_checkpoint` and `Trainer._load_best_model` (overridden and called): transformers'
  `save_pretrained` writes ViT/DeiT weights under legacy names (``vit.encoder.layer.0.attention.attention.key``)
  that Trainer's own reload, a `load_state_dict(strict=False)`, does not match: on 5.25 it leaves every transformer
  layer's weights as they were, after a warning, so resume and `load_best_model_at_end` would go on with the wrong
  weights. A plain checkpoint is reloaded through `from_pretrained` (which converts the names), strictly, instead.
- `Trainer._created_lr_scheduler` (set): how Trainer marks a scheduler it made itself, so that a later `train()`
  call makes a new one for its own steps. Checked on 5.25.

One more private read lives outside this module: `explain.hooks.eager_attention` reads
``config._attn_implementation`` (transformers has a setter but no getter), since `explain` never imports
`trainers`; tests/test_compat.py pins it with the rest.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import Trainer


class TrainerHooks(Trainer):
    """`transformers.Trainer` whose private batch-preparation and checkpoint-reload steps call public methods a
    subclass defines: `preprocess_batch` (inputs on the device -> the model's inputs) and `reload_checkpoint`
    (True when it loaded the checkpoint itself, False to let Trainer do it)."""

    def preprocess_batch(self, inputs: dict[str, torch.Tensor | Any]) -> dict[str, torch.Tensor | Any]:
        return inputs

    def reload_checkpoint(self, folder: str, model: torch.nn.Module) -> bool:
        return False

    def _prepare_inputs(self, inputs: dict[str, torch.Tensor | Any]) -> dict[str, torch.Tensor | Any]:
        return self.preprocess_batch(super()._prepare_inputs(inputs))

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: torch.nn.Module | None = None) -> None:
        if not self.reload_checkpoint(resume_from_checkpoint, model if model is not None else self.model):
            super()._load_from_checkpoint(resume_from_checkpoint, model)

    def _load_best_model(self) -> None:
        if not self.reload_checkpoint(self.state.best_model_checkpoint, self.model):
            super()._load_best_model()


def load_checkpoint(trainer: Trainer, checkpoint: str) -> None:
    """Load a checkpoint's weights into the trainer's model, as resuming does."""
    trainer._load_from_checkpoint(checkpoint)


def load_best_model(trainer: Trainer) -> None:
    """Load the best checkpoint's weights, as `load_best_model_at_end` does at the end of training."""
    trainer._load_best_model()


def mark_scheduler_created(trainer: Trainer) -> None:
    """Mark the trainer's learning-rate scheduler as one it made itself (as Trainer marks its own), so that a later
    `train()` call makes a new one for its own steps."""
    trainer._created_lr_scheduler = True
