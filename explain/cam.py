"""Class activation maps from one layer's activations and gradients: Grad-CAM and its variants.

All share one lean pass (`ActivationCAM.attribute`): a single forward pass with the target layer's output made a
leaf that requires grad, then `torch.autograd.grad` from the target scores to that output only. With frozen
parameters no weight gradient is computed and nothing before the layer is kept for backward; libraries that call
``loss.backward()`` do both. Each subclass says only how it weighs the activations (`cam`).

`maps_from_activation` is that computation, the one copy of it: `ActivationCAM.attribute` and
`class_activation_maps` call it, and so does explanation-enhanced distillation, which keeps the student's map
differentiable with respect to its parameters (``create_graph``) by capturing the layer's output without detaching.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from explain.base import AttributionMethod, forward_logits
from explain.explanation import Attribution
from explain.hooks import Captured, capture_output
from explain.layers import TargetLayer, to_grid
from explain.targets import TargetSpec
from pipelines.errors import ConfigError


class ActivationCAM(AttributionMethod):
    """Base of the CAM methods: activations A and gradients dS/dA of the target layer, as (B, C, h, w) grids."""

    needs_gradients: ClassVar[bool] = True
    graphable = True

    def attribute(self, pixel_values: torch.Tensor, targets: TargetSpec) -> Attribution:
        height, width = pixel_values.shape[-2:]
        with (
            torch.set_grad_enabled(self.needs_gradients),
            capture_output(self.layer.module, differentiable=self.needs_gradients) as captured,
        ):
            logits = self.logits(pixel_values)
        activation = captured_activation(captured, self.layer)
        resolved, scores = self.targets_and_scores(logits, targets)
        if not self.needs_gradients:
            cam = self.cam(to_grid(self.model, activation.detach(), height, width).float(), None)
            return Attribution(cam[:, None].expand(-1, resolved.shape[1], -1, -1), resolved, scores)
        maps = []
        for column in range(resolved.shape[1]):
            selected = logits.gather(1, resolved[:, column : column + 1]).sum()
            last = column == resolved.shape[1] - 1
            maps.append(maps_from_activation(self.model, activation, selected, (height, width), self.cam, not last))
        return Attribution(torch.stack(maps, dim=1), resolved, scores)  # raw (B, K, h, w)

    @staticmethod
    def cam(activations: torch.Tensor, gradients: torch.Tensor | None) -> torch.Tensor:
        """The map of one target.

        Args:
            activations: float32 (B, C, h, w).
            gradients: float32 (B, C, h, w), d(target logit)/d(activations); None for gradient-free methods.

        Returns:
            float32 (B, h, w), non-negative.
        """
        raise NotImplementedError


def captured_activation(captured: Captured, layer: TargetLayer) -> torch.Tensor:
    """The target layer's output from a `capture_output` block, or a `ConfigError` if the layer never ran."""
    if captured.value is None:
        raise ConfigError(f"The target layer '{layer.name}' did not run in the forward pass; pick another.")
    return captured.value


def maps_from_activation(
    model: nn.Module,
    activation: torch.Tensor,
    score: torch.Tensor,
    input_size: tuple[int, int],
    cam: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    retain_graph: bool = False,
    create_graph: bool = False,
) -> torch.Tensor:
    """Raw CAMs from a target layer's output and a score computed from it: the one Grad-CAM computation.

    Args:
        model: The model the activation comes from (for its prefix tokens and patch grid).
        activation: The layer's output as the forward pass used it, (B, C, h, w) or tokens (B, N, C).
        score: A scalar: the sum over the batch of each image's explained logit.
        input_size: (H, W) of the model's input in pixels.
        cam: How a method weighs activations (B, C, h, w) by gradients (B, C, h, w), e.g. `GradCAM.cam`.
        retain_graph: Keep the forward graph for another target's gradient.
        create_graph: Keep the map differentiable with respect to everything the activation depends on (the
            model's parameters, when the activation was captured without detaching), as explanation-enhanced
            distillation needs for its student (Parchami-Araghi et al. 2024). Off, the map is detached.

    Returns:
        float32 (B, h, w) at the layer's grid, not scaled.
    """
    (gradient,) = torch.autograd.grad(
        score, activation, retain_graph=retain_graph or create_graph, create_graph=create_graph
    )
    if not create_graph:
        activation = activation.detach()
    height, width = input_size
    activations = to_grid(model, activation, height, width).float()  # (B, C, h, w)
    gradients = to_grid(model, gradient, height, width).float()  # (B, C, h, w)
    return cam(activations, gradients)


def class_activation_maps(
    model: nn.Module,
    layer: TargetLayer,
    pixel_values: torch.Tensor,
    targets: torch.Tensor | None = None,
    method: str = "gradcam",
    create_graph: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw maps of a gradient CAM at the layer's grid, and the logits of the same forward pass.

    The model runs as it is (train or eval mode, its own dtype; callers freeze parameters they want no gradient
    for). Without `create_graph` the layer's output becomes a detached leaf, so the backward pass stops there and
    computes no weight gradient (the lean path `GradCAM` takes). With `create_graph` the output stays attached and
    the maps are differentiable with respect to the parameters.

    Args:
        model: An image classifier (see `explain.base.forward_logits`).
        layer: Its target layer (`explain.layers.resolve_target_layer`).
        pixel_values: (B, C, H, W), preprocessed for the model.
        targets: int64 (B,), the class each map explains; None for the predicted class.
        method: A gradient CAM's name: one of `GRADIENT_CAMS`.
        create_graph: See above.

    Returns:
        maps: float32 (B, h, w), non-negative, not scaled.
        logits: (B, L).
    """
    cam = gradient_cam(method).cam
    with torch.enable_grad(), capture_output(layer.module, differentiable=not create_graph) as captured:
        logits = forward_logits(model, pixel_values)
    activation = captured_activation(captured, layer)
    if targets is None:
        targets = logits.detach().argmax(dim=1)
    score = logits.gather(1, targets[:, None].to(logits.device)).sum()
    maps = maps_from_activation(model, activation, score, pixel_values.shape[-2:], cam, create_graph=create_graph)
    return maps, logits


def gradient_cam(name: str) -> type[ActivationCAM]:
    """The gradient CAM class called `name` (a key of `GRADIENT_CAMS`), or a `ConfigError` naming those there are."""
    if name not in GRADIENT_CAMS:
        raise ConfigError(f"'{name}' is not a gradient CAM; use one of {', '.join(GRADIENT_CAMS)}.")
    return GRADIENT_CAMS[name]


class GradCAM(ActivationCAM):
    """Grad-CAM (Selvaraju et al. 2017): channels weighted by their spatially averaged gradient, summed, ReLU."""

    name = "gradcam"

    @staticmethod
    def cam(activations: torch.Tensor, gradients: torch.Tensor | None) -> torch.Tensor:
        weights = gradients.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1): eq. 1, global-average-pooled gradients
        return F.relu((weights * activations).sum(dim=1))


class HiResCAM(ActivationCAM):
    """HiResCAM (Draelos & Carin 2020): the element-wise product of gradients and activations, summed over channels.

    Unlike Grad-CAM it does not average gradients over space, so the map is faithful to the model's computation
    when the head is linear after global pooling.
    """

    name = "hirescam"

    @staticmethod
    def cam(activations: torch.Tensor, gradients: torch.Tensor | None) -> torch.Tensor:
        return F.relu((gradients * activations).sum(dim=1))


class XGradCAM(ActivationCAM):
    """XGrad-CAM (Fu et al. 2020): weights sum(g * A) / sum(A) per channel, chosen to satisfy their axioms."""

    name = "xgradcam"

    @staticmethod
    def cam(activations: torch.Tensor, gradients: torch.Tensor | None) -> torch.Tensor:
        total = activations.sum(dim=(2, 3), keepdim=True)
        weights = (gradients * activations).sum(dim=(2, 3), keepdim=True) / (total + 1e-7)
        return F.relu((weights * activations).sum(dim=1))


class GradCAMPlusPlus(ActivationCAM):
    """Grad-CAM++ (Chattopadhay et al. 2018): pixel-wise weights alpha on the positive gradients.

    Uses the paper's closed form for an exponential score (eq. 19), where second and third derivatives are
    powers of the first: alpha = g^2 / (2 g^2 + sum_ab(A) g^3), zero where g is zero.
    """

    name = "gradcam++"

    @staticmethod
    def cam(activations: torch.Tensor, gradients: torch.Tensor | None) -> torch.Tensor:
        squared = gradients.pow(2)
        denominator = 2 * squared + activations.sum(dim=(2, 3), keepdim=True) * squared * gradients
        alpha = torch.where(gradients != 0, squared / (denominator + 1e-6), torch.zeros_like(gradients))
        weights = (alpha * F.relu(gradients)).sum(dim=(2, 3), keepdim=True)
        return F.relu((weights * activations).sum(dim=1))


class LayerCAM(ActivationCAM):
    """LayerCAM (Jiang et al. 2021): each activation weighted by its own positive gradient."""

    name = "layercam"

    @staticmethod
    def cam(activations: torch.Tensor, gradients: torch.Tensor | None) -> torch.Tensor:
        return F.relu((F.relu(gradients) * activations).sum(dim=1))


class EigenCAM(ActivationCAM):
    """Eigen-CAM (Muhammad & Yeasin 2020): the activations projected on their first principal component.

    Gradient-free and class-agnostic: the target and score are reported, the map does not depend on them.
    Departs from the paper in fixing the component's sign, which SVD leaves arbitrary: the projection is made to
    agree with the channel-summed activation, so the map shows where the layer responds rather than its negative.
    """

    name = "eigencam"
    needs_gradients = False
    graphable = False  # the batched SVD on CUDA reads its convergence status back to the host
    class_agnostic = True

    @staticmethod
    def cam(activations: torch.Tensor, gradients: torch.Tensor | None) -> torch.Tensor:
        return F.relu(first_component(activations))


# The methods whose map is a function of activations and gradients, which can therefore be made differentiable
# (`class_activation_maps` with ``create_graph``).
GRADIENT_CAMS: dict[str, type[ActivationCAM]] = {
    method.name: method for method in (GradCAM, HiResCAM, XGradCAM, GradCAMPlusPlus, LayerCAM)
}


def first_component(activations: torch.Tensor) -> torch.Tensor:
    """Each image's (h*w, C) activation matrix, centred over positions, projected on its top right-singular vector.

    Args:
        activations: (B, C, h, w).

    Returns:
        (B, h, w), with the sign that correlates positively with the channel sum of the activations.
    """
    batch, _, height, width = activations.shape
    positions = activations.flatten(2).transpose(1, 2).double()  # (B, h*w, C); double: SVD of near-rank-1 data
    centred = positions - positions.mean(dim=1, keepdim=True)
    _, _, right = torch.linalg.svd(centred, full_matrices=False)  # right: (B, min(h*w, C), C)
    projection = (centred @ right[:, 0, :, None])[..., 0]  # (B, h*w)
    reference = positions.sum(dim=2)
    reference = reference - reference.mean(dim=1, keepdim=True)
    sign = torch.where((projection * reference).sum(dim=1, keepdim=True) < 0, -1.0, 1.0).to(projection.dtype)
    return (projection * sign).reshape(batch, height, width).to(activations.dtype)
