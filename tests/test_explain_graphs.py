"""CUDA-graph replay of Grad-CAM batches gives the eager maps, follows weight changes, and falls back when it cannot.

These run only where a GPU is present (the device runs in the closing notes); on the CPU the graph path is never
taken, which the other explain tests cover.
"""

from __future__ import annotations

import pytest
import torch

from explain import make_method

from helpers.explain_models import images, tiny

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU"),
]


def cuda_batch(batch: int = 4, seed: int = 0) -> torch.Tensor:
    return images(batch, seed=seed).cuda()


def explain_three_times(method, pixel_values: torch.Tensor, targets=None) -> list:
    # first call: eager (shape seen); second: captured and replayed; third: replayed
    return [method(pixel_values, targets) for _ in range(3)]


@pytest.mark.parametrize("name", ["gradcam", "gradcam++", "xgradcam", "layercam", "hirescam"])
@pytest.mark.parametrize("model_type", ["vit", "resnet"])
def test_replayed_batches_equal_eager_ones(name: str, model_type: str) -> None:
    model = tiny(model_type).cuda()
    pixel_values = cuda_batch()
    eager = make_method(name, model, cuda_graphs=False)(pixel_values)
    method = make_method(name, model)
    results = explain_three_times(method, pixel_values)
    assert len(method.graphs.captured) == 1
    for result in results:
        torch.testing.assert_close(result.maps, eager.maps, atol=1e-5, rtol=0)
        assert torch.equal(result.target, eager.target)
        torch.testing.assert_close(result.score, eager.score)


def test_each_replay_explains_its_own_batch_and_returns_its_own_tensors() -> None:
    model = tiny("vit").cuda()
    method = make_method("gradcam", model, batch_size=4)
    first, second = cuda_batch(seed=1), cuda_batch(seed=2)
    method(first)  # seen
    kept = method(first)  # captured
    replayed = method(second)
    assert not torch.equal(kept.maps, replayed.maps)  # a later replay did not overwrite an earlier result
    torch.testing.assert_close(replayed.maps, make_method("gradcam", model, cuda_graphs=False)(second).maps)
    # several batches in one call, the last one shorter: full batches replay, the short one runs eagerly
    many = torch.cat([first, second, first[:2]])
    result = method(many)
    expected = make_method("gradcam", model, batch_size=4, cuda_graphs=False)(many)
    torch.testing.assert_close(result.maps, expected.maps, atol=1e-5, rtol=0)
    assert result.image_index.tolist() == list(range(10))


def test_multi_label_all_targets_replay() -> None:
    model = tiny("vit", num_labels=4, problem_type="multi_label_classification").cuda()
    pixel_values = cuda_batch()
    method = make_method("gradcam", model)
    eager = make_method("gradcam", model, cuda_graphs=False)(pixel_values, "all")
    for result in explain_three_times(method, pixel_values, "all"):
        torch.testing.assert_close(result.maps, eager.maps, atol=1e-5, rtol=0)
        assert result.target.tolist() == eager.target.tolist()


def test_weights_changed_in_place_or_replaced_are_seen() -> None:
    model = tiny("vit").cuda()
    pixel_values = cuda_batch()
    method = make_method("gradcam", model)
    explain_three_times(method, pixel_values)
    with torch.no_grad():
        for parameter in model.classifier.parameters():
            parameter.mul_(-1)  # in place: the graph reads the same memory
    torch.testing.assert_close(
        method(pixel_values).maps,
        make_method("gradcam", model, cuda_graphs=False)(pixel_values).maps,
        atol=1e-5,
        rtol=0,
    )
    model.classifier.weight = torch.nn.Parameter(torch.randn_like(model.classifier.weight))  # new memory
    torch.testing.assert_close(
        method(pixel_values).maps,
        make_method("gradcam", model, cuda_graphs=False)(pixel_values).maps,
        atol=1e-5,
        rtol=0,
    )


def test_per_image_targets_run_eagerly() -> None:
    model = tiny("vit").cuda()
    method = make_method("gradcam", model)
    targets = torch.tensor([0, 1, 2, 0])
    results = explain_three_times(method, cuda_batch(), targets)
    assert not method.graphs.captured
    assert all(result.target.tolist() == targets.tolist() for result in results)


class ReadsBack(torch.nn.Module):
    """A classifier whose forward pass reads a value back to the host, which a CUDA graph cannot capture."""

    def __init__(self) -> None:
        super().__init__()
        self.features = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.head = torch.nn.Linear(4, 3)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        features = self.features(pixel_values)
        if float(features.abs().max()) > 1e6:  # a host read of a device value
            raise ValueError("overflow")
        return self.head(features.mean(dim=(2, 3)))


def test_a_model_that_cannot_be_captured_falls_back_to_eager_with_a_warning() -> None:
    model = ReadsBack().cuda().eval()
    pixel_values = cuda_batch()
    method = make_method("gradcam", model, target_layer="features")
    expected = make_method("gradcam", model, target_layer="features", cuda_graphs=False)(pixel_values)
    method(pixel_values)
    with pytest.warns(UserWarning, match="without CUDA graphs"):
        result = method(pixel_values)
    torch.testing.assert_close(result.maps, expected.maps)
    torch.testing.assert_close(method(pixel_values).maps, expected.maps)  # eager from now on, no second warning
    assert method.graphs.failed and not method.graphs.captured
