"""Attention rollout (Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers") for vision transformers."""

from __future__ import annotations

import torch
from torch import nn

from explain.base import AttributionMethod
from explain.explanation import Attribution
from explain.hooks import eager_attention
from explain.layers import forward_kwargs, is_transformer, model_type, token_grid
from explain.targets import TargetSpec
from pipelines.errors import ConfigError

HEAD_FUSIONS = ("mean", "max", "min")


def check_options(head_fusion: str, discard_ratio: float) -> None:
    if head_fusion not in HEAD_FUSIONS:
        raise ConfigError(f"head_fusion is '{head_fusion}'; use one of {', '.join(HEAD_FUSIONS)}.")
    if not 0.0 <= discard_ratio < 1.0:
        raise ConfigError(f"discard_ratio is {discard_ratio}; it must lie in [0, 1).")


def attention_rollout(
    attentions: list[torch.Tensor] | tuple[torch.Tensor, ...], head_fusion: str = "mean", discard_ratio: float = 0.0
) -> torch.Tensor:
    """How much each token's final representation draws on each input token, through all layers.

    Each layer's heads are fused, the residual connection is modelled as 0.5 * A + 0.5 * I with rows renormalised
    (Abnar & Zuidema 2020, sec. 3), and the layers are multiplied from first to last. `head_fusion` and
    `discard_ratio` are the options of Gildenblat's reference implementation (vit-explain): fuse heads by their
    mean, max or min, and zero the lowest `discard_ratio` of each image's fused weights (the class token's
    attention to itself is always kept) to suppress the near-uniform background.

    Args:
        attentions: One (B, heads, N, N) attention-probability tensor per layer.
        head_fusion: ``"mean"``, ``"max"`` or ``"min"``.
        discard_ratio: Fraction in [0, 1) of the lowest fused weights set to zero in each layer.

    Returns:
        float32 (B, N, N): row i says how token i's output is made of the input tokens.
    """
    check_options(head_fusion, discard_ratio)
    rollout = None
    for attention in attentions:
        attention = attention.float()
        fused = {"mean": attention.mean(dim=1), "max": attention.amax(dim=1), "min": attention.amin(dim=1)}[head_fusion]
        batch, tokens, _ = fused.shape  # (B, N, N)
        if discard_ratio > 0:
            flat = fused.reshape(batch, -1).clone()
            count = int(flat.shape[1] * discard_ratio)
            lowest = flat[:, 1:].topk(count, dim=1, largest=False).indices + 1  # never index 0: class -> class
            flat.scatter_(1, lowest, 0.0)
            fused = flat.reshape(batch, tokens, tokens)
        identity = torch.eye(tokens, device=fused.device, dtype=fused.dtype)
        step = 0.5 * fused + 0.5 * identity
        step = step / step.sum(dim=-1, keepdim=True)
        rollout = step if rollout is None else step @ rollout
    if rollout is None:
        raise ConfigError("Attention rollout needs the attention weights of at least one layer.")
    return rollout


class AttentionRollout(AttributionMethod):
    """The class token's rolled-out attention to the patch tokens, as a map over the patch grid.

    Class-agnostic: the target and score are reported, the map does not depend on them. The forward pass runs
    with eager attention (for this call only) because SDPA and flash attention return no attention weights.

    Args:
        model: A vision transformer classifier (ViT, DeiT, BEiT, DINOv2).
        head_fusion: ``"mean"`` (the paper), ``"max"`` or ``"min"``.
        discard_ratio: Fraction of the lowest attention weights dropped per layer (0 in the paper).
        batch_size: Images per pass.
        dtype: Compute dtype.
    """

    name = "attention_rollout"
    uses_target_layer = False
    class_agnostic = True

    def __init__(
        self,
        model: nn.Module,
        head_fusion: str = "mean",
        discard_ratio: float = 0.0,
        batch_size: int | None = 64,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__(model, None, batch_size, dtype)
        check_options(head_fusion, discard_ratio)
        self.head_fusion = head_fusion
        self.discard_ratio = discard_ratio

    @classmethod
    def unsupported_reason(cls, model: nn.Module) -> str | None:
        if not is_transformer(model):
            return (
                f"attention_rollout needs a vision transformer with a class token (ViT, DeiT, BEiT, DINOv2); this "
                f"{model_type(model)} model has none."
            )
        return None

    def attribute(self, pixel_values: torch.Tensor, targets: TargetSpec) -> Attribution:
        height, width = pixel_values.shape[-2:]
        with torch.no_grad(), eager_attention(self.model), self.autocast():
            output = self.model(
                pixel_values=pixel_values, output_attentions=True, **forward_kwargs(self.model, pixel_values)
            )
        attentions = [attention for attention in (output.attentions or ()) if attention is not None]
        if not attentions:
            raise ConfigError(f"This {model_type(self.model)} model returned no attention weights to roll out.")
        resolved, scores = self.targets_and_scores(output.logits, targets)
        rollout = attention_rollout(attentions, self.head_fusion, self.discard_ratio)  # (B, N, N)
        prefix, grid_h, grid_w = token_grid(self.model, rollout.shape[1], height, width)
        # Row 0 is the class token, whose output the classifier reads.
        grid = rollout[:, 0, prefix:].reshape(-1, 1, grid_h, grid_w)
        return Attribution(grid.expand(-1, resolved.shape[1], -1, -1), resolved, scores)
