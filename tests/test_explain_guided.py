"""Guided Backpropagation and Guided Grad-CAM: Captum where it applies, our rule on GELU models, hand-set values."""

from __future__ import annotations

import pytest
import torch
from captum.attr import GuidedBackprop as CaptumGuidedBackprop
from captum.attr import GuidedGradCam as CaptumGuidedGradCam

from explain import GradCAM, GuidedBackprop, GuidedGradCAM, LogitsModule, scale_to_unit, upsample
from explain.guided import saliency
from explain.layers import activation_modules
from pipelines.errors import ConfigError

from helpers.explain_models import HAND_INPUT, HandSet, images, tiny

# The tests call Captum directly too; its notice that it hooks ReLU modules is expected there.
pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings("ignore:Setting backward hooks on ReLU activations"),
]


def plain_input_gradient(model: torch.nn.Module, pixel_values: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    inputs = pixel_values.clone().requires_grad_(True)
    logits = model(pixel_values=inputs).logits
    (gradient,) = torch.autograd.grad(logits.gather(1, targets[:, None]).sum(), inputs)
    return gradient


def test_hand_set_guided_backprop() -> None:
    # d(logit 0)/dx: channel 0 passes 0.25 where x > 0; channel 1 brings -0.25 * -1 where x < 0, but its gradient
    # at the ReLU (-0.25) is negative, so the guided rule stops it: [[.25, .25], [0, .25]] instead of all 0.25.
    for backend in ("captum", "ours"):
        explanation = GuidedBackprop(HandSet(), backend=backend)(HAND_INPUT, targets=0)
        assert torch.allclose(explanation.attributions[0, 0], torch.tensor([[0.25, 0.25], [0.0, 0.25]])), backend
        assert torch.allclose(explanation.maps[0], torch.tensor([[1.0, 1.0], [0.0, 1.0]])), backend


def test_relu_model_uses_captum_and_our_rule_agrees() -> None:
    model = tiny("resnet")
    pixel_values = images(3)
    auto = GuidedBackprop(model)
    assert auto.uses_captum
    explanation = auto(pixel_values, targets=[0, 1, 2])
    reference = CaptumGuidedBackprop(LogitsModule(model)).attribute(
        pixel_values.clone().requires_grad_(True), target=torch.tensor([0, 1, 2])
    )
    assert torch.allclose(explanation.attributions, reference, atol=1e-6)
    ours = GuidedBackprop(model, backend="ours")(pixel_values, targets=[0, 1, 2])
    assert torch.allclose(ours.attributions, explanation.attributions, atol=1e-6)
    assert torch.allclose(ours.maps, explanation.maps, atol=1e-5)


@pytest.mark.parametrize("model_type", ["vit", "deit", "dinov2_with_registers", "convnext", "swin"])
def test_gelu_guided_backprop_differs_from_plain_gradients(model_type: str) -> None:
    model = tiny(model_type)
    assert activation_modules(model) and not GuidedBackprop(model).uses_captum
    pixel_values = images(3)
    targets = torch.tensor([0, 1, 2])
    guided = GuidedBackprop(model)(pixel_values, targets).attributions
    plain = plain_input_gradient(model, pixel_values, targets)
    # Random tiny models pass most of the gradient through residual connections, which have no activation, so
    # the guided part is a few per cent of the whole (ConvNeXt: 4%, ViT: 22%).
    assert (guided - plain).norm() > 0.02 * plain.norm()
    # Captum's rule hooks nn.ReLU only: on a GELU model it returns the plain gradient, the silent failure we avoid.
    captum = CaptumGuidedBackprop(LogitsModule(model)).attribute(pixel_values.clone().requires_grad_(True), targets)
    assert torch.allclose(captum, plain, atol=1e-6)


def test_hand_set_gelu_guided_rule() -> None:
    # HandSet with GELU: d(logit 0)/dx = 0.25 g'(x) (channel 0) + 0.25 g'(-x) (channel 1, through the -1 weight).
    # The rule clamps each activation's input gradient at zero: channel 0 keeps relu(0.25 g'(x)), channel 1's
    # gradient at its activation is -0.25 g'(-x), clamped to relu(-0.25 g'(-x)), then times the -1 weight.
    model = HandSet()
    model.act = torch.nn.GELU()
    x = torch.tensor([[[[1.0, -0.5], [-1.5, -3.0]]]])
    slope = torch.func.vmap(torch.func.grad(torch.nn.functional.gelu))
    derivative, mirrored = slope(x.flatten()).reshape(x.shape), slope(-x.flatten()).reshape(x.shape)
    expected = torch.relu(0.25 * derivative) - torch.relu(-0.25 * mirrored)
    plain = 0.25 * derivative + 0.25 * mirrored
    guided = GuidedBackprop(model)(x, targets=0).attributions[:1]  # (1, 1, 2, 2)
    assert torch.allclose(guided, expected, atol=1e-7)
    assert not torch.allclose(guided, plain, atol=1e-3)  # differs where the rule applies...
    unchanged = (derivative >= 0) & (mirrored <= 0)  # ...and nowhere else
    assert torch.allclose(guided[unchanged], plain[unchanged])


def test_captum_backend_is_refused_on_gelu_models() -> None:
    with pytest.raises(ConfigError, match="hooks only nn.ReLU"):
        GuidedBackprop(tiny("vit"), backend="captum")


def test_guided_gradcam_on_relu_model_equals_captum_and_our_product() -> None:
    model = tiny("resnet")
    pixel_values = images(3)
    targets = torch.tensor([2, 0, 1])
    auto = GuidedGradCAM(model)
    assert auto.uses_captum
    explanation = auto(pixel_values, targets)
    layer = model.resnet.encoder.stages[-1]
    reference = CaptumGuidedGradCam(LogitsModule(model), layer).attribute(
        pixel_values.clone().requires_grad_(True), target=targets, interpolate_mode="bilinear"
    )
    assert torch.allclose(explanation.attributions, reference, atol=1e-6)
    ours = GuidedGradCAM(model, backend="ours")(pixel_values, targets)
    assert torch.allclose(ours.attributions, reference, atol=1e-6)
    assert torch.allclose(ours.maps, explanation.maps, atol=1e-5)


def test_guided_gradcam_on_a_vit_is_guided_backprop_times_upsampled_gradcam() -> None:
    model = tiny("vit")
    pixel_values = images(2)
    explanation = GuidedGradCAM(model)(pixel_values, targets=[1, 2])
    guided = GuidedBackprop(model)(pixel_values, targets=[1, 2]).attributions
    cam = GradCAM(model)
    with cam.prepared():
        raw = cam.attribute(pixel_values, torch.tensor([1, 2])).raw  # (B, 1, 4, 4), before scaling
    expected = guided * upsample(raw[:, 0], (32, 32))[:, None]
    assert torch.allclose(explanation.attributions, expected, atol=1e-6)
    assert torch.allclose(explanation.maps, scale_to_unit(saliency(expected)), atol=1e-6)
