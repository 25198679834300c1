"""Grad-CAM computed by Captum's `LayerGradCam`, the reference the lean pass is checked against.

For CNNs Captum reads the target layer's feature map directly. For vision transformers it reads a token-reshaping
tap (`explain.hooks.grid_tap`): an `nn.Identity` that receives the patch tokens as a (B, C, h, w) grid and whose
output the model then uses, so Captum's gradients and spatial means are those of the patch grid.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
from captum.attr import LayerGradCam
from torch import nn

from explain.base import AttributionMethod, forward_logits
from explain.explanation import Attribution
from explain.hooks import capture_output, grid_tap
from explain.targets import TargetSpec


class CaptumGradCAM(AttributionMethod):
    """Grad-CAM by Captum's `LayerGradCam` (with ``relu_attributions=True``), upsampled and scaled like the others.

    Costs one forward pass more than `explain.GradCAM` (to find the predicted class and whether the layer gives
    tokens) and lets Captum run its own forward and backward per target.
    """

    name = "captum_gradcam"

    def __init__(
        self,
        model: nn.Module,
        target_layer: str | nn.Module | None = None,
        batch_size: int | None = 64,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(model, target_layer, batch_size, dtype)
        self.tap = nn.Identity()

    def attribute(self, pixel_values: torch.Tensor, targets: TargetSpec) -> Attribution:
        height, width = pixel_values.shape[-2:]
        with torch.no_grad(), capture_output(self.layer.module, differentiable=False) as captured:
            logits = self.logits(pixel_values)
        resolved, scores = self.targets_and_scores(logits, targets)
        tokens = captured.value.ndim == 3
        layer = self.tap if tokens else self.layer.module
        gradcam = LayerGradCam(lambda inputs: forward_logits(self.model, inputs), layer)
        reshaping = grid_tap(self.model, self.layer.module, self.tap, (height, width)) if tokens else nullcontext()
        maps = []
        with reshaping, self.autocast():
            for column in range(resolved.shape[1]):
                layer_map = gradcam.attribute(pixel_values, target=resolved[:, column], relu_attributions=True)
                maps.append(layer_map[:, 0].float())  # (B, h, w)
        return Attribution(torch.stack(maps, dim=1), resolved, scores)
