"""Explaining a checkpoint: `Explainer` (one model with its device preprocessing, explaining and predicting uint8
batches in its compute dtype) and the checks every caller makes (methods that fit, models with the same labels).

`python -m explain` (explain/cli.py), the explorer (explain/explorer.py), the maps dataset (explain/maps_dataset.py)
and the evaluation report (trainers/report/) build on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from explain.base import forward_logits
from explain.explanation import Explanation
from explain.registry import METHODS, canonical_name, default_method, make_method, methods_for
from pipelines.collate import ImageCollator
from pipelines.errors import ConfigError
from pipelines.labels import is_multi_label_model, label_text, model_label_names, predicted_classes
from pipelines.models import load_classifier
from pipelines.preprocess import DevicePreprocess
from pipelines.progress import progress_bar


class Explainer:
    """One model with its preprocessing, explaining `Inputs` with the chosen methods.

    Args:
        name_or_path: Hub id or folder.
        device: Where the model runs.
        dtype: The compute dtype: the model is cast to it (DESIGN.md: explanations run in the model's compute
            dtype; on an H100, ViT-B/16's forward pass in bf16 weights ran about 3x faster than fp32 weights under
            bf16 autocast, see `scripts/benchmark.py explain`).
        allow_pickle: Accept pickled weights (loaded with ``weights_only=True``) when a folder has no safetensors.
        trust_remote_code: Run a Hub checkpoint's own code; off unless the user asks.
        title: What figures and reports call the model (default: a local checkpoint's folder name, else the id).
        options: Method options (target_layer, batch_size, head_fusion, discard_ratio).
    """

    def __init__(
        self,
        name_or_path: str,
        device: torch.device,
        dtype: torch.dtype,
        allow_pickle: bool = False,
        trust_remote_code: bool = False,
        title: str | None = None,
        **options: Any,
    ) -> None:
        self.name = name_or_path
        self._title = title
        self.model, processor = load_classifier(
            name_or_path, allow_pickle=allow_pickle, trust_remote_code=trust_remote_code
        )
        self.model.to(device=device, dtype=dtype).eval()
        self.device = device
        self.options = {"dtype": dtype, **options}
        self.preprocess = DevicePreprocess(processor, num_channels=self.model.config.num_channels, augment=False)

    @property
    def label_names(self) -> list[str]:
        """The model's class names in output order."""
        return model_label_names(self.model)

    @property
    def multi_label(self) -> bool:
        return is_multi_label_model(self.model)

    @property
    def title(self) -> str:
        if self._title:
            return self._title
        return Path(self.name).name if Path(self.name).exists() else self.name

    def pixel_values(self, images: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        """The model's inputs, in its dtype, from uint8 images."""
        if isinstance(images, torch.Tensor):
            images = images.to(self.device)
        else:
            images = [image.to(self.device) for image in images]
        return self.preprocess(images).to(next(self.model.parameters()).dtype)

    def explain(self, method: str, images: torch.Tensor | list[torch.Tensor], targets: Any = None) -> Explanation:
        return make_method(method, self.model, **self.options)(self.pixel_values(images), targets).cpu()

    @torch.no_grad()
    def predict_batch(self, images: torch.Tensor | list[torch.Tensor]) -> torch.Tensor:
        """Logits (B, L) of a batch of uint8 images."""
        with torch.autocast(self.device.type, dtype=self.options["dtype"], enabled=self._autocast):
            return forward_logits(self.model, self.pixel_values(images)).float().cpu()

    @torch.no_grad()
    def predict(self, split: Any, collator: ImageCollator, batch_size: int) -> torch.Tensor:
        """Logits (N, L) for a whole split, in batches, with a progress bar (a split can take minutes)."""
        logits = []
        with progress_bar(len(split), f"predictions ({self.title})") as bar:
            for start in range(0, len(split), batch_size):
                batch = collator([split[index] for index in range(start, min(start + batch_size, len(split)))])
                logits.append(self.predict_batch(batch["pixel_values"]))
                bar.update(len(batch["pixel_values"]))
        return torch.cat(logits)

    def predicted_sets(self, images: torch.Tensor | list[torch.Tensor]) -> list[str] | None:
        """For a multi-label model, each image's predicted labels in words (see `pipelines.labels`); else None."""
        if not self.multi_label:
            return None
        predicted = predicted_classes(self.predict_batch(images), multi_label=True)
        return [label_text(row, self.label_names) for row in predicted]

    @property
    def _autocast(self) -> bool:
        return self.options["dtype"] != next(self.model.parameters()).dtype

    def caption(self, explanation: Explanation, row: int) -> str:
        return f"{self.label(explanation, row)} ({float(explanation.score[row]):.2f})"

    def label(self, explanation: Explanation, row: int) -> str:
        return label_text(explanation.target[row], self.label_names)

    def prediction(
        self, explanation: Explanation, row: int, key: str = "predicted", predicted_set: str | None = None
    ) -> dict[str, Any]:
        """The explained class of one row and its probability, for index.json; for a multi-label model (given its
        `predicted_set`), the set as "predicted" and the label the map explains as "explained"."""
        if predicted_set is not None:
            key = "explained"
        entry = {key: self.label(explanation, row), "score": round(float(explanation.score[row]), 4)}
        return entry if predicted_set is None else {"predicted": predicted_set, **entry}


def chosen_methods(spec: str, model: nn.Module) -> list[str]:
    """The method names asked for, each checked against the model ('all': every method that fits)."""
    if spec.strip().lower() == "all":
        return methods_for(model)
    names = [canonical_name(name) for name in spec.split(",") if name.strip()]
    if not names:
        raise ConfigError("methods is empty; give e.g. gradcam,guided_gradcam or 'all'.")
    for name in names:
        make_method(name, model)  # raises with the methods that fit
    return list(dict.fromkeys(names))


def methods_for_models(spec: str, models: dict[str, nn.Module]) -> list[str]:
    """The methods to run on every model: 'default' gives the models' default method (`default_method`), 'all'
    every method that fits every model (registry order), else the named ones, each checked against every model.

    Raises:
        ConfigError: an empty list, an unknown method, or one that does not fit a model (`check_methods_fit`).
    """
    key = spec.strip().lower()
    if key == "default":
        return [default_method(*models.values())]
    if key == "all":
        fitting = [set(methods_for(model)) for model in models.values()]
        return [method for method in METHODS if all(method in fit for fit in fitting)]
    names = list(dict.fromkeys(canonical_name(name) for name in spec.split(",") if name.strip()))
    if not names:
        raise ConfigError("methods is empty; give e.g. gradcam,layercam, 'default' or 'all'.")
    check_methods_fit(names, models)
    return names


def display_names(explainers: list[Explainer]) -> list[str]:
    """What the figures and reports call each model: its title (a local checkpoint's folder name) when the titles
    are unique, else every model by its path or Hub id as given."""
    titles = [explainer.title for explainer in explainers]
    return titles if len(set(titles)) == len(titles) else [explainer.name for explainer in explainers]


def check_methods_fit(methods: Sequence[str], models: dict[str, nn.Module]) -> None:
    """Refuse a method that does not fit one of the models, before anything is computed or written.

    Args:
        methods: Method names (or aliases).
        models: The models by the name the user knows them by (a folder name or Hub id).

    Raises:
        ConfigError: naming the model, what the method needs, and the methods that fit that model.
    """
    for label, model in models.items():
        for method in methods:
            try:
                make_method(method, model)  # only builds the method object: no pass through the model
            except ConfigError as error:
                raise ConfigError(f"Model {label}: {error}") from None


def check_same_labels(first: Explainer, second: Explainer) -> None:
    """Refuse to compare two models that predict different classes: their maps for "the predicted class" would
    explain different things, and a teacher-vs-student comparison only makes sense on one label space.

    Raises:
        ConfigError: naming both models and their labels.
    """
    if first.label_names != second.label_names:
        raise ConfigError(
            f"{second.title} has labels {second.label_names} but {first.title} has {first.label_names}; "
            "a model is compared with another of the same labels in the same order."
        )
