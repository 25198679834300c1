"""Class activation maps from one layer's activations and gradients: Grad-CAM and its variants.

All share one lean pass (`ActivationCAM.attribute`): a single forward pass with the target layer's output made a
leaf that requires grad, then `torch.autograd.grad` from the target scores to that output only. With frozen
parameters no weight gradient is computed and nothing before the layer is kept for backward; libraries that call
``loss.backward()`` do both. Each subclass says only how it weighs the activations (`cam`).
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F

from explain.base import Attribution, AttributionMethod
from explain.hooks import capture_output
from explain.layers import to_grid
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
        if captured.value is None:
            raise ConfigError(f"The target layer '{self.layer.name}' did not run in the forward pass; pick another.")
        resolved, scores = self.targets_and_scores(logits, targets)
        activation = captured.value
        activations = to_grid(self.model, activation.detach(), height, width).float()  # (B, C, h, w)
        maps = []
        for column in range(resolved.shape[1]):
            gradients = None
            if self.needs_gradients:
                selected = logits.gather(1, resolved[:, column : column + 1]).sum()
                (gradient,) = torch.autograd.grad(selected, activation, retain_graph=column < resolved.shape[1] - 1)
                gradients = to_grid(self.model, gradient, height, width).float()  # (B, C, h, w)
            maps.append(self.cam(activations, gradients))
        return Attribution(torch.stack(maps, dim=1), resolved, scores)  # raw (B, K, h, w)

    def cam(self, activations: torch.Tensor, gradients: torch.Tensor | None) -> torch.Tensor:
        """The map of one target.

        Args:
            activations: float32 (B, C, h, w).
            gradients: float32 (B, C, h, w), d(target logit)/d(activations); None for gradient-free methods.

        Returns:
            float32 (B, h, w), non-negative.
        """
        raise NotImplementedError


class GradCAM(ActivationCAM):
    """Grad-CAM (Selvaraju et al. 2017): channels weighted by their spatially averaged gradient, summed, ReLU."""

    name = "gradcam"

    def cam(self, activations: torch.Tensor, gradients: torch.Tensor | None) -> torch.Tensor:
        weights = gradients.mean(dim=(2, 3), keepdim=True)  # (B, C, 1, 1): eq. 1, global-average-pooled gradients
        return F.relu((weights * activations).sum(dim=1))


class HiResCAM(ActivationCAM):
    """HiResCAM (Draelos & Carin 2020): the element-wise product of gradients and activations, summed over channels.

    Unlike Grad-CAM it does not average gradients over space, so the map is faithful to the model's computation
    when the head is linear after global pooling.
    """

    name = "hirescam"

    def cam(self, activations: torch.Tensor, gradients: torch.Tensor | None) -> torch.Tensor:
        return F.relu((gradients * activations).sum(dim=1))


class XGradCAM(ActivationCAM):
    """XGrad-CAM (Fu et al. 2020): weights sum(g * A) / sum(A) per channel, chosen to satisfy their axioms."""

    name = "xgradcam"

    def cam(self, activations: torch.Tensor, gradients: torch.Tensor | None) -> torch.Tensor:
        total = activations.sum(dim=(2, 3), keepdim=True)
        weights = (gradients * activations).sum(dim=(2, 3), keepdim=True) / (total + 1e-7)
        return F.relu((weights * activations).sum(dim=1))


class GradCAMPlusPlus(ActivationCAM):
    """Grad-CAM++ (Chattopadhay et al. 2018): pixel-wise weights alpha on the positive gradients.

    Uses the paper's closed form for an exponential score (eq. 19), where second and third derivatives are
    powers of the first: alpha = g^2 / (2 g^2 + sum_ab(A) g^3), zero where g is zero.
    """

    name = "gradcam++"

    def cam(self, activations: torch.Tensor, gradients: torch.Tensor | None) -> torch.Tensor:
        squared = gradients.pow(2)
        denominator = 2 * squared + activations.sum(dim=(2, 3), keepdim=True) * squared * gradients
        alpha = torch.where(gradients != 0, squared / (denominator + 1e-6), torch.zeros_like(gradients))
        weights = (alpha * F.relu(gradients)).sum(dim=(2, 3), keepdim=True)
        return F.relu((weights * activations).sum(dim=1))


class LayerCAM(ActivationCAM):
    """LayerCAM (Jiang et al. 2021): each activation weighted by its own positive gradient."""

    name = "layercam"

    def cam(self, activations: torch.Tensor, gradients: torch.Tensor | None) -> torch.Tensor:
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

    def cam(self, activations: torch.Tensor, gradients: torch.Tensor | None) -> torch.Tensor:
        return F.relu(first_component(activations))


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
