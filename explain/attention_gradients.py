"""Class-specific maps of vision transformers from their attention weights and the gradients of the class score with
respect to them: gradient-weighted attention rollout (Chefer et al.) and LeGrad (Bousselham et al.).

Grad-CAM on a transformer's tokens reads one layer's activations, weighted by one gradient per channel; on the ViTs
trained here its maps lost to random maps on some measures and were blank on many images (issue 26). These methods
read what a transformer actually mixes its tokens with, the attention probabilities, in every layer:

- **Gradient-weighted rollout** (Chefer, Gur & Wolf 2021, "Generic Attention-model Explainability for Interpreting
  Bi-Modal and Encoder-Decoder Transformers", eq. 5-6, the variant without LRP): each layer's attention A (heads, N,
  N) is weighted by the gradient of the class score, Ā = mean over heads of (∇A ⊙ A)+, and relevance is rolled up
  from the identity, R <- R + Ā R. The map is the class token's row of R over the patch tokens.
- **LeGrad** (Bousselham et al. 2024, "LeGrad: An Explainability Method for Vision Transformers via Feature
  Formation Sensitivity", sec. 3): every layer's tokens are scored by the model's own head (final norm, pooling,
  classifier), s^l; the map of layer l is the mean over heads and query tokens of ReLU(∂s^l / ∂A^l), and the map is
  their mean over layers, over the patch tokens.

Both run one forward pass with eager attention (for the call only: SDPA and flash attention return no weights)
and take gradients with `torch.autograd.grad` to the attention weights only: with frozen parameters no weight
gradient is computed and nothing before the first attention is walked back through. LeGrad takes one gradient per
layer, s^l to A^l; each walks back only through layer l and the head, so together they cost about one backward pass.
With ``create_graph`` the maps stay differentiable with respect to the parameters, which explanation-enhanced
distillation needs for its student.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack

import torch
from torch import nn

from explain.base import AttributionMethod
from explain.explanation import Attribution
from explain.hooks import eager_attention, every_layer_through_the_head
from explain.layers import forward_kwargs, is_transformer, model_type, token_grid
from explain.targets import TargetSpec, resolve_targets
from pipelines.errors import ConfigError


def gradient_weighted_rollout(attentions: Sequence[torch.Tensor], gradients: Sequence[torch.Tensor]) -> torch.Tensor:
    """Chefer et al.'s relevance of every token to every token, through all layers (first to last).

    Args:
        attentions: One (B, heads, N, N) attention-probability tensor per layer.
        gradients: The class score's gradient with respect to each, same shapes.

    Returns:
        float32 (B, N, N): row i is how relevant each input token is to token i's output (the identity plus what
        the layers add).
    """
    relevance = None
    for attention, gradient in zip(attentions, gradients, strict=True):
        weighted = (gradient.float() * attention.float()).clamp(min=0).mean(dim=1)  # (B, N, N)
        if relevance is None:
            relevance = torch.eye(weighted.shape[-1], device=weighted.device).expand_as(weighted)
        relevance = relevance + weighted @ relevance
    if relevance is None:
        raise ConfigError("Gradient-weighted rollout needs the attention weights of at least one layer.")
    return relevance


def legrad_relevance(gradients: Sequence[torch.Tensor]) -> torch.Tensor:
    """LeGrad's relevance of each token: the mean over layers of mean over heads and query tokens of ReLU(∂s^l/∂A^l).

    Args:
        gradients: Per layer, the gradient (B, heads, N, N) of that layer's class score with respect to its own
            attention probabilities.

    Returns:
        float32 (B, N): how much each (key) token's attention weights raise the class score, over all layers.
    """
    if not gradients:
        raise ConfigError("LeGrad needs the attention weights of at least one layer.")
    per_layer = [gradient.float().clamp(min=0).mean(dim=(1, 2)) for gradient in gradients]  # (B, N) each
    return torch.stack(per_layer).mean(dim=0)


def attention_forward(
    model: nn.Module, pixel_values: torch.Tensor, every_layer: bool
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """One forward pass with eager attention: the attention weights of every layer, attached to the graph, and the
    logits.

    The input is made to require a gradient so that the attention weights do even when the parameters are frozen;
    `torch.autograd.grad` to the attention weights stops there, so nothing is computed for the input itself.

    Returns:
        attentions: One (B, heads, N, N) tensor per layer.
        layer_logits: (L, B, classes), each layer's tokens through the model's head, the model's own logits last
            (`explain.hooks.every_layer_through_the_head`), with `every_layer`; else (1, B, classes).
    """
    with ExitStack() as stack:
        stack.enter_context(torch.enable_grad())
        stack.enter_context(eager_attention(model))
        layers = stack.enter_context(every_layer_through_the_head(model)) if every_layer else 1
        inputs = pixel_values.detach().requires_grad_()
        output = model(pixel_values=inputs, output_attentions=True, **forward_kwargs(model, pixel_values))
    attentions = [attention for attention in (output.attentions or ()) if attention is not None]
    if not attentions:
        raise ConfigError(f"This {model_type(model)} model returned no attention weights.")
    return attentions, output.logits.unflatten(0, (layers, -1))


def relevance_from_attentions(
    method: str,
    attentions: Sequence[torch.Tensor],
    layer_logits: torch.Tensor,
    targets: torch.Tensor,
    retain_graph: bool = False,
    create_graph: bool = False,
) -> torch.Tensor:
    """Each token's relevance to the class `targets` names, from one forward pass's attentions and logits.

    Args:
        method: ``"gradient_rollout"`` or ``"legrad"``.
        attentions: One (B, heads, N, N) tensor per layer, from the forward pass that gave `layer_logits`.
        layer_logits: (L, B, classes): each layer's tokens through the model's head (LeGrad), or (1, B, classes)
            holding the model's logits (gradient rollout reads only the last).
        targets: int64 (B,), the class each map explains.
        retain_graph: Keep the forward graph for another target's gradients.
        create_graph: Keep the result differentiable with respect to the parameters.

    Returns:
        float32 (B, N): the class token's row of the rollout, or LeGrad's per-token relevance.
    """
    keep = retain_graph or create_graph
    if method == "gradient_rollout":
        score = layer_logits[-1].gather(1, targets[:, None]).sum()
        gradients = torch.autograd.grad(score, attentions, retain_graph=keep, create_graph=create_graph)
        if not create_graph:
            attentions = [attention.detach() for attention in attentions]
        return gradient_weighted_rollout(attentions, gradients)[:, 0]
    if len(layer_logits) != len(attentions):
        raise ConfigError(
            f"LeGrad scored {len(layer_logits)} layers but the model returned {len(attentions)} attention maps."
        )
    gradients = []
    for index, (logits, attention) in enumerate(zip(layer_logits, attentions)):
        score = logits.gather(1, targets[:, None]).sum()
        last = index == len(attentions) - 1
        (gradient,) = torch.autograd.grad(score, attention, retain_graph=keep or not last, create_graph=create_graph)
        gradients.append(gradient)
    return legrad_relevance(gradients)


def patch_relevance_grid(model: nn.Module, relevance: torch.Tensor, input_size: tuple[int, int]) -> torch.Tensor:
    """(B, N) token relevance -> (B, h, w) over the patch grid (prefix tokens dropped, as the config defines them)."""
    prefix, grid_h, grid_w = token_grid(model, relevance.shape[1], *input_size)
    return relevance[:, prefix:].reshape(-1, grid_h, grid_w)


def attention_maps(
    model: nn.Module,
    pixel_values: torch.Tensor,
    targets: torch.Tensor | None = None,
    method: str = "gradient_rollout",
    create_graph: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw maps of an attention-gradient method at the patch grid, and the model's logits from the same forward pass.

    The model runs as it is (train or eval mode, its own dtype; callers freeze parameters they want no gradient for),
    the counterpart of `explain.cam.class_activation_maps` for these methods.

    Args:
        model: A vision transformer classifier with a class token.
        pixel_values: (B, C, H, W), preprocessed for the model.
        targets: int64 (B,), the class each map explains; None for the predicted class.
        method: ``"gradient_rollout"`` or ``"legrad"``.
        create_graph: Keep the maps differentiable with respect to the parameters.

    Returns:
        maps: float32 (B, h, w), non-negative, not scaled.
        logits: (B, L).
    """
    check_transformer(method, model)
    attentions, layer_logits = attention_forward(model, pixel_values, every_layer=method == "legrad")
    logits = layer_logits[-1]
    resolved = resolve_targets(logits, targets)[:, 0] if targets is None else targets
    with torch.enable_grad():  # create_graph records the gradients' own graph only in grad mode
        relevance = relevance_from_attentions(method, attentions, layer_logits, resolved, create_graph=create_graph)
    return patch_relevance_grid(model, relevance, pixel_values.shape[-2:]), logits


def check_transformer(method: str, model: nn.Module) -> None:
    reason = transformer_reason(method, model)
    if reason:
        raise ConfigError(reason)


def transformer_reason(method: str, model: nn.Module) -> str | None:
    if is_transformer(model):
        return None
    return f"The {method} method needs a vision transformer with a class token (ViT, DeiT, BEiT, DINOv2)"


class AttentionGradientMethod(AttributionMethod):
    """Base of the attention-gradient methods: one forward pass with attention weights, gradients to them per target.

    Args:
        model: A vision transformer classifier with a class token (ViT, DeiT with its distillation token, BEiT,
            DINOv2 with or without registers).
        batch_size: Images per pass.
        dtype: Compute dtype (the gradients and relevance are accumulated in float32).
    """

    uses_target_layer = False
    every_layer = False

    def __init__(self, model: nn.Module, batch_size: int | None = 64, dtype: torch.dtype | None = None) -> None:
        super().__init__(model, None, batch_size, dtype)

    @classmethod
    def unsupported_reason(cls, model: nn.Module) -> str | None:
        return transformer_reason(cls.name, model)

    def attribute(self, pixel_values: torch.Tensor, targets: TargetSpec) -> Attribution:
        size = pixel_values.shape[-2:]
        with self.autocast():
            attentions, layer_logits = attention_forward(self.model, pixel_values, self.every_layer)
        resolved, scores = self.targets_and_scores(layer_logits[-1], targets)
        maps = []
        for column in range(resolved.shape[1]):
            last = column == resolved.shape[1] - 1
            relevance = relevance_from_attentions(
                self.name, attentions, layer_logits, resolved[:, column], retain_graph=not last
            )
            maps.append(patch_relevance_grid(self.model, relevance, size))
        return Attribution(torch.stack(maps, dim=1), resolved, scores)  # raw (B, K, h, w)


class GradientRollout(AttentionGradientMethod):
    """Chefer et al.'s gradient-weighted attention rollout: class-specific, every layer, no LRP."""

    name = "gradient_rollout"


class LeGrad(AttentionGradientMethod):
    """LeGrad: every layer's attention sensitivity to that layer's own class score, averaged over layers."""

    name = "legrad"
    every_layer = True


ATTENTION_GRADIENT_METHODS: dict[str, type[AttentionGradientMethod]] = {
    method.name: method for method in (GradientRollout, LeGrad)
}
