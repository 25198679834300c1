"""Explain what an image classifier looks at: Grad-CAM family, guided backpropagation, attention rollout and its
class-specific gradient-weighted variants (gradient rollout, LeGrad), pictures.

    from explain import GradCAM
    explanation = GradCAM(model)(pixel_values)          # maps (B, H, W) in [0, 1], target, score

Every method is a small subclass of `AttributionMethod`, which owns the target layer, hooks, batching, dtype and
upsampling. `make_method(name, model)` builds one by name; `methods_for(model)` lists those that fit a model.
"""

import pipelines.quiet  # noqa: F401  first: drops upstream deprecation noise before transformers loads

# isort: split
from explain.attention_gradients import GradientRollout, LeGrad, gradient_weighted_rollout, legrad_relevance
from explain.base import AttributionMethod, LogitsModule, forward_logits
from explain.cam import ActivationCAM, EigenCAM, GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, XGradCAM
from explain.captum_backend import CaptumGradCAM
from explain.explanation import Explanation, scale_to_unit, upsample
from explain.guided import GuidedBackprop, GuidedGradCAM
from explain.layers import TargetLayer, prefix_token_count, resolve_target_layer
from explain.registry import METHODS, make_method, methods_for
from explain.rollout import AttentionRollout, attention_rollout

__all__ = [
    "METHODS",
    "ActivationCAM",
    "AttentionRollout",
    "AttributionMethod",
    "CaptumGradCAM",
    "EigenCAM",
    "Explanation",
    "GradCAM",
    "GradCAMPlusPlus",
    "GradientRollout",
    "GuidedBackprop",
    "GuidedGradCAM",
    "HiResCAM",
    "LayerCAM",
    "LeGrad",
    "LogitsModule",
    "TargetLayer",
    "XGradCAM",
    "attention_rollout",
    "forward_logits",
    "gradient_weighted_rollout",
    "legrad_relevance",
    "make_method",
    "methods_for",
    "prefix_token_count",
    "resolve_target_layer",
    "scale_to_unit",
    "upsample",
]
