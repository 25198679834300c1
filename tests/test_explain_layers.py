"""Target layers, prefix tokens and patch grids, found by structure on several architectures; bad layers and inputs."""

from __future__ import annotations

import pytest
import torch

from explain import GradCAM, make_method, methods_for, prefix_token_count, resolve_target_layer
from explain.layers import candidate_layers, encoder_blocks, is_transformer, to_grid, token_grid
from pipelines.errors import ConfigError, DataError

from helpers.explain_models import ALL_MODELS, TOKEN_MODELS, images, tiny

pytestmark = pytest.mark.usefixtures("one_thread")  # the models are tiny: one thread is faster

EXPECTED_LAYERS = {
    "vit": "vit.layers.1.layernorm_before",
    "deit": "deit.layers.1.layernorm_before",
    "dinov2_with_registers": "dinov2_with_registers.encoder.layer.1.norm1",
    "beit": "beit.layers.1.layernorm_before",
    "resnet": "resnet.encoder.stages.1",
    "convnext": "convnext.encoder.stages.1",
    "swin": "swin.encoder.layers.1",
}


@pytest.mark.parametrize("model_type", ALL_MODELS)
def test_target_layer_is_the_last_blocks_first_norm_or_the_last_stage(model_type: str) -> None:
    model = tiny(model_type)
    layer = resolve_target_layer(model)
    assert layer.name == EXPECTED_LAYERS[model_type]
    assert layer.module is dict(model.named_modules())[layer.name]
    if model_type in TOKEN_MODELS:
        assert isinstance(layer.module, torch.nn.LayerNorm)


def test_prefix_tokens_follow_the_config() -> None:
    assert prefix_token_count(tiny("vit")) == 1
    assert prefix_token_count(tiny("deit")) == 2  # class + distillation token
    registers = tiny("dinov2_with_registers")
    assert prefix_token_count(registers) == 1 + registers.config.num_register_tokens == 5
    assert prefix_token_count(tiny("resnet")) == 0
    assert prefix_token_count(tiny("swin")) == 0


@pytest.mark.parametrize("model_type", ALL_MODELS)
def test_gradcam_gives_unit_maps_at_input_resolution_on_every_architecture(model_type: str) -> None:
    explanation = GradCAM(tiny(model_type))(images(3))
    assert explanation.maps.shape == (3, 32, 32)
    assert explanation.maps.dtype == torch.float32
    assert explanation.maps.min() >= 0.0 and explanation.maps.max() <= 1.0
    assert torch.allclose(explanation.maps.flatten(1).amax(1), torch.ones(3))  # random models: never a flat map


def test_token_grid_drops_prefix_tokens_in_order() -> None:
    model = tiny("deit")
    tokens = torch.arange(2 * 18 * 4, dtype=torch.float32).reshape(2, 18, 4)  # 2 prefix + 4x4 patches
    grid = to_grid(model, tokens, 32, 32)
    assert grid.shape == (2, 4, 4, 4)
    assert torch.equal(grid[:, :, 0, 0], tokens[:, 2])  # first patch token, top left
    assert torch.equal(grid[:, :, 0, 1], tokens[:, 3])  # row-major
    assert torch.equal(grid[:, :, 1, 0], tokens[:, 6])


@pytest.mark.parametrize("model_type", ["vit", "deit", "dinov2_with_registers"])
def test_non_square_input_gives_non_square_maps(model_type: str) -> None:
    model = tiny(model_type)
    assert token_grid(model, prefix_token_count(model) + 4 * 6, 32, 48) == (prefix_token_count(model), 4, 6)
    explanation = GradCAM(model)(images(2, 32, 48))
    assert explanation.maps.shape == (2, 32, 48)


def test_encoder_blocks_are_found_by_structure_not_by_path() -> None:
    name, blocks = encoder_blocks(tiny("vit"))
    assert name == "vit.layers" and len(blocks) == 2
    name, blocks = encoder_blocks(tiny("convnext"))
    assert name == "convnext.encoder.stages"  # not the ModuleLists inside each stage


def test_transformers_are_told_apart_from_cnns() -> None:
    assert [model_type for model_type in ALL_MODELS if is_transformer(tiny(model_type))] == list(TOKEN_MODELS)
    assert "attention_rollout" in methods_for(tiny("vit"))
    assert "attention_rollout" not in methods_for(tiny("resnet"))


def test_a_named_layer_is_used_as_given() -> None:
    library = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model, name = tiny("vit"), "vit.layers.0.layernorm_before"
    method = GradCAM(model, target_layer=name)
    module = dict(model.named_modules())[name]
    assert method.layer.module is module  # that exact module, not its block
    explanation = method(images(2))

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
            return self.model(pixel_values=pixel_values).logits

    side = model.config.image_size // model.config.patch_size

    def tokens_to_grid(tokens: torch.Tensor) -> torch.Tensor:  # (B, 1 + side^2, C) -> (B, C, side, side)
        return tokens[:, 1:].reshape(tokens.shape[0], side, side, -1).permute(0, 3, 1, 2)

    targets = [ClassifierOutputTarget(int(target)) for target in explanation.target]
    with library.GradCAM(model=Logits(), target_layers=[module], reshape_transform=tokens_to_grid) as cam:
        reference = cam(images(2), targets=targets)  # (B, 32, 32), each scaled to 0-1
    assert (explanation.maps - torch.from_numpy(reference)).abs().max() < 1e-5


def test_unknown_layer_lists_the_candidates() -> None:
    with pytest.raises(ConfigError) as error:
        GradCAM(tiny("vit"), target_layer="vit.encoder.layer.11")
    message = str(error.value)
    assert "Layer 'vit.encoder.layer.11' is not in this vit model" in message
    assert "vit.layers.1.layernorm_before" in message and "vit.layers.0" in message
    assert candidate_layers(tiny("resnet"))[0] == "resnet.encoder.stages.1"


def test_method_that_does_not_fit_names_those_that_do() -> None:
    with pytest.raises(ConfigError) as error:
        make_method("attention_rollout", tiny("resnet"))
    message = str(error.value)
    assert "needs a vision transformer" in message and "resnet" in message
    assert "gradcam" in message and "guided_gradcam" in message and "attention_rollout" not in message.split("use")[-1]


def test_unknown_method_lists_the_methods() -> None:
    with pytest.raises(ConfigError, match="Unknown explanation method 'gradcan'; choose from gradcam, "):
        make_method("gradcan", tiny("vit"))


def test_wrong_channel_count_is_refused() -> None:
    with pytest.raises(DataError, match="The images have 1 channels but the model expects 3"):
        GradCAM(tiny("vit"))(images(2, channels=1))


def test_wrong_size_is_refused() -> None:
    with pytest.raises(DataError, match="not a multiple of the model's 8-pixel patches"):
        GradCAM(tiny("vit"))(images(2, 30, 30))
    with pytest.raises(DataError, match=r"Expected pixel_values shaped \(B, C, H, W\)"):
        GradCAM(tiny("vit"))(images(2)[0])


def test_layer_with_unusable_output_is_refused() -> None:
    model = tiny("vit")
    with pytest.raises(DataError, match="The target layer gives 7 tokens, which fit no patch grid for a 32x32 input"):
        token_grid(model, 7, 32, 32)
    with pytest.raises(DataError, match="pick a layer that outputs a feature map"):
        GradCAM(model, target_layer="classifier")(images(2))


def test_patch_embeddings_have_no_prefix_tokens() -> None:
    explanation = GradCAM(tiny("vit"), target_layer="vit.embeddings.patch_embeddings")(images(2))
    assert explanation.maps.shape == (2, 32, 32)
