"""LeGrad (explain/attention_gradients.py) against the reference implementation in torchcam 0.5.0, on the same
weights: a tiny transformers ViT copied weight by weight into a torchvision VisionTransformer, the only kind of block
torchcam's LeGrad runs on (it needs `self_attention: nn.MultiheadAttention`)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

pytest.importorskip("torchcam", reason="the reference LeGrad is torchcam's: pip install -e '.[dev]'")

from torchcam.methods import LeGrad as ReferenceLeGrad  # noqa: E402
from torchvision.models.vision_transformer import VisionTransformer  # noqa: E402
from transformers import ViTForImageClassification  # noqa: E402

from explain import LeGrad, scale_to_unit  # noqa: E402
from explain.attention_gradients import attention_maps  # noqa: E402

from helpers.explain_models import images, tiny  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # the models are tiny: one thread is faster


def torchvision_copy(model: ViTForImageClassification) -> VisionTransformer:
    """A torchvision VisionTransformer of the same shape holding the same weights (no dropout, LayerNorm eps 1e-6,
    torchvision's own, so the transformers model must be built with layer_norm_eps=1e-6)."""
    config, vit = model.config, model.vit
    copy = VisionTransformer(
        image_size=config.image_size,
        patch_size=config.patch_size,
        num_layers=config.num_hidden_layers,
        num_heads=config.num_attention_heads,
        hidden_dim=config.hidden_size,
        mlp_dim=config.intermediate_size,
        num_classes=config.num_labels,
    ).eval()
    with torch.no_grad():
        copy.conv_proj.load_state_dict(vit.embeddings.patch_embeddings.projection.state_dict())
        copy.class_token.copy_(vit.embeddings.cls_token)
        copy.encoder.pos_embedding.copy_(vit.embeddings.position_embeddings)
        for source, block in zip(vit.layers, copy.encoder.layers, strict=True):
            attention = source.attention
            block.ln_1.load_state_dict(source.layernorm_before.state_dict())
            projections = (attention.q_proj, attention.k_proj, attention.v_proj)
            block.self_attention.in_proj_weight.copy_(torch.cat([linear.weight for linear in projections]))
            block.self_attention.in_proj_bias.copy_(torch.cat([linear.bias for linear in projections]))
            block.self_attention.out_proj.load_state_dict(attention.o_proj.state_dict())
            block.ln_2.load_state_dict(source.layernorm_after.state_dict())
            block.mlp[0].load_state_dict(source.mlp.fc1.state_dict())
            block.mlp[3].load_state_dict(source.mlp.fc2.state_dict())
        copy.encoder.ln.load_state_dict(vit.layernorm.state_dict())
        copy.heads.head.load_state_dict(model.classifier.state_dict())
    return copy


def class_token_head(copy: VisionTransformer):
    """What the model's own classifier reads from a layer's tokens: final LayerNorm, class token, linear head.
    torchcam's default projection mean-pools the tokens first (for CLIP-style models), which is not this model's."""
    return lambda tokens: copy.heads(copy.encoder.ln(tokens[:, 0]))


def reference_maps(
    copy: VisionTransformer, pixel_values: torch.Tensor, targets: torch.Tensor, **options: object
) -> torch.Tensor:
    """torchcam's LeGrad over every block, unnormalised: (B, K, h, w) for targets (B, K)."""
    blocks: list[nn.Module | str] = list(copy.encoder.layers)
    with ReferenceLeGrad(copy, blocks, prefix_tokens=1, **options) as extractor:
        logits = copy(pixel_values)
        maps = [
            extractor(column.tolist(), logits, normalized=False, retain_graph=True)[0] for column in targets.unbind(1)
        ]
    return torch.stack(maps, dim=1)


def test_the_torchvision_copy_computes_the_same_logits() -> None:
    model = tiny("vit", layer_norm_eps=1e-6)
    pixel_values = images(3)
    with torch.no_grad():
        expected = model(pixel_values=pixel_values).logits
        assert torch.allclose(torchvision_copy(model)(pixel_values), expected, atol=1e-5)


@pytest.mark.parametrize("targets", ["all", [2, 0, 1]], ids=["every class", "one class per image"])
def test_legrad_maps_equal_torchcams_on_the_same_weights(targets: str | list[int]) -> None:
    model = tiny("vit", layer_norm_eps=1e-6)
    copy = torchvision_copy(model)
    pixel_values = images(3)
    method = LeGrad(model)
    method.upsample = False  # the 4 x 4 patch grid, min-max scaled per map
    explanation = method(pixel_values, targets)
    resolved = explanation.target.reshape(3, -1)  # (B, K), image by image as the maps are
    if targets == "all":
        assert torch.equal(resolved, torch.arange(3).repeat(3, 1))

    reference = reference_maps(copy, pixel_values, resolved, score_projection=class_token_head(copy))
    assert reference.shape == (3, resolved.shape[1], 4, 4)
    # The unscaled maps agree too: the same sum over layers, heads and queries, not only the same shape of map.
    raw = torch.stack(
        [attention_maps(model, pixel_values, column, "legrad")[0] for column in resolved.unbind(1)], dim=1
    )
    assert torch.allclose(raw, reference, rtol=1e-5, atol=1e-5 * reference.abs().max().item())
    # torchcam's own normalisation divides by (max - min + 1e-8): on maps that span about 1e-3 that is a 1e-5 relative
    # difference, so its raw maps are scaled here as the project scales every map.
    assert (explanation.maps - scale_to_unit(reference.flatten(0, 1))).abs().max() < 1e-5


def test_the_comparison_sees_the_score_projection() -> None:
    # torchcam's default (the mean of the tokens through the final norm and head) gives other maps: the agreement
    # above is not one that any per-layer score would pass.
    model = tiny("vit", layer_norm_eps=1e-6)
    copy = torchvision_copy(model)
    pixel_values = images(3)
    method = LeGrad(model)
    method.upsample = False
    explanation = method(pixel_values, "all")
    mean_pooled = reference_maps(copy, pixel_values, explanation.target.reshape(3, -1))
    assert (explanation.maps - scale_to_unit(mean_pooled.flatten(0, 1))).abs().max() > 0.1
