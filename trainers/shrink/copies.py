"""Shrink a trained classifier without distillation, into a copy that loads again: int8 (`quantize`) or structured
pruning (`prune`, with an optional recovery fine-tune, `recover`).

Each copy is a folder with the image processor, a ``shrink.json`` saying what was done and a short model card, which
``pipelines.load_classifier`` (so ``scripts/report.py``, ``python -m explain``, the explorer) loads like any other
model. The pruned copy and the dynamic int8 copy are plain checkpoints: ``AutoModelForImageClassification.from_pretrained``
loads them; a quanto int8 copy holds the quantized state dict and its quantization map (see
``pipelines.models.quantized``), which a plain ``from_pretrained`` does not turn back into the int8 model.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from transformers import PreTrainedModel

from pipelines.arguments import DataArguments
from pipelines.errors import ConfigError
from pipelines.io import atomic_write_json, atomic_write_text, check_output_folder
from pipelines.loading import load_image_dataset
from pipelines.models import QUANTIZATION_MAP, load_classifier, load_config
from pipelines.preprocess import processed_size
from trainers.hub import model_card_text
from trainers.shrink.arguments import ShrinkArguments
from trainers.shrink.prune import prune_structured, require_prunable
from trainers.shrink.quantize import calibration_images, quantize_int8, quantize_int8_dynamic, require_linear_weights
from trainers.shrink.recover import recover


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
    atomic_write_text(out / "README.md", model_card_text(record, out))
    return out


def save_quantized(model: PreTrainedModel, out: Path, mapping: dict[str, Any]) -> None:
    """The quantized state dict as safetensors, its quantization map, then config.json (last, as a complete folder
    needs it; see DESIGN.md's run folders)."""
    from safetensors.torch import save_file

    state = {key: tensor.contiguous() for key, tensor in model.state_dict().items()}
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    atomic_write_json(out / QUANTIZATION_MAP, mapping)
    model.config.save_pretrained(out)


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
        raise ConfigError(f"--output_dir {out} already holds files that are not a shrunk copy; give an empty folder.")


def shrink(args: ShrinkArguments, data_args: DataArguments | None, command: str) -> dict[str, Any]:
    """Make the shrunk copy `args` asks for and write it to ``args.output_dir``; returns what `shrink.json` holds.

    `data_args` says where the recovery fine-tune's data is; None when ``args.recover_epochs`` is 0.
    """
    check_out_folder(args.output_dir)
    if args.shrink_method == "prune":  # refused before the weights load
        require_prunable(load_config(args.model_name_or_path, **args.loading_options), args.model_name_or_path)
    model, processor = load_classifier(args.model_name_or_path, **args.loading_options)
    data = load_image_dataset(data_args) if args.needs_data else None
    if args.shrink_method == "int8" and args.int8_activations == "dynamic":
        # Checked on the float model: transformers' torchao loader itself fails on a ResNet, with a traceback.
        require_linear_weights(model, args.model_name_or_path)
        model, details = quantize_int8_dynamic(
            args.model_name_or_path, args.loading_options
        )  # loads again, quantizing as the weights load
        recovery = None
    elif args.shrink_method == "int8":
        calibration = None
        if args.int8_activations == "static":
            count, channels = args.calibration_images, model.config.num_channels
            calibration = calibration_images(data, processor, channels, count, args.seed)
        model, details = quantize_int8(model, calibration)
        recovery = None
    else:
        require_prunable(model.config, args.model_name_or_path)
        model, details = prune_structured(model, args.ratio, input_shape_for(model, processor))
        recovery = None
        if args.recover_epochs:
            with tempfile.TemporaryDirectory(prefix="shrink-recovery-") as work:
                recovery = recover(model, processor, data, data_args, args, Path(work))
            model = model.cpu().eval()
    record = {
        "method": args.shrink_method,
        "source": args.model_name_or_path,
        "command": command,
        "details": details,
        "recovery": recovery,
    }
    write_shrunk_copy(model, processor, args.output_dir, record)
    return record
