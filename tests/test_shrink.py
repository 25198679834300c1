"""scripts/shrink.py on tiny trained models: int8 and pruned copies reload, predict, explain and go through the report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from transformers import AutoConfig, AutoModelForImageClassification

from explain.cam import GradCAM
from explain.metrics.agreement import blank_maps, rank_correlation
from pipelines import ConfigError, UserFacingError, run_cli
from pipelines.models import build_classifier, load_classifier
from trainers.report.cost import count_parameters, size_on_disk
from trainers.shrink.prune import prune_structured

from helpers.data import make_medmnist_npz, tiny_run_config, write_config
from helpers.models import PROCESSOR_32, TINY_RESNET, TINY_VIT
from helpers.project import ROOT, load_script

shrink = load_script("shrink").main
finetune = load_script("finetune").main
evaluate = load_script("report").main
# Weight-only int8 with one scale per output channel: a weight moves by at most half a step (max |w| / 254),
# so the logits of these tiny models move by about 1e-3; 0.05 leaves room without hiding a broken copy (a wrong
# scale moves them by whole units).
INT8_LOGIT_TOLERANCE = 0.05
# Grad-CAM of the int8 copy against the original's, Spearman's rho per image, mean over non-blank pairs.
INT8_CAM_CORRELATION = 0.9
W8A8_LOGIT_TOLERANCE = 0.2
W8A8 = ("--int8_activations", "true", "--calibration_images", "40")
# Dynamic int8 rounds each token's activations with its own scale, so the logits move less than with W8A8's static
# scales (3.3e-2 here): 3.4e-3 measured on the tiny ViT; 0.05 leaves room without hiding a wrong scale.
DYNAMIC_LOGIT_TOLERANCE = 0.05
DYNAMIC = ("--int8_activations", "dynamic")


def train(root: Path, name: str, model_config: dict) -> Path:
    """A tiny model fine-tuned for 30 steps on the generated BreastMNIST file, so its maps have structure."""
    config = tiny_run_config(root, root / "data", model_config=model_config, output_dir=str(root / name))
    config.update(max_steps=30, learning_rate=3e-3)
    finetune([str(write_config(root / f"{name}.yaml", **config))])
    return root / name


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("shrink")
    make_medmnist_npz(root / "data" / "breastmnist.npz", counts=(48, 8, 12))
    train(root, "vit", TINY_VIT)
    train(root, "resnet", TINY_RESNET)
    return root


def shrunk(root: Path, model: str, method: str, *extra: str) -> Path:
    """The copy of `model` made once per module (extra: W8A8, DYNAMIC or nothing); W8A8 calibrates on the generated
    data."""
    suffix = {W8A8: "-w8a8", DYNAMIC: "-dynamic"}.get(extra, "")
    out = root / f"{model}-{method}{suffix}"
    data = ["--dataset_name", "breastmnist", "--data_dir", str(root / "data"), "--verify_md5", "false"]
    if not (out / "shrink.json").is_file():
        shrink([str(root / model), "--method", method, "--out", str(out), *extra, *(data if extra == W8A8 else [])])
    return out


def load(folder: Path) -> torch.nn.Module:
    """Through the project's loader, which rebuilds quanto int8 copies (plain from_pretrained cannot)."""
    return load_classifier(str(folder))[0].eval()


FIXED_INPUTS = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model(pixel_values=FIXED_INPUTS).logits


@pytest.mark.parametrize("model", ["vit", "resnet"])
def test_int8_copy_reloads_with_int8_weights_and_predicts_like_the_original(root: Path, model: str) -> None:
    original, copy = load(root / model), load(shrunk(root, model, "int8"))
    layers = [m for m in copy.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
    assert {type(m.weight).__name__ for m in layers} == {"WeightQBytesTensor"}
    assert all(m.weight._data.dtype == torch.int8 for m in layers)
    difference = (logits(copy) - logits(original)).abs().max().item()
    assert 0 < difference <= INT8_LOGIT_TOLERANCE  # 0 would mean nothing was quantized
    assert torch.equal(logits(copy).argmax(1), logits(original).argmax(1))
    record = json.loads((shrunk(root, model, "int8") / "shrink.json").read_text())
    weights = sum(m.weight.numel() for m in original.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)))
    assert record["details"]["quantized_weight_share"] == pytest.approx(weights / count_parameters(original))
    # Each quantized weight drops from 4 bytes to 1; the per-channel scales (4 bytes a channel) and the safetensors
    # header take some of it back, so at least 60% of those 3 bytes per weight must be saved.
    saved = size_on_disk(root / model) - size_on_disk(shrunk(root, model, "int8"))
    assert saved >= 0.6 * 3 * weights


def test_int8_activations_are_calibrated_quantized_and_reload(root: Path) -> None:
    folder = shrunk(root, "vit", "int8", *W8A8)
    original, copy = load(root / "vit"), load(folder)
    assert {type(m.input_scale).__name__ for m in copy.modules() if isinstance(m, torch.nn.Linear)} == {"Tensor"}
    assert all(m.activation_qtype is not None for m in copy.modules() if isinstance(m, torch.nn.Linear))
    assert (
        "static scales from 40 training images" in json.loads((folder / "shrink.json").read_text())["details"]["scheme"]
    )
    # Activations rounded to 8 bits at every layer move the logits more than weights alone do.
    assert (logits(copy) - logits(original)).abs().max() <= W8A8_LOGIT_TOLERANCE
    assert torch.equal(logits(copy).argmax(1), logits(original).argmax(1))


def test_dynamic_int8_copy_has_int8_linear_layers_loads_plainly_and_predicts_like_the_original(root: Path) -> None:
    folder = shrunk(root, "vit", "int8", *DYNAMIC)
    original, copy = load(root / "vit"), load(folder)
    plain = AutoModelForImageClassification.from_pretrained(folder).eval()
    linear = [m for m in original.modules() if isinstance(m, torch.nn.Linear)]
    for model in (copy, plain):
        layers = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
        assert len(layers) == len(linear)
        assert {type(m.weight).__name__ for m in layers} == {"Int8Tensor"}
        assert all(m.weight.qdata.dtype == torch.int8 for m in layers)
    assert {type(m).__name__ for m in copy.modules() if isinstance(m, torch.nn.Linear)} == {"StraightThroughInt8Linear"}
    difference = (logits(copy) - logits(original)).abs().max().item()
    assert 0 < difference <= DYNAMIC_LOGIT_TOLERANCE
    assert torch.equal(logits(copy), logits(plain))  # the straight-through layers compute the same forward pass
    assert torch.equal(logits(copy).argmax(1), logits(original).argmax(1))
    details = json.loads((folder / "shrink.json").read_text())["details"]
    share = sum(m.weight.numel() for m in linear) / count_parameters(original)
    assert details["quantized_weight_share"] == pytest.approx(share)
    assert len(details["quantized_modules"]) == len(linear)
    saved = size_on_disk(root / "vit") - size_on_disk(folder)
    assert saved >= 0.6 * 3 * sum(m.weight.numel() for m in linear)


def test_dynamic_int8_gradients_pass_straight_through_to_the_dequantized_weights(root: Path) -> None:
    """The input gradient of the copy equals that of a float model holding the copy's dequantized weights, with the
    activations' rounding taken as the identity; autograd reaches the input at all (torchao alone does not)."""
    copy = load(shrunk(root, "vit", "int8", *DYNAMIC))
    layer = copy.classifier
    inputs = torch.randn(5, layer.in_features, generator=torch.Generator().manual_seed(1), requires_grad=True)
    weights = torch.randn(5, layer.out_features, generator=torch.Generator().manual_seed(2))
    (gradient,) = torch.autograd.grad((layer(inputs) * weights).sum(), inputs)
    assert torch.allclose(gradient, weights @ layer.weight.dequantize(), atol=1e-6)
    pixels = FIXED_INPUTS.clone().requires_grad_()
    (pixel_gradient,) = torch.autograd.grad(copy(pixel_values=pixels).logits[:, 0].sum(), pixels)
    assert pixel_gradient.abs().sum() > 0


@pytest.mark.parametrize("extra", [(), W8A8, DYNAMIC], ids=["weights", "weights-and-activations", "dynamic"])
def test_gradcam_of_the_int8_copy_follows_the_original(root: Path, extra: tuple[str, ...]) -> None:
    original, copy = load(root / "vit"), load(shrunk(root, "vit", "int8", *extra))
    target = logits(original).argmax(1)
    maps_original = GradCAM(original)(FIXED_INPUTS, targets=target).maps
    maps_copy = GradCAM(copy)(FIXED_INPUTS, targets=target).maps
    kept = ~(blank_maps(maps_original) | blank_maps(maps_copy))
    assert kept.sum() >= 3
    assert rank_correlation(maps_original[kept], maps_copy[kept]).mean() > INT8_CAM_CORRELATION


@pytest.mark.parametrize(
    ("model", "config", "scaled"),
    [
        ("vit", TINY_VIT, {"hidden_size": 16, "intermediate_size": 32, "num_attention_heads": 1, "head_dim": 16}),
        ("resnet", TINY_RESNET, {"embedding_size": 4, "hidden_sizes": [4, 8]}),
    ],
)
def test_pruned_copy_has_the_parameters_of_the_halved_config_and_reloads_equal(
    root: Path, model: str, config: dict, scaled: dict
) -> None:
    """At ratio 0.5 every channel group halves, so the copy has exactly the parameters of the same config with
    halved widths (counted over every parameter); the fraction removed is 1 - after / before."""
    folder = shrunk(root, model, "prune")
    halved = AutoModelForImageClassification.from_config(AutoConfig.for_model(**{**config, **scaled}, num_labels=2))
    copy = load(folder)
    assert count_parameters(copy) == count_parameters(halved)
    record = json.loads((folder / "shrink.json").read_text())["details"]
    before = count_parameters(load(root / model))
    assert record["parameters_after"] == count_parameters(halved)
    assert record["parameters_removed_fraction"] == pytest.approx(1 - count_parameters(halved) / before)
    for key, value in scaled.items():
        assert getattr(AutoConfig.from_pretrained(folder), key) == value
    in_memory, _ = prune_structured(load(root / model), 0.5, (3, 32, 32))
    assert torch.allclose(logits(copy), logits(in_memory), atol=1e-6)
    card = ModelCard.load(folder / "README.md")
    assert (card.data.pipeline_tag, card.data.tags[-1]) == ("image-classification", "prune")
    assert card.text.lstrip().startswith(f"# prune copy of {model}\n")  # its folder's name, not its path


def test_shrunk_copies_go_through_the_report(root: Path) -> None:
    folders = [root / "vit", shrunk(root, "vit", "int8"), shrunk(root, "vit", "prune")]
    folders.append(shrunk(root, "vit", "int8", *DYNAMIC))
    argv = ["--models", *map(str, folders), "--dataset_name", "breastmnist", "--data_dir", str(root / "data")]
    argv += ["--verify_md5", "false", "--out", str(root / "report"), "--explain_images", "6", "--steps", "3"]
    argv += ["--latency_repeats", "1", "--device", "cpu", "--sample_images", "2", "--methods", "gradcam"]
    argv += ["--random_maps", "2", "--road_fractions", "0.5"]
    report = evaluate(argv)
    models = report["models"]
    original, int8, pruned, dynamic = (models[folder.name] for folder in folders)
    assert int8["cost"]["size_on_disk_bytes"] < original["cost"]["size_on_disk_bytes"]
    assert pruned["cost"]["parameters"] < original["cost"]["parameters"]
    for model in (int8, pruned):
        assert -1 <= model["agreement"]["gradcam"]["rank_correlation_mean"] <= 1
        assert model["shrink"]["method"] in ("int8", "prune")
    for model in (int8, dynamic):
        assert model["agreement"]["gradcam"]["rank_correlation_mean"] > INT8_CAM_CORRELATION
        assert model["cost"]["size_on_disk_bytes"] < original["cost"]["size_on_disk_bytes"]
    index = (root / "report" / "index.md").read_text()
    assert "Shrunk copies" in index and "vit-int8" in index
    shrunk_table = index[index.index("### Shrunk copies") :].splitlines()
    dynamic_row = next(line for line in shrunk_table if line.startswith("| vit-int8-dynamic |"))
    assert "nn.Linear layers" in dynamic_row and "fast under torch.compile" in dynamic_row


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--method", "prune", "--ratio", "0"], "strictly between 0 and 1"),
        (["--method", "prune", "--ratio", "1.5"], "strictly between 0 and 1"),
        (["--method", "fp4"], "must be one of int8, prune"),
        (["--method", "int8", "--recover_epochs", "1"], "prune only"),
        (["--method", "int8", "--int8_activations", "sometimes"], "must be one of none, static, dynamic"),
        (["--method", "prune", "--int8_activations", "dynamic"], "int8 only"),
    ],
)
def test_bad_arguments_are_one_sentence(root: Path, extra: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        shrink([str(root / "vit"), "--out", str(root / "never"), *extra])
    assert not (root / "never").exists()


def test_an_unsupported_architecture_or_a_folder_that_is_not_a_model_is_one_sentence(
    root: Path, capsys: pytest.CaptureFixture
) -> None:
    convnext = {"model_type": "convnext", "hidden_sizes": [8, 16], "depths": [1, 1], "num_stages": 2}
    model, processor = build_classifier(convnext, ["a", "b"], image_processor_config=PROCESSOR_32)
    model.save_pretrained(root / "convnext")
    processor.save_pretrained(root / "convnext")
    with pytest.raises(ConfigError, match="'convnext' model; structured pruning supports resnet, vit, deit"):
        shrink([str(root / "convnext"), "--method", "prune", "--out", str(root / "never")])
    resnet = load(root / "resnet")
    share = sum(m.weight.numel() for m in resnet.modules() if isinstance(m, torch.nn.Linear)) / count_parameters(resnet)
    with pytest.raises(ConfigError, match=rf"holds {share:.2%} of its parameters in nn.Linear layers, the only ones"):
        shrink([str(root / "resnet"), "--method", "int8", *DYNAMIC, "--out", str(root / "never")])
    assert not (root / "never").exists()
    (root / "empty").mkdir()
    with pytest.raises(UserFacingError):
        shrink([str(root / "empty"), "--method", "int8", "--out", str(root / "never")])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        run_cli(lambda: shrink([str(root / "convnext"), "--method", "prune", "--out", str(root / "never")]))
    assert exit_.value.code == 2
    assert capsys.readouterr().err == (
        f"error: {root / 'convnext'} is a 'convnext' model; structured pruning supports resnet, vit, deit only.\n"
    )


@pytest.mark.slow
def test_dynamic_int8_of_the_published_vit_b16_and_refusal_of_resnet18_from_the_hub_cache(
    standin_hf_home: Path, tmp_path: Path
) -> None:
    """The Hub ids the recipes name, resolved offline from a cache as a user's download: ViT-B/16's dynamic int8
    copy quantizes nearly all of its weights, is under 0.35x the size, predicts like it and explains; ResNet-18's
    is refused in one sentence."""
    environment = {**os.environ, "HF_HOME": str(standin_hf_home), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, str(ROOT / "scripts" / "shrink.py")]
    out = tmp_path / "vit-int8"
    done = subprocess.run(
        [*command, "google/vit-base-patch16-224", "--method", "int8", *DYNAMIC, "--out", str(out)],
        capture_output=True,
        text=True,
        env=environment,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    details = json.loads((out / "shrink.json").read_text())["details"]
    assert details["quantized_weight_share"] > 0.95  # every nn.Linear; the patch embedding is a convolution
    snapshot = next((standin_hf_home / "hub" / "models--google--vit-base-patch16-224" / "snapshots").iterdir())
    assert size_on_disk(out) <= 0.35 * size_on_disk(snapshot)
    original, copy = load(snapshot), load(out)
    image = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference, quantized = original(pixel_values=image).logits, copy(pixel_values=image).logits
    assert torch.corrcoef(torch.stack([reference.flatten(), quantized.flatten()]))[0, 1] > 0.99
    maps = GradCAM(copy)(image, targets=reference.argmax(1)).maps
    assert maps.shape == (2, 224, 224) and torch.isfinite(maps).all() and not blank_maps(maps).any()
    refused = subprocess.run(
        [*command, "microsoft/resnet-18", "--method", "int8", *DYNAMIC, "--out", str(tmp_path / "resnet-int8")],
        capture_output=True,
        text=True,
        env=environment,
    )
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "use --int8_activations static" in errors[0]
    assert not (tmp_path / "resnet-int8").exists()
