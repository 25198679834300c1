"""Structured pruning with torch-pruning's DepGraph: whole channels removed at one ratio everywhere (L2 magnitude of
each coupled group), so that the pruned shapes fit a plain config: a ResNet's ``embedding_size`` and ``hidden_sizes``;
a ViT/DeiT's ``hidden_size``, ``intermediate_size`` and number of heads (whole heads go, each keeps its width, written
as ``head_dim``). The new config rebuilds the model, the pruned weights are loaded into it strictly, and its outputs
must equal the pruned model's before anything is written.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import PretrainedConfig, PreTrainedModel

from pipelines.errors import ConfigError
from trainers.report.cost import count_parameters

PRUNABLE = ("resnet", "vit", "deit")


# The pruned model rebuilt from its config must reproduce the pruned model's logits to float rounding.
REBUILD_TOLERANCE = 1e-4


def require_prunable(config: PretrainedConfig, source: str) -> None:
    """Refuse architectures whose pruned shapes this module cannot write back into a plain config."""
    if config.model_type not in PRUNABLE:
        raise ConfigError(
            f"{source} is a '{config.model_type}' model; structured pruning supports {', '.join(PRUNABLE)} only."
        )


def prune_structured(
    model: PreTrainedModel, ratio: float, input_shape: tuple[int, int, int]
) -> tuple[PreTrainedModel, dict[str, Any]]:
    """Remove `ratio` of every coupled channel group with torch-pruning's DepGraph and rebuild from a plain config.

    Args:
        model: A ResNet, ViT or DeiT classifier (fp32, on the CPU); it is pruned in place.
        ratio: Fraction of channels (ResNet), of the hidden size, MLP units and heads (ViT/DeiT) removed, in (0, 1).
        input_shape: (C, H, W) of one preprocessed image, for tracing.

    Returns:
        The model rebuilt from its pruned config with the pruned weights, and what was pruned.
    """
    import torch_pruning as tp

    require_prunable(model.config, model.name_or_path or "the model")
    model = model.float().cpu().eval()
    before = count_parameters(model)
    example = torch.randn(1, *input_shape)
    options = (_vit_options if model.config.model_type in ("vit", "deit") else _resnet_options)(model, ratio)
    pruner = tp.pruner.BasePruner(
        model,
        example,
        importance=tp.importance.GroupMagnitudeImportance(p=2),
        pruning_ratio=ratio,
        forward_fn=lambda module, inputs: module(pixel_values=inputs).logits,
        **options,
    )
    pruner.step()
    config = pruned_config(model)
    rebuilt = rebuild(model, config, example)
    after = count_parameters(rebuilt)
    details = {
        "library": "torch-pruning (DepGraph), L2 magnitude per coupled group, one ratio for every group",
        "ratio": ratio,
        "parameters_before": before,
        "parameters_after": after,
        "parameters_removed_fraction": 1 - after / before,
        "config_changes": {key: getattr(config, key) for key in _shape_fields(config)},
    }
    return rebuilt, details


def _classifiers(model: PreTrainedModel) -> list[torch.nn.Module]:
    """The output heads: their outputs are the labels, never pruned."""
    return [
        module for name, module in model.named_modules() if isinstance(module, torch.nn.Linear) and "classifier" in name
    ]


def _resnet_options(model: PreTrainedModel, ratio: float) -> dict[str, Any]:
    return {"ignored_layers": _classifiers(model)}


def _vit_options(model: PreTrainedModel, ratio: float) -> dict[str, Any]:
    """Whole heads go (each keeps its width, so the attention's scaling is unchanged), and the class/distillation
    tokens and position embeddings lose the same hidden channels as the rest of the residual stream."""
    heads = model.config.num_attention_heads
    num_heads = {
        projection: heads
        for module in model.modules()
        if hasattr(module, "q_proj")
        for projection in (module.q_proj, module.k_proj, module.v_proj)
    }
    embeddings = model.base_model.embeddings
    unwrapped = [
        (parameter, 2)  # (1, tokens, hidden): prune the last dimension
        for name in ("cls_token", "distillation_token", "mask_token", "position_embeddings")
        if isinstance(parameter := getattr(embeddings, name, None), torch.nn.Parameter)
    ]
    return {
        "ignored_layers": _classifiers(model),
        "num_heads": num_heads,
        "prune_num_heads": True,
        "prune_head_dims": False,
        "head_pruning_ratio": ratio,
        "unwrapped_parameters": unwrapped,
    }


def _shape_fields(config: PretrainedConfig) -> list[str]:
    if config.model_type == "resnet":
        return ["embedding_size", "hidden_sizes"]
    return ["hidden_size", "intermediate_size", "num_attention_heads", "head_dim"]


def pruned_config(model: PreTrainedModel) -> PretrainedConfig:
    """The config whose shapes are the pruned model's, read from its layers by structure."""
    config = model.config.__class__.from_dict(model.config.to_dict())
    if config.model_type == "resnet":
        base = model.base_model
        config.embedding_size = base.embedder.embedder.convolution.out_channels
        config.hidden_sizes = [_last_conv(stage).out_channels for stage in base.encoder.stages]
        return config
    attention = next(module for module in model.modules() if hasattr(module, "q_proj"))
    mlp = next(module for module in model.modules() if hasattr(module, "fc1"))
    config.hidden_size = attention.q_proj.in_features
    config.intermediate_size = mlp.fc1.out_features
    # Whole heads were removed: each keeps its width, which can no longer be read as hidden_size // heads.
    config.head_dim = attention.head_dim
    config.num_attention_heads = attention.q_proj.out_features // attention.head_dim
    return config


def _last_conv(stage: torch.nn.Module) -> torch.nn.Conv2d:
    return [module for module in stage.modules() if isinstance(module, torch.nn.Conv2d)][-1]


def rebuild(pruned: PreTrainedModel, config: PretrainedConfig, example: torch.Tensor) -> PreTrainedModel:
    """A fresh model of `config` holding `pruned`'s weights; refuses when shapes or outputs differ."""
    rebuilt = type(pruned)(config).eval()  # the same head class (e.g. DeiT with its distillation head)
    try:
        rebuilt.load_state_dict(pruned.state_dict(), strict=True)
    except RuntimeError as error:
        raise ConfigError(
            f"the pruned shapes do not fit a plain {config.model_type} config (try another --ratio): "
            f"{str(error).splitlines()[1].strip() if len(str(error).splitlines()) > 1 else error}"
        ) from None
    with torch.no_grad():
        difference = (rebuilt(pixel_values=example).logits - pruned(pixel_values=example).logits).abs().max()
    if difference > REBUILD_TOLERANCE:
        raise ConfigError(
            f"the model rebuilt from the pruned config differs from the pruned model by {difference:.2e} in its "
            "logits, so the config does not describe it."
        )
    return rebuilt
