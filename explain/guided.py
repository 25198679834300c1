"""Guided Backpropagation and Guided Grad-CAM.

Captum's `GuidedBackprop` applies the guided rule by hooking `nn.ReLU` modules only; on GELU models (ViT, DeiT,
ConvNeXt) it hooks nothing and returns the plain input gradient without a word. So Captum is used where it applies
(every activation module is an `nn.ReLU`), and our rule on the model's activation modules everywhere else
(`explain.hooks.guided_activations`); on ReLU models both give the same attributions (a test checks this).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import torch
from captum.attr import GuidedBackprop as CaptumGuidedBackprop
from captum.attr import GuidedGradCam as CaptumGuidedGradCam
from torch import nn

from explain.base import AttributionMethod, LogitsModule
from explain.cam import GradCAM
from explain.explanation import Attribution, upsample
from explain.hooks import capture_output, grid_tap, guided_activations
from explain.layers import activation_modules, relu_only
from explain.targets import TargetSpec
from pipelines.errors import ConfigError

BACKENDS = ("auto", "captum", "ours")


@contextmanager
def quiet_captum() -> Iterator[None]:
    """Captum warns on every call that it sets (and removes) its ReLU hooks; that is the expected behaviour here."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Setting backward hooks on ReLU activations")
        yield


def saliency(attributions: torch.Tensor) -> torch.Tensor:
    """An input-space attribution as a map: the largest absolute value over colour channels (Simonyan et al. 2014).

    Args:
        attributions: (..., C, H, W).

    Returns:
        (..., H, W).
    """
    return attributions.abs().amax(dim=-3)


def _check_backend(backend: str, model: nn.Module) -> None:
    if backend not in BACKENDS:
        raise ConfigError(f"backend is '{backend}'; use one of {', '.join(BACKENDS)}.")
    if backend == "captum" and not relu_only(model):
        raise ConfigError(
            "Captum's guided backpropagation hooks only nn.ReLU, and this model uses other activations; "
            "use backend 'ours' or 'auto'."
        )


class GuidedBackprop(AttributionMethod):
    """Guided Backpropagation (Springenberg et al. 2015): the input gradient with negative signals stopped at
    every activation.

    Args:
        model: The classifier.
        batch_size: Images per pass.
        dtype: Compute dtype (see `AttributionMethod`).
        backend: ``"auto"`` (Captum's on ReLU-only models, ours otherwise), ``"captum"`` or ``"ours"``.

    The map is the channel-wise maximum of the absolute attribution; `Explanation.attributions` keeps the signed
    (N, C, H, W) attributions.
    """

    name = "guided_backprop"
    uses_target_layer = False

    def __init__(
        self, model: nn.Module, batch_size: int | None = 64, dtype: torch.dtype | None = None, backend: str = "auto"
    ) -> None:
        super().__init__(model, None, batch_size, dtype)
        _check_backend(backend, model)
        self.backend = backend

    @classmethod
    def unsupported_reason(cls, model: nn.Module) -> str | None:
        if not activation_modules(model):
            return "guided backpropagation needs activation modules (nn.ReLU, GELU, ...), and this model has none."
        return None

    @property
    def uses_captum(self) -> bool:
        return self.backend == "captum" or (self.backend == "auto" and relu_only(self.model))

    def attribute(self, pixel_values: torch.Tensor, targets: TargetSpec) -> Attribution:
        attributions, resolved, scores = self.input_attributions(pixel_values, targets)
        return Attribution(saliency(attributions), resolved, scores, attributions)

    def input_attributions(
        self, pixel_values: torch.Tensor, targets: TargetSpec
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Guided input gradients.

        Returns:
            attributions (B, K, C, H, W), targets (B, K), scores (B, K).
        """
        if self.uses_captum:
            with torch.no_grad():
                resolved, scores = self.targets_and_scores(self.logits(pixel_values), targets)
            guided = CaptumGuidedBackprop(LogitsModule(self.model))
            inputs = pixel_values.detach().requires_grad_(True)  # Captum would set it, with a warning
            with self.autocast(), quiet_captum():
                columns = [guided.attribute(inputs, target=resolved[:, k]) for k in range(resolved.shape[1])]
            return torch.stack(columns, dim=1).float(), resolved, scores
        inputs = pixel_values.detach().requires_grad_(True)
        with guided_activations(self.model):  # the hooks act during backward, so the block spans both passes
            logits = self.logits(inputs)
            resolved, scores = self.targets_and_scores(logits, targets)
            columns = []
            for k in range(resolved.shape[1]):
                selected = logits.gather(1, resolved[:, k : k + 1]).sum()
                (gradient,) = torch.autograd.grad(selected, inputs, retain_graph=k < resolved.shape[1] - 1)
                columns.append(gradient.float())
        return torch.stack(columns, dim=1), resolved, scores


class GuidedGradCAM(AttributionMethod):
    """Guided Grad-CAM (Selvaraju et al. 2017, sec. 3): guided backpropagation times the upsampled Grad-CAM.

    Uses Captum's `GuidedGradCam` (with bilinear upsampling) on ReLU-only models; on others, our guided rule times
    the lean Grad-CAM. The Grad-CAM factor is upsampled but not rescaled, as in Captum.

    Args:
        model: The classifier.
        target_layer: The Grad-CAM layer (see `AttributionMethod`).
        batch_size: Images per pass.
        dtype: Compute dtype.
        backend: ``"auto"``, ``"captum"`` or ``"ours"`` (see `GuidedBackprop`).
    """

    name = "guided_gradcam"

    def __init__(
        self,
        model: nn.Module,
        target_layer: str | nn.Module | None = None,
        batch_size: int | None = 64,
        dtype: torch.dtype | None = None,
        backend: str = "auto",
    ) -> None:
        super().__init__(model, target_layer, batch_size, dtype)
        _check_backend(backend, model)
        self.backend = backend
        self.guided = GuidedBackprop(model, batch_size, dtype, backend="ours")
        self.gradcam = GradCAM(model, self.layer.module, batch_size, dtype)
        self.tap = nn.Identity()

    @classmethod
    def unsupported_reason(cls, model: nn.Module) -> str | None:
        return GuidedBackprop.unsupported_reason(model)

    @property
    def uses_captum(self) -> bool:
        return self.backend == "captum" or (self.backend == "auto" and relu_only(self.model))

    def attribute(self, pixel_values: torch.Tensor, targets: TargetSpec) -> Attribution:
        if self.uses_captum:
            return self._captum(pixel_values, targets)
        attributions, resolved, scores = self.guided.input_attributions(pixel_values, targets)
        cam = upsample(self.gradcam.attribute(pixel_values, resolved).raw, pixel_values.shape[-2:])  # (B, K, H, W)
        product = attributions * cam[:, :, None]  # (B, K, C, H, W)
        return Attribution(saliency(product), resolved, scores, product)

    def _captum(self, pixel_values: torch.Tensor, targets: TargetSpec) -> Attribution:
        height, width = pixel_values.shape[-2:]
        with torch.no_grad(), capture_output(self.layer.module, differentiable=False) as captured:
            resolved, scores = self.targets_and_scores(self.logits(pixel_values), targets)
        tokens = captured.value.ndim == 3
        layer = self.tap if tokens else self.layer.module
        method = CaptumGuidedGradCam(LogitsModule(self.model), layer)
        inputs = pixel_values.detach().requires_grad_(True)
        reshaping = grid_tap(self.model, self.layer.module, self.tap, (height, width)) if tokens else nullcontext()
        with reshaping, self.autocast(), quiet_captum():
            columns = [
                method.attribute(inputs, target=resolved[:, k], interpolate_mode="bilinear").float()
                for k in range(resolved.shape[1])
            ]
        product = torch.stack(columns, dim=1)  # (B, K, C, H, W)
        return Attribution(saliency(product), resolved, scores, product)
