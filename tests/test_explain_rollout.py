"""Attention rollout: hand-computed values, head fusion and discard ratio, eager attention for that call only."""

from __future__ import annotations

import pytest
import torch

from explain import AttentionRollout, attention_rollout, scale_to_unit, upsample
from pipelines.errors import ConfigError

from helpers.explain_models import images, tiny

pytestmark = pytest.mark.usefixtures("one_thread")  # the models are tiny: one thread is faster


def test_one_layer_rollout_by_hand() -> None:
    # Two tokens, one head: A = [[0.6, 0.4], [0.2, 0.8]]. With the residual, 0.5 A + 0.5 I = [[0.8, 0.2], [0.1, 0.9]]
    # (rows already sum to 1).
    attention = torch.tensor([[0.6, 0.4], [0.2, 0.8]])[None, None]  # (1, 1, 2, 2)
    assert torch.allclose(attention_rollout([attention])[0], torch.tensor([[0.8, 0.2], [0.1, 0.9]]))
    # Two layers multiply, the later one on the left.
    second = torch.tensor([[0.0, 1.0], [1.0, 0.0]])[None, None]  # 0.5 A + 0.5 I = [[0.5, 0.5], [0.5, 0.5]]
    rolled = attention_rollout([attention, second])[0]
    assert torch.allclose(rolled, torch.tensor([[0.45, 0.55], [0.45, 0.55]]))


def test_head_fusion_and_discard_ratio() -> None:
    heads = torch.tensor([[[0.9, 0.1], [0.5, 0.5]], [[0.3, 0.7], [0.1, 0.9]]])[None]  # (1, 2 heads, 2, 2)
    mean = attention_rollout([heads], "mean")[0]  # fused [[0.6, 0.4], [0.3, 0.7]]
    assert torch.allclose(mean, torch.tensor([[0.8, 0.2], [0.15, 0.85]]))
    maximum = attention_rollout([heads], "max")[0]  # fused [[0.9, 0.7], [0.5, 0.9]], rows renormalised
    step = 0.5 * torch.tensor([[0.9, 0.7], [0.5, 0.9]]) + 0.5 * torch.eye(2)
    assert torch.allclose(maximum, step / step.sum(1, keepdim=True))
    minimum = attention_rollout([heads], "min")[0]
    step = 0.5 * torch.tensor([[0.3, 0.1], [0.1, 0.5]]) + 0.5 * torch.eye(2)
    assert torch.allclose(minimum, step / step.sum(1, keepdim=True))
    # discard_ratio 0.5 drops the 2 lowest of the 4 fused weights (0.3 and 0.4), never the class token's own 0.6.
    dropped = attention_rollout([heads], "mean", 0.5)[0]
    step = 0.5 * torch.tensor([[0.6, 0.0], [0.0, 0.7]]) + 0.5 * torch.eye(2)
    assert torch.allclose(dropped, step / step.sum(1, keepdim=True))
    with pytest.raises(ConfigError, match="head_fusion is 'median'"):
        attention_rollout([heads], "median")
    with pytest.raises(ConfigError, match="discard_ratio is 1.0"):
        AttentionRollout(tiny("vit"), discard_ratio=1.0)


@pytest.mark.parametrize("model_type", ["vit", "deit", "dinov2_with_registers"])
def test_rollout_reads_the_class_token_row_over_the_patch_grid(model_type: str) -> None:
    model = tiny(model_type)
    assert model.config._attn_implementation == "sdpa"
    pixel_values = images(2)
    explanation = AttentionRollout(model, head_fusion="max", discard_ratio=0.5)(pixel_values)
    assert model.config._attn_implementation == "sdpa"  # eager for that call only
    with torch.no_grad():
        model.set_attn_implementation("eager")
        output = model(pixel_values=pixel_values, output_attentions=True)
        model.set_attn_implementation("sdpa")
    rolled = attention_rollout(output.attentions, "max", 0.5)
    prefix = rolled.shape[1] - 16
    expected = scale_to_unit(upsample(rolled[:, 0, prefix:].reshape(2, 4, 4), (32, 32)))
    assert torch.allclose(explanation.maps, expected, atol=1e-6)
    assert torch.equal(explanation.target, output.logits.argmax(1))


def test_rollout_needs_a_transformer() -> None:
    with pytest.raises(ConfigError, match="attention_rollout needs a vision transformer with a class token"):
        AttentionRollout(tiny("resnet"))
