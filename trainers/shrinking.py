"""Shrink a trained classifier without distillation: int8 (optimum-quanto or torchao) or structured pruning
(torch-pruning).

Each writes a folder with the image processor, a ``shrink.json`` saying what was done and a short model card, which
``pipelines.load_classifier`` (so ``scripts/report.py``, ``python -m explain``, the explorer) loads like any other
model. The pruned copy and the dynamic int8 copy are plain checkpoints: ``AutoModelForImageClassification.from_pretrained``
loads them.

**int8** has three forms, by ``--int8_activations``:

- ``none`` (default): optimum-quanto's weight-only int8 (``quantize(model, weights=qint8)``) on every ``nn.Linear``
  and ``nn.Conv2d``: weights stored as int8 with one float scale per output channel, dequantized inside the forward
  pass. The activations stay float and carry gradients, so Grad-CAM (one forward pass plus ``torch.autograd.grad`` to
  a hooked activation) runs on the copy unchanged.
- ``static``: quanto's int8 activations as well, with scales calibrated on training images; quanto passes gradients
  straight through the activations' rounding.
- ``dynamic``: torchao's ``Int8DynamicActivationInt8WeightConfig`` through transformers' ``TorchAoConfig``: int8
  weights and per-token int8 activations computed in each forward pass, so the matrix products are int8 by int8. It
  is the one int8 form that is faster than float32 on a CPU (under ``torch.compile``, which fuses the run-time
  quantization; quanto's unfused quantize ops cost more than its int8 matmuls save). It quantizes ``nn.Linear``
  only, so it is refused for models whose weights are mostly convolutions (a ResNet). torchao's int8 layers have no
  backward; ``load_classifier`` gives them one (``pipelines.models.quantized``).

Why quanto for the first two and not torchao: torchao's int8 configs quantize ``nn.Linear`` only (on the quickstart
ResNet that is its classifier, 0.04% of the weights), and transformers 5.24's torchao loader fails on a ResNet (it
calls ``get_input_embeddings``, which ResNet lacks). transformers cannot save a quanto model (``QuantoConfig`` is not
serializable), so a quanto copy is written as quanto documents it: the quantized state dict in ``model.safetensors``
and ``quantization_map.json``; ``load_classifier`` rebuilds the float model from ``config.json`` and ``requantize``s
it. A plain ``from_pretrained`` of that folder does not give the int8 model.

**prune** removes whole channels with torch-pruning's DepGraph at one ratio everywhere (L2 magnitude of each
coupled group), so the pruned shapes fit a plain config: a ResNet's ``embedding_size`` and ``hidden_sizes``; a
ViT/DeiT's ``hidden_size``, ``intermediate_size`` and number of heads (whole heads go, each keeps its width, written
as ``head_dim``). The new config rebuilds the model, the pruned weights are loaded into it strictly, and its outputs
must equal the pruned model's before anything is written.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import PretrainedConfig, PreTrainedModel, set_seed

from pipelines.arguments import DataArguments
from pipelines.collate import ImageCollator
from pipelines.errors import ConfigError
from pipelines.io import atomic_write_json, atomic_write_text, check_output_folder
from pipelines.loading import ImageData, load_image_dataset
from pipelines.models import QUANTIZATION_MAP, load_classifier, load_config
from pipelines.models.quantized import StraightThroughInt8Linear
from pipelines.preprocess import DevicePreprocess, processed_size
from trainers.arguments import OneCycleTrainingArguments
from trainers.image_classification import ImageClassificationTrainer, build_trainer
from trainers.model_cost import count_parameters

METHODS = ("int8", "prune")
INT8_ACTIVATIONS = ("none", "static", "dynamic")
# --int8_activations true/false, as it was a flag before dynamic activations came.
INT8_ACTIVATION_ALIASES = {"true": "static", "false": "none"}
# Dynamic int8 (torchao) quantizes nn.Linear only; below this share of the parameters in nn.Linear weights (a
# ResNet's is its classifier, under 1%) the copy would be the float model with an int8 head.
MIN_LINEAR_SHARE = 0.5
PRUNABLE = ("resnet", "vit", "deit")
# The pruned model rebuilt from its config must reproduce the pruned model's logits to float rounding.
REBUILD_TOLERANCE = 1e-4


@dataclass
class ShrinkArguments:
    """What to shrink, how, and where to write the copy."""

    model: str = field(metadata={"help": "A model folder or Hub id (an AutoModelForImageClassification checkpoint)."})
    method: str = field(
        metadata={
            "help": "int8 (optimum-quanto int8 weights, optionally activations) or prune (structured, torch-pruning)."
        }
    )
    out: str = field(metadata={"help": "Folder for the copy: absent, empty, or an earlier copy (replaced)."})
    ratio: float = field(
        default=0.5,
        metadata={"help": "prune: the fraction of channels, heads and MLP units removed from every layer, in (0, 1)."},
    )
    int8_activations: str = field(
        default="none",
        metadata={
            "help": "int8: none (weights only, optimum-quanto), static (quanto int8 activations with scales calibrated "
            "on --calibration_images training images of the data arguments' dataset; true means static) or dynamic "
            "(torchao: int8 activations with per-token scales at run time and int8 matmuls, nn.Linear only; fast "
            "under torch.compile)."
        },
    )
    calibration_images: int = field(default=256, metadata={"help": "int8 activations: images to calibrate on."})
    recover_epochs: float = field(
        default=0.0,
        metadata={
            "help": "prune: epochs of recovery fine-tuning on the dataset given by the data arguments (0: none)."
        },
    )
    recover_learning_rate: float = field(default=1e-3, metadata={"help": "prune: the recovery fine-tune's rate."})
    recover_batch_size: int = field(default=64, metadata={"help": "prune: the recovery fine-tune's batch size."})
    seed: int = field(default=42, metadata={"help": "Seed of the recovery fine-tune."})

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"--method must be one of {', '.join(METHODS)}, not '{self.method}'.")
        if not 0 < self.ratio < 1:
            raise ConfigError(f"--ratio must lie strictly between 0 and 1 (the fraction removed), not {self.ratio}.")
        if self.recover_epochs < 0:
            raise ConfigError(f"--recover_epochs must be 0 or more, not {self.recover_epochs}.")
        self.int8_activations = INT8_ACTIVATION_ALIASES.get(str(self.int8_activations).lower(), self.int8_activations)
        if self.int8_activations not in INT8_ACTIVATIONS:
            raise ConfigError(
                f"--int8_activations must be one of {', '.join(INT8_ACTIVATIONS)}, not '{self.int8_activations}'."
            )
        if self.method == "prune" and self.int8_activations != "none":
            raise ConfigError("--int8_activations applies to --method int8 only.")
        if self.calibration_images < 1:
            raise ConfigError(f"--calibration_images must be at least 1, not {self.calibration_images}.")
        if self.method == "int8" and self.recover_epochs:
            raise ConfigError("--recover_epochs applies to --method prune only (int8 copies are not fine-tuned).")

    @property
    def needs_data(self) -> bool:
        """A recovery fine-tune or an activation calibration reads the dataset of the data arguments."""
        return bool(self.recover_epochs) or self.int8_activations == "static"


# int8


def quantize_int8(
    model: PreTrainedModel, calibration: torch.Tensor | None = None, batch_size: int = 64
) -> tuple[PreTrainedModel, dict[str, Any]]:
    """Quantize every ``nn.Linear`` and ``nn.Conv2d`` weight of `model` (in place) to int8 with optimum-quanto, and
    with `calibration` inputs also their input and output activations.

    Args:
        model: Any image classifier; it is cast to fp32 on the CPU.
        calibration: float (N, C, H, W) preprocessed images whose activation ranges set the static int8 activation
            scales; None for weight-only int8.
        batch_size: Images per calibration forward pass.

    Returns:
        The frozen quantized model and what was quantized (module names, the share of parameters they hold).
    """
    from optimum.quanto import Calibration, freeze, qint8, quantization_map, quantize

    total = count_parameters(model)
    model = model.float().cpu().eval()
    quantize(model, weights=qint8, activations=None if calibration is None else qint8)
    if calibration is not None:
        with torch.no_grad(), Calibration():
            for start in range(0, len(calibration), batch_size):
                model(pixel_values=calibration[start : start + batch_size])
    freeze(model)  # the weights become int8 tensors now, not at the first forward pass
    mapping = quantization_map(model)
    quantized = sum(model.get_submodule(name).weight.numel() for name in mapping)
    if calibration is None:
        scheme = "qint8 weights (one scale per output channel), float32 activations"
        gradients = "the weights are dequantized in the forward pass, so activations carry exact gradients"
    else:
        scheme = f"qint8 weights and activations (static scales from {len(calibration)} training images)"
        gradients = (
            "quanto's activation quantization passes gradients straight through (its quantization-aware-training "
            "rule), so Grad-CAM's gradients are those of the float graph at the quantized activations"
        )
    details = {
        "library": "optimum-quanto",
        "scheme": scheme,
        "layers": "nn.Linear and nn.Conv2d",
        "quantized_modules": sorted(mapping),
        "quantized_weight_share": quantized / total,
        "gradients": gradients,
        "quantization_map": mapping,
    }
    return model, details


def linear_weight_share(model: PreTrainedModel) -> float:
    """The fraction of `model`'s parameters that are ``nn.Linear`` weights."""
    return sum(m.weight.numel() for m in model.modules() if is_linear(m)) / count_parameters(model)


def require_linear_weights(model: PreTrainedModel, source: str) -> None:
    """Refuse dynamic int8 for a model whose weights are mostly not in ``nn.Linear`` layers (a ResNet's convolutions),
    which torchao's dynamic int8 leaves in float32."""
    share = linear_weight_share(model)
    if share < MIN_LINEAR_SHARE:
        raise ConfigError(
            f"{source} holds {share:.2%} of its parameters in nn.Linear layers, the only ones dynamic int8 (torchao) "
            "quantizes; use --int8_activations static (optimum-quanto, convolutions too) for this model."
        )


def dynamic_int8_config() -> Any:
    """transformers' ``TorchAoConfig`` for torchao's dynamic int8: every ``nn.Linear`` gets int8 weights (one scale
    per output channel) and quantizes its input per token in each forward pass, so its matrix product is int8."""
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig
    from transformers import TorchAoConfig

    return TorchAoConfig(Int8DynamicActivationInt8WeightConfig())


def quantize_int8_dynamic(source: str) -> tuple[PreTrainedModel, dict[str, Any]]:
    """`source` loaded with `dynamic_int8_config`, through `pipelines.load_classifier`, which gives the int8 layers
    a straight-through backward (see `pipelines.models.quantized`) so that Grad-CAM runs on the copy.

    Returns:
        The quantized model, which ``save_pretrained`` writes and ``from_pretrained`` reads again, and what was done.
    """
    import torchao

    model, _ = load_classifier(source, quantization_config=dynamic_int8_config())
    model = model.eval()
    names = [name for name, module in model.named_modules() if isinstance(module, StraightThroughInt8Linear)]
    quantized = sum(model.get_submodule(name).weight.numel() for name in names)
    details = {
        "library": f"torchao {torchao.__version__} through transformers' TorchAoConfig",
        "scheme": "Int8DynamicActivationInt8WeightConfig: int8 weights (one scale per output channel) and int8 "
        "activations (one scale per token, computed in every forward pass), int8 matrix products",
        "layers": "nn.Linear",
        "quantized_modules": sorted(names),
        "quantized_weight_share": quantized / count_parameters(model),
        "gradients": "torchao's int8 layers have no backward; pipelines.load_classifier gives each one that multiplies "
        "the gradient by the dequantized int8 weight (straight through the activations' rounding), so Grad-CAM's "
        "gradients are those of the float graph with the int8 weights",
        "speed": "fast under torch.compile, which fuses the run-time quantization with the int8 matrix product; run "
        "eagerly the copy is slower than float32",
    }
    return model, details


def calibration_images(data: ImageData, processor: Any, num_channels: int, count: int, seed: int) -> torch.Tensor:
    """A seeded sample of `count` training images, preprocessed as the model sees them at evaluation: (N, C, H, W)."""
    train = data.dataset["train"]
    chosen = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[: min(count, len(train))]
    images = ImageCollator(data.num_labels, data.multi_label)([train[int(index)] for index in chosen])
    return DevicePreprocess(processor, num_channels=num_channels, augment=False)(images["pixel_values"]).float()


def is_linear(module: torch.nn.Module) -> bool:
    return isinstance(module, torch.nn.Linear)


# structured pruning


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
    return [module for name, module in model.named_modules() if is_linear(module) and "classifier" in name]


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


def recover(
    model: PreTrainedModel, processor: Any, data: ImageData, data_args: DataArguments, args: ShrinkArguments, work: Path
) -> dict[str, Any]:
    """A short fine-tune of the pruned `model` on `data`'s training split through the project's trainer (its
    collator, device preprocessing, loss and metrics); returns the validation metrics after it.

    Checkpoints are not kept (``save_strategy="no"``): the recovered model is written by `write_shrunk_copy`.
    """
    model_labels = [model.config.id2label[index] for index in range(model.config.num_labels)]
    if model_labels != data.label_names:
        raise ConfigError(
            f"the recovery dataset's labels {data.label_names} are not the model's {model_labels}; "
            "give the dataset the model was trained on."
        )
    training_args = OneCycleTrainingArguments(
        output_dir=str(work),
        num_train_epochs=args.recover_epochs,
        learning_rate=args.recover_learning_rate,
        per_device_train_batch_size=args.recover_batch_size,
        per_device_eval_batch_size=max(args.recover_batch_size, 128),
        lr_scheduler_type="cosine",
        warmup_steps=0.1,
        eval_strategy="no",
        save_strategy="no",
        logging_steps=20,
        report_to="none",
        seed=args.seed,
        use_cpu=not torch.cuda.is_available(),
    )
    set_seed(args.seed)
    trainer = build_trainer(ImageClassificationTrainer, model, processor, training_args, data, data_args)
    trainer.train()
    metrics = trainer.evaluate(data.dataset["validation"], metric_key_prefix="validation")
    return {
        "epochs": args.recover_epochs,
        "learning_rate": args.recover_learning_rate,
        "batch_size": args.recover_batch_size,
        "dataset": data_args.dataset_name or data_args.data_dir,
        "validation": {key: value for key, value in metrics.items() if isinstance(value, (int, float))},
    }


# writing the copy


def write_shrunk_copy(model: PreTrainedModel, processor: Any, out: str | Path, record: dict[str, Any]) -> Path:
    """Save the model (safetensors), its processor, ``shrink.json`` and a model card into `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if "quantization_map" in record["details"]:  # optimum-quanto, which transformers cannot save
        save_quantized(model, out, record["details"]["quantization_map"])
    else:
        model.save_pretrained(out)
    processor.save_pretrained(out)
    atomic_write_json(out / "shrink.json", record)
    atomic_write_text(out / "README.md", model_card_text(record))
    return out


def save_quantized(model: PreTrainedModel, out: Path, mapping: dict[str, Any]) -> None:
    """The quantized state dict as safetensors, its quantization map, then config.json (last, as a complete folder
    needs it; see DESIGN.md's run folders)."""
    from safetensors.torch import save_file

    state = {key: tensor.contiguous() for key, tensor in model.state_dict().items()}
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    atomic_write_json(out / QUANTIZATION_MAP, mapping)
    model.config.save_pretrained(out)


def model_card_text(record: dict[str, Any]) -> str:
    details = record["details"]
    lines = [
        f"# {record['method']} copy of {record['source']}",
        "",
        f"Made with `{record['command']}`.",
        "",
    ]
    if record["method"] == "int8":
        lines += [
            f"- {details['library']}; {details['scheme']}.",
            f"- Quantized: {len(details['quantized_modules'])} {details['layers']} modules, "
            f"{details['quantized_weight_share']:.1%} of the parameters; everything else stays float32.",
            f"- Gradients (Grad-CAM): {details['gradients']}.",
            *([f"- Speed: {details['speed']}."] if "speed" in details else []),
            load_instructions(details),
        ]
    else:
        lines += [
            f"- {details['library']}; ratio {details['ratio']}.",
            f"- Parameters: {details['parameters_before']:,} -> {details['parameters_after']:,} "
            f"({details['parameters_removed_fraction']:.1%} fewer).",
            f"- New config fields: {json.dumps(details['config_changes'])}.",
        ]
        if record.get("recovery"):
            lines.append(f"- Recovery fine-tune: {json.dumps(record['recovery'])}.")
    return "\n".join(lines) + "\n"


def load_instructions(details: dict[str, Any]) -> str:
    if "quantization_map" in details:
        return (
            '- Load it with `pipelines.load_classifier` (it needs optimum-quanto: `pip install -e ".[shrink]"`); '
            "transformers cannot serialize quanto models, so a plain `from_pretrained` does not give the int8 model."
        )
    return (
        "- `AutoModelForImageClassification.from_pretrained` loads it (it needs torchao: "
        '`pip install -e ".[shrink]"`); load it with `pipelines.load_classifier` for Grad-CAM\'s gradients.'
    )


def input_shape_for(model: PreTrainedModel, processor: Any) -> tuple[int, int, int]:
    """(C, H, W) the model sees after its processor's resize/crop (of a square image at that size)."""
    height, width = processed_size(processor, (224, 224))
    return (model.config.num_channels, height, width)


def read_shrink_record(folder: str | Path) -> dict[str, Any] | None:
    """What `shrink` did to make the model in `folder` (its shrink.json), or None for any other model."""
    path = Path(folder) / "shrink.json"
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    record["details"].pop("quantization_map", None)  # per-layer detail, kept in the model folder only
    return record


def check_out_folder(out: str | Path) -> None:
    """Refuse an `out` holding anything but an earlier shrunk copy (which is replaced)."""
    check_output_folder(out)
    out = Path(out)
    if out.is_dir() and any(out.iterdir()) and not (out / "shrink.json").is_file():
        raise ConfigError(f"--out {out} already holds files that are not a shrunk copy; give an empty folder.")


def shrink(args: ShrinkArguments, data_args: DataArguments | None, command: str) -> dict[str, Any]:
    """Make the shrunk copy `args` asks for and write it to ``args.out``; returns what `shrink.json` holds.

    `data_args` says where the recovery fine-tune's data is; None when ``args.recover_epochs`` is 0.
    """
    check_out_folder(args.out)
    if args.method == "prune":  # refused before the weights load
        require_prunable(load_config(args.model), args.model)
    model, processor = load_classifier(args.model)
    data = load_image_dataset(data_args) if args.needs_data else None
    if args.method == "int8" and args.int8_activations == "dynamic":
        # Checked on the float model: transformers' torchao loader itself fails on a ResNet, with a traceback.
        require_linear_weights(model, args.model)
        model, details = quantize_int8_dynamic(args.model)  # loads again, quantizing as the weights load
        recovery = None
    elif args.method == "int8":
        calibration = None
        if args.int8_activations == "static":
            count, channels = args.calibration_images, model.config.num_channels
            calibration = calibration_images(data, processor, channels, count, args.seed)
        model, details = quantize_int8(model, calibration)
        recovery = None
    else:
        require_prunable(model.config, args.model)
        model, details = prune_structured(model, args.ratio, input_shape_for(model, processor))
        recovery = None
        if args.recover_epochs:
            with tempfile.TemporaryDirectory(prefix="shrink-recovery-") as work:
                recovery = recover(model, processor, data, data_args, args, Path(work))
            model = model.cpu().eval()
    record = {
        "method": args.method,
        "source": args.model,
        "command": command,
        "details": details,
        "recovery": recovery,
    }
    write_shrunk_copy(model, processor, args.out, record)
    return record
