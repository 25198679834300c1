"""The base class every attribution method derives from, and the classifier seen as ``pixel_values -> logits``.

The base class owns what all methods share (the shape of pytorch-grad-cam's `BaseCAM`): resolving the target layer,
the model's temporary state (eval mode, frozen parameters), batching, the compute dtype, upsampling to the input
resolution and scaling each map to [0, 1]. A subclass says only how it turns a batch into raw maps (`attribute`).
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any, ClassVar

import torch
from torch import nn
from transformers import PreTrainedModel

from explain.explanation import Attribution, Explanation, scale_to_unit, upsample
from explain.graphs import GraphedBatches
from explain.hooks import autocast, eval_mode, frozen_parameters
from explain.layers import TargetLayer, check_pixel_values, forward_kwargs, resolve_target_layer
from explain.targets import TargetSpec, check_targets, resolve_targets, split_targets, target_scores
from pipelines.errors import ConfigError
from pipelines.labels import is_multi_label_model


def forward_logits(model: nn.Module, pixel_values: torch.Tensor, **kwargs: Any) -> torch.Tensor:
    """Logits (B, L) of a transformers classifier, or of any module that returns logits or an output with `.logits`."""
    if isinstance(model, PreTrainedModel):
        output = model(pixel_values=pixel_values, **forward_kwargs(model, pixel_values), **kwargs)
    else:
        output = model(pixel_values, **kwargs)
    return output.logits if hasattr(output, "logits") else output


class LogitsModule(nn.Module):
    """A classifier seen as ``pixel_values -> logits``, the interface Captum and pytorch-grad-cam call."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return forward_logits(self.model, pixel_values)


class AttributionMethod:
    """Base class: explain a batch of images with one method.

    Args:
        model: An image classifier: a transformers `PreTrainedModel`, or any module mapping (B, C, H, W) pixel
            values to logits (B, L) (then name the target layer).
        target_layer: A dotted module name or a submodule; None resolves it by structure (see
            `explain.layers.resolve_target_layer`). Ignored by methods that read no layer.
        batch_size: Images per forward pass; None runs all at once.
        dtype: The compute dtype. None: the parameters' dtype. A lower precision than the parameters' (e.g.
            ``torch.bfloat16`` for an fp32 model) runs the model under autocast.
        cuda_graphs: On a GPU, replay batches of a shape already seen as a CUDA graph (`explain.graphs`), for the
            methods that allow it and the predicted class or ``"all"`` as targets. Weights updated in place or
            replaced are seen (each graph is keyed on their addresses); a hook added to the model afterwards is
            not run by a replay.
    """

    name: ClassVar[str] = "attribution"
    uses_target_layer: ClassVar[bool] = True
    # A batch's work is device work only: no value read back to the host and no shape that depends on data, so it
    # can be captured as a CUDA graph.
    graphable: ClassVar[bool] = False
    # The map is the same whatever class it is asked for (the target only picks the score reported beside it).
    class_agnostic: ClassVar[bool] = False

    def __init__(
        self,
        model: nn.Module,
        target_layer: str | nn.Module | None = None,
        batch_size: int | None = 64,
        dtype: torch.dtype | None = None,
        cuda_graphs: bool = True,
    ) -> None:
        problem = self.unsupported_reason(model)
        if problem:
            raise ConfigError(problem)
        if batch_size is not None and batch_size < 1:
            raise ConfigError(f"batch_size is {batch_size}; it must be at least 1.")
        self.model = model
        self.layer: TargetLayer | None = resolve_target_layer(model, target_layer) if self.uses_target_layer else None
        self.batch_size = batch_size
        self.dtype = dtype
        self.graphs = GraphedBatches(model) if cuda_graphs and self.graphable else None
        # False keeps maps at the method's own grid (a CAM's layer grid), as the maps dataset stores them.
        self.upsample = True

    @classmethod
    def unsupported_reason(cls, model: nn.Module) -> str | None:
        """Why this method cannot explain `model`, or None when it can."""
        return None

    @property
    def multi_label(self) -> bool:
        return is_multi_label_model(self.model)

    @property
    def num_labels(self) -> int | None:
        return getattr(getattr(self.model, "config", None), "num_labels", None)

    @property
    def parameter_dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def __call__(self, pixel_values: torch.Tensor, targets: TargetSpec = None) -> Explanation:
        """Explain a batch.

        Args:
            pixel_values: float (B, C, H, W), preprocessed as the model expects (`pipelines.DevicePreprocess`).
            targets: None for the predicted class, an int, a class per image (B,), or ``"all"`` for every label.

        Returns:
            An `Explanation` with maps (N, H, W) in [0, 1], N = B (or B * L for ``"all"``).
        """
        check_pixel_values(self.model, pixel_values)
        if self.num_labels is not None:
            check_targets(targets, self.num_labels, pixel_values.shape[0])
        pixel_values = pixel_values.to(self.device)
        if pixel_values.is_floating_point():
            pixel_values = pixel_values.to(self.parameter_dtype)
        step = self.batch_size or pixel_values.shape[0]
        parts = []
        with self.prepared():
            for start in range(0, pixel_values.shape[0], step):
                stop = start + step
                batch = self.run_batch(pixel_values[start:stop], split_targets(targets, start, stop))
                batch.image_index += start
                parts.append(batch)
        return Explanation.concat(parts)

    def prepared(self) -> ExitStack:
        """The model's state while explaining: eval mode and frozen parameters, both undone on exit."""
        stack = ExitStack()
        stack.enter_context(eval_mode(self.model))
        stack.enter_context(frozen_parameters(self.model))
        return stack

    def run_batch(self, pixel_values: torch.Tensor, targets: TargetSpec) -> Explanation:
        """`explain_batch`, through a CUDA graph where one applies. Per-image targets stay eager: the graph would
        need them as device input, and checking them reads them on the host."""
        if self.graphs is not None and pixel_values.is_cuda and (targets is None or isinstance(targets, str)):
            return self.graphs(lambda batch: self.explain_batch(batch, targets), pixel_values, key=targets)
        return self.explain_batch(pixel_values, targets)

    def explain_batch(self, pixel_values: torch.Tensor, targets: TargetSpec) -> Explanation:
        batch, _, height, width = pixel_values.shape
        result = self.attribute(pixel_values, targets)
        per_image = result.targets.shape[1]
        size = (height, width) if self.upsample else tuple(result.raw.shape[-2:])
        maps = scale_to_unit(upsample(result.raw.detach().flatten(0, 1), size))  # (B * K, H, W) or (B * K, h, w)
        attributions = None if result.attributions is None else result.attributions.detach().flatten(0, 1).float()
        return Explanation(
            maps=maps,
            target=result.targets.flatten(),
            score=result.scores.detach().flatten().float(),
            image_index=torch.arange(batch, device=maps.device).repeat_interleave(per_image),
            method=self.name,
            attributions=attributions,
        )

    def autocast(self) -> Any:
        """Autocast to the compute dtype when it is lower than the parameters' dtype."""
        return autocast(self.device, self.dtype, self.parameter_dtype)

    def logits(self, pixel_values: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """The forward pass in the compute dtype."""
        with self.autocast():
            return forward_logits(self.model, pixel_values, **kwargs)

    def targets_and_scores(self, logits: torch.Tensor, targets: TargetSpec) -> tuple[torch.Tensor, torch.Tensor]:
        """Targets (B, K) and their probabilities (B, K) from the logits of the explained forward pass."""
        resolved = resolve_targets(logits, targets)
        return resolved, target_scores(logits, resolved, self.multi_label)

    def attribute(self, pixel_values: torch.Tensor, targets: TargetSpec) -> Attribution:
        """Raw maps for one batch; each subclass implements this.

        Args:
            pixel_values: (B, C, H, W) in the parameters' dtype, on the model's device.
            targets: See `explain.targets.TargetSpec`, already split to this batch.

        Returns:
            An `Attribution` with raw maps (B, K, h, w).
        """
        raise NotImplementedError
