"""Grad-CAM and its variants: agreement with Captum and pytorch-grad-cam, hand-computed maps, dtypes, targets."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from captum.attr import LayerAttribution, LayerGradCam
from torch import nn

from explain import (
    CaptumGradCAM,
    EigenCAM,
    GradCAM,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    XGradCAM,
    make_method,
    scale_to_unit,
)
from explain.cam import first_component
from pipelines.errors import DataError

from helpers.explain_models import HAND_INPUT, TOKEN_MODELS, FullResolutionCNN, HandSet, images, tiny

pytestmark = pytest.mark.usefixtures("one_thread")  # the models are tiny: one thread is faster

CAM_METHODS = (GradCAM, GradCAMPlusPlus, XGradCAM, LayerCAM, HiResCAM, EigenCAM)


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1])


def test_resnet_gradcam_equals_captum_layergradcam_plus_interpolation() -> None:
    model = tiny("resnet")
    pixel_values = images(4)
    ours = GradCAM(model)(pixel_values)
    layer = model.resnet.encoder.stages[-1]
    reference = LayerGradCam(lambda x: model(pixel_values=x).logits, layer).attribute(
        pixel_values, target=ours.target, relu_attributions=True
    )  # (B, 1, 4, 4)
    assert reference.shape[-2:] == (4, 4)
    upsampled = LayerAttribution.interpolate(reference, (32, 32), interpolate_mode="bilinear")
    expected = scale_to_unit(upsampled[:, 0].detach())
    assert torch.equal(ours.target, model(pixel_values=pixel_values).logits.argmax(1))
    assert (ours.maps - expected).abs().max() < 1e-5


@pytest.mark.parametrize("model_type", [*TOKEN_MODELS, "resnet", "convnext", "swin"])
def test_lean_and_captum_backends_agree(model_type: str) -> None:
    model = tiny(model_type)
    pixel_values = images(3)
    lean, captum = GradCAM(model)(pixel_values, targets=[0, 1, 2]), CaptumGradCAM(model)(pixel_values, [0, 1, 2])
    assert (lean.maps - captum.maps).abs().max() < 1e-5
    assert torch.equal(lean.target, captum.target) and torch.allclose(lean.score, captum.score)


def test_hand_set_weights_give_hand_computed_maps() -> None:
    # Activations: A0 = relu(x) = [[1, 2], [0, 3]], A1 = relu(-x) = [[0, 0], [1, 0]]; pooled means 1.5 and 0.25.
    # Logits: class 0 = 1.5 - 0.25 = 1.25, class 1 = -1.5 + 0.5 = -1.0, so class 0 is predicted.
    # Grad-CAM weights are the head's row / 4 pixels. Class 0: relu(A0/4 - A1/4) = [[.25, .5], [0, .75]], scaled
    # to [[1/3, 2/3], [0, 1]]. Class 1: relu(-A0/4 + A1/2) = [[0, 0], [.5, 0]], scaled to [[0, 0], [1, 0]].
    model = HandSet()
    explanation = GradCAM(model, target_layer="act")(HAND_INPUT, targets="all")
    assert explanation.target.tolist() == [0, 1] and explanation.image_index.tolist() == [0, 0]
    assert torch.allclose(explanation.maps[0], torch.tensor([[1 / 3, 2 / 3], [0.0, 1.0]]), atol=1e-6)
    assert torch.allclose(explanation.maps[1], torch.tensor([[0.0, 0.0], [1.0, 0.0]]), atol=1e-6)
    expected_score = 1 / (1 + np.exp(-2.25))  # softmax of (1.25, -1.0)
    assert explanation.score[0].item() == pytest.approx(expected_score, abs=1e-6)
    predicted = GradCAM(model, target_layer="act")(HAND_INPUT)
    assert predicted.target.tolist() == [0] and torch.equal(predicted.maps[0], explanation.maps[0])
    # Uniform gradients: HiResCAM and XGrad-CAM equal Grad-CAM; LayerCAM and Grad-CAM++ keep only A0 (the
    # channel with a positive gradient), which has the same shape here.
    for method in (HiResCAM, XGradCAM, LayerCAM, GradCAMPlusPlus):
        maps = method(model, target_layer="act")(HAND_INPUT).maps
        assert torch.allclose(maps[0], torch.tensor([[1 / 3, 2 / 3], [0.0, 1.0]]), atol=1e-5), method.name


@pytest.mark.parametrize("method", CAM_METHODS[:-1])
def test_variants_equal_pytorch_grad_cam(method: type) -> None:
    library = pytest.importorskip("pytorch_grad_cam")
    model = FullResolutionCNN().eval()
    pixel_values = images(3, 16, 16)
    targets = [0, 2, 1]
    ours = method(model, target_layer="features.3")(pixel_values, targets)
    reference_class = {
        "gradcam": library.GradCAM,
        "gradcam++": library.GradCAMPlusPlus,
        "xgradcam": library.XGradCAM,
        "layercam": library.LayerCAM,
        "hirescam": library.HiResCAM,
    }[method.name]
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    with reference_class(model=model, target_layers=[model.features[3]]) as cam:
        reference = cam(pixel_values, targets=[ClassifierOutputTarget(t) for t in targets])  # (B, H, W), scaled
    assert np.abs(ours.maps.numpy() - reference).max() < 1e-4


def test_eigencam_is_the_sign_fixed_first_principal_component() -> None:
    generator = torch.Generator().manual_seed(0)
    activations = torch.rand(2, 5, 3, 4, generator=generator)
    projection = first_component(activations)
    for image in range(2):
        matrix = activations[image].reshape(5, -1).T.double().numpy()  # (h*w, C)
        centred = matrix - matrix.mean(axis=0)
        _, _, right = np.linalg.svd(centred)
        expected = centred @ right[0]
        reference = matrix.sum(axis=1) - matrix.sum(axis=1).mean()
        expected = expected if expected @ reference >= 0 else -expected
        assert np.allclose(projection[image].flatten().numpy(), expected, atol=1e-5)
    model = tiny("resnet")
    explanation = EigenCAM(model)(images(2), targets=[0, 1])
    assert torch.equal(explanation.maps, EigenCAM(model)(images(2), targets=[2, 2]).maps)  # class-agnostic


def test_bf16_and_fp32_maps_correlate_on_a_tiny_vit() -> None:
    model = tiny("vit")
    pixel_values = images(8)
    fp32 = GradCAM(model)(pixel_values)
    bf16 = GradCAM(model, dtype=torch.bfloat16)(pixel_values, fp32.target)
    assert bf16.maps.dtype == torch.float32
    assert correlation(fp32.maps, bf16.maps) >= 0.99


def test_a_bf16_model_is_explained_in_bf16() -> None:
    model = tiny("vit").to(torch.bfloat16)
    explanation = GradCAM(model)(images(2))  # float32 input is cast to the parameters' dtype
    assert explanation.maps.dtype == torch.float32 and explanation.maps.shape == (2, 32, 32)
    assert correlation(explanation.maps, GradCAM(tiny("vit"))(images(2), explanation.target).maps) > 0.95


@pytest.mark.parametrize("model_type", ["vit", "resnet"])
def test_maps_change_when_the_weights_are_re_randomised(model_type: str) -> None:
    # The model-randomisation sanity check (Adebayo et al. 2018): a map that survives new weights explains nothing.
    pixel_values = images(6)
    model = tiny(model_type, seed=0)
    before = GradCAM(model)(pixel_values, targets=0).maps
    model.load_state_dict(tiny(model_type, seed=1).state_dict())
    after = GradCAM(model)(pixel_values, targets=0).maps
    assert (before - after).abs().mean() > 0.1
    assert correlation(before, after) < 0.8
    # Re-randomising the classifier head alone changes them too: Grad-CAM reads the head through its gradients.
    model = tiny(model_type, seed=0)
    head = model.classifier if isinstance(model.classifier, nn.Linear) else model.classifier[-1]
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=torch.Generator().manual_seed(5)))
    assert (before - GradCAM(model)(pixel_values, targets=0).maps).abs().mean() > 0.05


def test_trained_model_points_at_the_evidence() -> None:
    # The pointing game (Zhang et al. 2016): each image holds one 8x8 square at a random place, bright for class 0
    # and dark for class 1, on noise. After a few steps, Grad-CAM's peak falls on (or within 4 px of) the square.
    generator = torch.Generator().manual_seed(0)
    count = 64
    labels = torch.randint(0, 2, (count,), generator=generator)
    pixel_values = torch.randn(count, 3, 32, 32, generator=generator) * 0.3
    top, left = torch.randint(0, 25, (2, count), generator=generator)
    for index in range(count):
        pixel_values[index, :, top[index] : top[index] + 8, left[index] : left[index] + 8] += 2.0 - 4.0 * labels[index]
    model = tiny("resnet", num_labels=2).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(30):
        loss = nn.functional.cross_entropy(model(pixel_values=pixel_values).logits, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def hit_rate(model: nn.Module) -> float:
        peak = GradCAM(model)(pixel_values, targets=labels).maps.flatten(1).argmax(1)
        rows, columns = peak // 32, peak % 32
        hit = (rows >= top - 4) & (rows < top + 12) & (columns >= left - 4) & (columns < left + 12)
        return float(hit.float().mean())

    assert hit_rate(model) >= 0.9
    assert hit_rate(tiny("resnet", num_labels=2, seed=10)) < 0.7  # untrained: the boxes cover ~40% of the image


def test_batching_does_not_change_the_maps() -> None:
    model = tiny("vit")
    pixel_values = images(5)
    whole = GradCAM(model, batch_size=None)(pixel_values, targets=[0, 1, 2, 0, 1])
    batched = GradCAM(model, batch_size=2)(pixel_values, targets=[0, 1, 2, 0, 1])
    assert torch.allclose(whole.maps, batched.maps, atol=1e-6)
    assert batched.image_index.tolist() == [0, 1, 2, 3, 4] and batched.target.tolist() == [0, 1, 2, 0, 1]
    per_image = torch.stack([GradCAM(model)(pixel_values[i : i + 1], targets=i % 3).maps[0] for i in range(3)])
    assert torch.allclose(whole.maps[:3], per_image, atol=1e-6)


def test_targets_predicted_by_default_or_given_per_image() -> None:
    model = tiny("resnet")
    pixel_values = images(3)
    logits = model(pixel_values=pixel_values).logits
    predicted = GradCAM(model)(pixel_values)
    assert torch.equal(predicted.target, logits.argmax(1))
    assert torch.allclose(predicted.score, logits.softmax(1).amax(1), atol=1e-6)
    given = GradCAM(model)(pixel_values, targets=torch.tensor([2, 0, 1]))
    assert given.target.tolist() == [2, 0, 1]
    assert torch.allclose(given.score, logits.softmax(1)[torch.arange(3), torch.tensor([2, 0, 1])], atol=1e-6)


def test_class_index_out_of_range_is_refused() -> None:
    with pytest.raises(DataError, match=r"Class index 3 is out of range: the model has 3 classes \(0-2\)\."):
        GradCAM(tiny("vit"))(images(2), targets=3)
    with pytest.raises(DataError, match="Class index -1 is out of range"):
        GradCAM(tiny("vit"))(images(2), targets=[0, -1])
    with pytest.raises(DataError, match="3 target classes were given for 2 images"):
        GradCAM(tiny("vit"))(images(2), targets=[0, 1, 2])


def test_multi_label_model_explains_every_label() -> None:
    model = tiny("vit", num_labels=4, problem_type="multi_label_classification")
    pixel_values = images(3)
    explanation = GradCAM(model)(pixel_values, targets="all")
    assert explanation.maps.shape == (12, 32, 32)
    assert explanation.image_index.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert explanation.target.tolist() == [0, 1, 2, 3] * 3
    logits = model(pixel_values=pixel_values).logits
    assert torch.allclose(explanation.score, logits.sigmoid().flatten(), atol=1e-6)  # sigmoid, not softmax
    one_label = GradCAM(model)(pixel_values, targets=2).maps
    assert torch.allclose(explanation.maps[2::4], one_label, atol=1e-6)
    top = GradCAM(model)(pixel_values)
    assert torch.equal(top.target, logits.argmax(1))
    for name in ("gradcam++", "guided_gradcam", "attention_rollout"):
        assert make_method(name, model)(pixel_values, targets="all").maps.shape == (12, 32, 32)


def test_deit_with_a_distillation_token() -> None:
    model = tiny("deit")
    assert type(model).__name__ == "DeiTForImageClassificationWithTeacher"
    pixel_values = images(3)
    explanation = GradCAM(model)(pixel_values)
    logits = model(pixel_values=pixel_values).logits  # the mean of the class and distillation heads
    assert torch.equal(explanation.target, logits.argmax(1))
    assert (explanation.maps - CaptumGradCAM(model)(pixel_values).maps).abs().max() < 1e-5
    # Reading the distillation token as a patch would shift every patch by one: the grid must start after it.
    assert GradCAM(model)(images(2, 32, 48)).maps.shape == (2, 32, 48)
