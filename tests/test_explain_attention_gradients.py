"""Gradient-weighted attention rollout (Chefer et al. 2021) and LeGrad (Bousselham et al. 2024): the papers' formulas
written out by hand on tiny two-layer, two-head transformers (a DeiT with its distillation token and distillation
head, DINOv2 with registers), class specificity, batching, dtype, and no state left behind."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from transformers import AutoConfig, DeiTForImageClassificationWithTeacher

from explain import GradientRollout, LeGrad, gradient_weighted_rollout, legrad_relevance, make_method, methods_for
from explain.attention_gradients import attention_maps
from explain.explainer import methods_for_models
from explain.explanation import scale_to_unit
from explain.explorer import shared_methods
from explain.registry import TRANSFORMER_METHOD, default_method
from pipelines.errors import ConfigError

from helpers.explain_models import CONFIGS, images, no_hooks_left, tiny

pytestmark = pytest.mark.usefixtures("one_thread")  # the models are tiny: one thread is faster

METHODS = (GradientRollout, LeGrad)


def deit_with_teacher(seed: int = 0) -> DeiTForImageClassificationWithTeacher:
    """Class and distillation tokens, each read by its own head (the logits are the two heads' mean)."""
    torch.manual_seed(seed)
    config = AutoConfig.for_model("deit", num_labels=3, **CONFIGS["deit"])
    return DeiTForImageClassificationWithTeacher(config).eval()


def eager_pass(model, pixel_values):
    """Attentions (in the graph) and every block's output, from a plain eager forward pass."""
    model.set_attn_implementation("eager")
    try:
        output = model(pixel_values=pixel_values.requires_grad_(), output_attentions=True, output_hidden_states=True)
    finally:
        model.set_attn_implementation("sdpa")
    return output


def head_of(model, tokens: torch.Tensor) -> torch.Tensor:
    """The classifier applied to one layer's tokens, written out per architecture (what LeGrad scores each layer by)."""
    if isinstance(model, DeiTForImageClassificationWithTeacher):
        normed = model.deit.layernorm(tokens)
        return (model.cls_classifier(normed[:, 0]) + model.distillation_classifier(normed[:, 1])) / 2
    normed = model.dinov2_with_registers.layernorm(tokens)
    registers = model.config.num_register_tokens
    patches = normed[:, 1 + registers :].mean(dim=1)
    return model.classifier(torch.cat([normed[:, 0], patches], dim=1))


def chefer_by_hand(attentions, gradients) -> torch.Tensor:
    """R = I; per layer R <- R + mean_h (grad_h * A_h)^+ R, head by head and layer by layer."""
    batch, heads, tokens, _ = attentions[0].shape
    relevance = torch.eye(tokens).repeat(batch, 1, 1)
    for attention, gradient in zip(attentions, gradients):
        fused = sum((gradient[:, h] * attention[:, h]).clamp(min=0) for h in range(heads)) / heads
        relevance = relevance + torch.bmm(fused, relevance)
    return relevance


def legrad_by_hand(model, output, targets) -> torch.Tensor:
    """Per layer: s^l = head(tokens after block l)[target]; relevance_l[j] = mean over heads h and rows i of
    ReLU(d s^l / d A^l[h, i, j]); the map is the mean over layers."""
    per_layer = []
    for index, attention in enumerate(output.attentions):
        layer_tokens = output.hidden_states[index + 1]  # hidden_states[0] is the embeddings
        score = head_of(model, layer_tokens).gather(1, targets[:, None]).sum()
        (gradient,) = torch.autograd.grad(score, attention, retain_graph=True)
        per_layer.append(gradient.clamp(min=0).mean(dim=(1, 2)))
    return sum(per_layer) / len(per_layer)


def test_gradient_weighted_rollout_of_two_tokens_by_hand() -> None:
    # One layer, one head: A = [[0.6, 0.4], [0.2, 0.8]], grad = [[1, -1], [2, 0.5]]: (grad * A)+ = [[0.6, 0], [0.4,
    # 0.4]], and R = I + that.
    attention = torch.tensor([[0.6, 0.4], [0.2, 0.8]])[None, None]
    gradient = torch.tensor([[1.0, -1.0], [2.0, 0.5]])[None, None]
    first = gradient_weighted_rollout([attention], [gradient])[0]
    assert torch.allclose(first, torch.tensor([[1.6, 0.0], [0.4, 1.4]]))
    # A second layer's term multiplies the relevance so far: R2 = R1 + W2 R1.
    weight = torch.tensor([[0.5, 0.5], [0.0, 1.0]])
    second = gradient_weighted_rollout([attention, weight[None, None]], [gradient, torch.ones(1, 1, 2, 2)])[0]
    assert torch.allclose(second, first + weight @ first)
    # LeGrad of those two gradients: ReLU, mean over heads and rows, mean over layers.
    relevance = legrad_relevance([gradient, -torch.ones(1, 1, 2, 2)])
    assert torch.allclose(relevance, torch.tensor([[(1.5 + 0) / 2, (0 + 0.25) / 2]]))


@pytest.mark.parametrize("architecture", ["deit with distillation head", "dinov2 with registers"])
def test_each_method_equals_its_formula_written_out_by_hand(architecture: str) -> None:
    model = deit_with_teacher() if architecture.startswith("deit") else tiny("dinov2_with_registers")
    pixel_values = images(3)
    output = eager_pass(model, pixel_values.clone())
    targets = torch.tensor([0, 2, 1])
    prefix = 2 if architecture.startswith("deit") else 1 + model.config.num_register_tokens

    score = output.logits.gather(1, targets[:, None]).sum()
    gradients = torch.autograd.grad(score, output.attentions, retain_graph=True)
    chefer = chefer_by_hand([a.detach() for a in output.attentions], gradients)[:, 0, prefix:].reshape(3, 4, 4)
    legrad = legrad_by_hand(model, output, targets)[:, prefix:].reshape(3, 4, 4)

    for method, expected in ((GradientRollout(model), chefer), (LeGrad(model), legrad)):
        method.upsample = False  # the maps at the 4x4 patch grid, scaled to [0, 1] as every method's are
        explanation = method(pixel_values, targets)
        assert torch.allclose(explanation.maps, scale_to_unit(expected), atol=1e-5), method.name
        assert torch.equal(explanation.target, targets)
        probabilities = output.logits.detach().softmax(-1).gather(1, targets[:, None])[:, 0]
        assert torch.allclose(explanation.score, probabilities, atol=1e-6)


@pytest.mark.parametrize("method", METHODS, ids=lambda method: method.name)
def test_maps_are_class_specific(method) -> None:
    model = deit_with_teacher(seed=1)
    explanation = method(model)(images(2), "all")  # 3 classes per image
    maps = explanation.maps.reshape(2, 3, 32, 32)
    for image in range(2):
        for first, second in ((0, 1), (0, 2), (1, 2)):
            assert (maps[image, first] - maps[image, second]).abs().max() > 0.05


@pytest.mark.parametrize("method", METHODS, ids=lambda method: method.name)
def test_batching_gives_the_maps_of_one_image_at_a_time(method) -> None:
    model = tiny("vit")
    pixel_values = images(5)
    together = method(model, batch_size=None)(pixel_values, "all")
    one_by_one = method(model, batch_size=1)(pixel_values, "all")
    assert torch.allclose(together.maps, one_by_one.maps, atol=1e-5)
    assert torch.equal(together.target, one_by_one.target)


@pytest.mark.parametrize("method", METHODS, ids=lambda method: method.name)
def test_no_hook_attention_setting_or_gradient_flag_survives_the_call_even_on_an_error(method) -> None:
    model = tiny("beit")
    assert model.config._attn_implementation == "sdpa"
    method(model)(images(2))
    assert model.config._attn_implementation == "sdpa"
    assert no_hooks_left(model)
    assert all(parameter.requires_grad for parameter in model.parameters())

    def fail(*_: object) -> None:
        raise RuntimeError("planted failure in the head")

    planted = model.classifier.register_forward_hook(fail)
    with pytest.raises(RuntimeError, match="planted failure"):
        method(model)(images(2))
    planted.remove()
    assert model.config._attn_implementation == "sdpa"
    assert no_hooks_left(model)
    assert all(parameter.requires_grad for parameter in model.parameters())
    assert model.training is False


@pytest.mark.parametrize("method", METHODS, ids=lambda method: method.name)
def test_bfloat16_maps_follow_the_float32_ones(method) -> None:
    model = tiny("vit")
    pixel_values = images(3)
    full = method(model)(pixel_values)
    half = method(model.to(torch.bfloat16))(pixel_values)
    assert half.maps.dtype == torch.float32
    correlation = torch.corrcoef(torch.stack([full.maps.flatten(), half.maps.flatten()]))[0, 1]
    assert correlation > 0.95


def test_registered_for_transformers_only_with_one_sentence_otherwise() -> None:
    for model_type in ("vit", "deit", "dinov2_with_registers", "beit"):
        assert {"gradient_rollout", "legrad"} <= set(methods_for(tiny(model_type)))
    resnet = tiny("resnet")
    assert "legrad" not in methods_for(resnet)
    with pytest.raises(
        ConfigError,
        match=r"^The legrad method needs a vision transformer with a class token \(ViT, DeiT, BEiT, DINOv2\); for this "
        r"resnet model use one of gradcam, ",
    ):
        make_method("legrad", resnet)
    assert make_method("Chefer", tiny("vit")).name == "gradient_rollout"


@pytest.mark.parametrize("method", ["gradient_rollout", "legrad"])
def test_create_graph_keeps_the_maps_differentiable_in_the_parameters(method: str) -> None:
    model = tiny("vit").train()
    maps, logits = attention_maps(model, images(2), torch.tensor([0, 1]), method, create_graph=True)
    assert maps.shape == (2, 4, 4) and logits.shape == (2, 3)
    query = next(
        parameter for name, parameter in model.named_parameters() if name.endswith("layers.0.attention.q_proj.weight")
    )
    (gradient,) = torch.autograd.grad(maps.square().sum(), query)
    assert gradient.abs().sum() > 0
    # Without create_graph the maps are plain numbers: nothing to differentiate.
    detached, _ = attention_maps(model.eval(), images(2), None, method)
    assert not detached.requires_grad


def test_the_default_method_is_the_transformer_one_only_when_every_model_is_a_transformer() -> None:
    vit, deit, resnet = tiny("vit"), tiny("deit"), tiny("resnet")
    assert default_method(vit, deit) == TRANSFORMER_METHOD != "gradcam"
    assert default_method(vit, resnet) == default_method(resnet) == "gradcam"
    assert methods_for_models("default", {"a": vit, "b": deit}) == [TRANSFORMER_METHOD]
    assert methods_for_models("default", {"a": vit, "b": resnet}) == ["gradcam"]
    shared = methods_for_models("all", {"a": vit, "b": resnet})
    assert "gradcam" in shared and "legrad" not in shared and "attention_rollout" not in shared
    assert {"gradient_rollout", "legrad"} <= set(methods_for_models("all", {"a": vit, "b": deit}))
    with pytest.raises(ConfigError, match="^Model b: The legrad method needs a vision transformer"):
        methods_for_models("legrad", {"a": vit, "b": resnet})


def test_the_explorer_suggests_the_attention_methods_for_transformers_only() -> None:
    vit, deit, resnet = (SimpleNamespace(model=tiny(kind)) for kind in ("vit", "deit", "resnet"))
    suggested = shared_methods([vit, deit], "suggested")
    assert suggested[0] == TRANSFORMER_METHOD and {"gradient_rollout", "legrad"} <= set(suggested)
    assert len(suggested) == len(set(suggested))
    assert shared_methods([vit, resnet], "suggested") == ["gradcam", "gradcam++", "layercam", "eigencam"]
    assert "legrad" in shared_methods([vit, deit], "all") and "legrad" not in shared_methods([vit, resnet], "all")
