"""Methods by name, and which of them fit a given model."""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from explain.attention_gradients import GradientRollout, LeGrad
from explain.base import AttributionMethod
from explain.cam import EigenCAM, GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, XGradCAM
from explain.captum_backend import CaptumGradCAM
from explain.guided import GuidedBackprop, GuidedGradCAM
from explain.layers import is_transformer, model_type
from explain.rollout import AttentionRollout
from pipelines.errors import ConfigError

METHODS: dict[str, type[AttributionMethod]] = {
    method.name: method
    for method in (
        GradCAM,
        CaptumGradCAM,
        GradCAMPlusPlus,
        XGradCAM,
        LayerCAM,
        HiResCAM,
        EigenCAM,
        GuidedBackprop,
        GuidedGradCAM,
        AttentionRollout,
        GradientRollout,
        LeGrad,
    )
}
ALIASES = {
    "gradcam_plus_plus": "gradcam++",
    "gradcampp": "gradcam++",
    "rollout": "attention_rollout",
    "chefer": "gradient_rollout",
    "grad_rollout": "gradient_rollout",
}


# The method used where none is named (the report, the explorer's agreement, the distillation results' agreement),
# chosen by the report's deciding measure against random maps on models trained here: README, "Which method for a
# vision transformer".
CNN_METHOD = "gradcam"
TRANSFORMER_METHOD = "legrad"


def default_method(*models: nn.Module) -> str:
    """The method to explain `models` with when none is named: the transformer default when every model is a vision
    transformer with a class token, else Grad-CAM (which fits every model)."""
    return TRANSFORMER_METHOD if models and all(is_transformer(model) for model in models) else CNN_METHOD


# How prose and figure titles name a method; others by their registered name.
TITLES = {"gradcam": "Grad-CAM", "gradient_rollout": "gradient rollout", "legrad": "LeGrad"}


def method_title(name: str) -> str:
    """A method's name in prose: 'Grad-CAM', 'gradient rollout', 'LeGrad', else the registered name."""
    return TITLES.get(name, name)


def canonical_name(name: str) -> str:
    """The registered name of a method (``"Grad-CAM"`` and ``"gradcam"`` both give ``"gradcam"``)."""
    key = name.strip().lower().replace("-", "").replace(" ", "_")
    key = ALIASES.get(key, key)
    if key not in METHODS:
        raise ConfigError(f"Unknown explanation method '{name}'; choose from {', '.join(METHODS)}.")
    return key


def class_agnostic(name: str) -> bool:
    """Whether the method called `name` (or an alias) draws the same map whatever class it is asked to explain."""
    return METHODS[canonical_name(name)].class_agnostic


def methods_for(model: nn.Module) -> list[str]:
    """The names of the methods that can explain `model`, in the registry's order."""
    return [name for name, method in METHODS.items() if method.unsupported_reason(model) is None]


def make_method(name: str, model: nn.Module, **options: Any) -> AttributionMethod:
    """Build the method called `name` for `model`.

    Args:
        name: A name from `METHODS` (or an alias).
        model: The classifier.
        **options: Constructor arguments the method takes (target_layer, batch_size, dtype, backend, head_fusion,
            discard_ratio); those it does not take are ignored.

    Raises:
        ConfigError: an unknown name, or a method that does not fit the model (naming those that do).
    """
    method = METHODS[canonical_name(name)]
    problem = method.unsupported_reason(model)
    if problem:
        raise ConfigError(
            f"{problem[0].upper()}{problem[1:].rstrip('.')}; for this {model_type(model)} model use one of "
            f"{', '.join(methods_for(model))}."
        )
    accepted = method_parameters(method)
    return method(model, **{key: value for key, value in options.items() if key in accepted and value is not None})


def method_parameters(method: type[AttributionMethod]) -> set[str]:
    """The options a method's constructor takes besides the model."""
    return set(inspect.signature(method.__init__).parameters) - {"self", "model"}


def explain_maps(
    model: nn.Module, method: str, pixel_values: torch.Tensor, targets: torch.Tensor | None, **options: object
) -> tuple[torch.Tensor, torch.Tensor]:
    """Maps (N, H, W) and explained targets (N,) of `method` on `model`."""
    explanation = make_method(method, model, **options)(pixel_values, targets)
    return explanation.maps, explanation.target
