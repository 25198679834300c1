"""Image classifiers and their image processors, from the Hub, a local folder, or a config (no download).

Offline-first: a Hub id that is not cached fails at once, with a sentence saying so, when HF_HUB_OFFLINE is set.
Safe: weights load from safetensors; a folder with only pickled weights is refused unless `allow_pickle`;
`trust_remote_code` stays off unless asked for.
"""

from __future__ import annotations

import difflib
import inspect
import pickle
from pathlib import Path
from typing import Any

import transformers
from transformers import (
    CONFIG_MAPPING,
    MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING,
    AutoConfig,
    AutoImageProcessor,
    AutoModelForImageClassification,
    PretrainedConfig,
    PreTrainedModel,
    TorchvisionBackend,
)
from transformers.image_processing_utils import BaseImageProcessor

from pipelines.errors import DataError, OfflineError, is_offline
from pipelines.models.quantized import QUANTIZATION_MAP, enable_int8_gradients, is_torchao_int8, load_quantized

SAFE_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")
PICKLED_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")


def label_config(label_names: list[str], multi_label: bool) -> dict[str, Any]:
    """Config fields that give a classifier this label space."""
    return {
        "num_labels": len(label_names),
        "id2label": dict(enumerate(label_names)),
        "label2id": {name: index for index, name in enumerate(label_names)},
        "problem_type": "multi_label_classification" if multi_label else "single_label_classification",
    }


def build_classifier(
    model_config: dict[str, Any],
    label_names: list[str],
    multi_label: bool = False,
    image_processor_config: dict[str, Any] | None = None,
    model_class: type[PreTrainedModel] | None = None,
) -> tuple[PreTrainedModel, BaseImageProcessor]:
    """A randomly initialised classifier from config fields (``model_type`` plus that config's fields).

    The image processor is built from `image_processor_config` (its ``image_processor_type``, default
    ``ViTImageProcessor``: resize to ``size``, rescale, normalise with ``image_mean``/``image_std``).
    `model_class` picks a specific head class (e.g. `DeiTForImageClassificationWithTeacher`); default: the
    `AutoModelForImageClassification` one.
    """
    fields = dict(model_config)
    model_type = fields.pop("model_type", None)
    if not model_type:
        raise DataError("model_config needs a model_type, e.g. 'resnet' or 'vit'.")
    require_known_model_type(model_type)
    refuse_unknown_config_fields(model_type, fields)
    try:
        config = AutoConfig.for_model(model_type, **fields, **label_config(label_names, multi_label))
    except (ValueError, KeyError) as error:
        raise DataError(f"model_config could not build a '{model_type}' config: {error}") from None
    require_image_classifier(config, f"model_config (model_type '{model_type}')")
    require_model_class(config, model_class, f"model_config (model_type '{model_type}')")
    model = (model_class or default_model_class(config))(config)
    processor_fields = dict(image_processor_config or {})
    processor_class = getattr(transformers, processor_fields.pop("image_processor_type", "ViTImageProcessor"), None)
    if processor_class is None or not issubclass(processor_class, BaseImageProcessor):
        raise DataError("image_processor_type in image_processor_config is not a transformers image processor.")
    processor = processor_class(**processor_fields)
    return model, require_tensor_processor(processor, "image_processor_config")


def image_classifier_types() -> list[str]:
    """The model types transformers can build an image classifier for (``vit``, ``resnet``, ...), sorted."""
    return sorted(config.model_type for config in MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING)


def require_known_model_type(model_type: str) -> None:
    """Name the closest image-classifier types to an unknown one: transformers' own message lists all of its
    ~400 model types in about 12,000 characters, most of them not image classifiers."""
    if model_type in CONFIG_MAPPING:
        return
    classifiers = image_classifier_types()
    close = difflib.get_close_matches(model_type, classifiers, n=3, cutoff=0.5)
    if close:
        hint = "did you mean " + " or ".join(repr(name) for name in close) + "?"
    else:
        hint = "image classifiers include 'vit', 'deit', 'resnet', 'convnext' and 'swin'."
    raise DataError(f"model_config: transformers has no model_type '{model_type}'; {hint}")


def refuse_unknown_config_fields(model_type: str, fields: dict[str, Any]) -> None:
    """Name a field the config does not have: `AutoConfig.for_model` keeps any keyword as an attribute that no
    layer reads, so a misspelt ``depths`` would silently train the default architecture."""
    config_class = CONFIG_MAPPING[model_type]
    known = set(config_class().to_dict()) | set(inspect.signature(config_class.__init__).parameters) | {"num_labels"}
    unknown = [name for name in fields if name not in known]
    if unknown:
        close = difflib.get_close_matches(unknown[0], sorted(known), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise DataError(f"model_config: a '{model_type}' config has no field '{unknown[0]}'{hint}.")


def load_classifier(
    name_or_path: str,
    label_names: list[str] | None = None,
    multi_label: bool = False,
    image_processor_overrides: dict[str, Any] | None = None,
    ignore_mismatched_sizes: bool = True,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
    model_class: type[PreTrainedModel] | None = None,
    **model_kwargs: Any,
) -> tuple[PreTrainedModel, BaseImageProcessor]:
    """A pretrained classifier and its image processor from a Hub id or a local folder.

    Args:
        name_or_path: Hub id (from the local cache when offline) or a folder saved by `save_pretrained`.
        label_names: When given, the classifier head is sized (and, if it differs, re-initialised) for them.
        multi_label: The labels are independent (sigmoid) rather than exclusive (softmax).
        image_processor_overrides: Fields replacing the processor's own (e.g. ``size``).
        ignore_mismatched_sizes: Replace a head whose shape differs from `label_names`.
        trust_remote_code: Run the checkpoint's own code; off unless the user asks.
        allow_pickle: Accept pickled weights (loaded with ``weights_only=True``) when no safetensors exist.
        model_class: A specific head class (e.g. `DeiTForImageClassificationWithTeacher`); default: Auto's choice.
    """
    labels = label_config(label_names, multi_label) if label_names is not None else {}
    config = load_config(name_or_path, allow_pickle, trust_remote_code, **labels)
    require_model_class(config, model_class, name_or_path)
    if (Path(name_or_path) / QUANTIZATION_MAP).is_file():
        model = load_quantized(Path(name_or_path), config, model_class or default_model_class(config))
    else:
        model = _from_hub(
            (model_class or AutoModelForImageClassification).from_pretrained,
            name_or_path,
            "weights",
            config=config,
            ignore_mismatched_sizes=ignore_mismatched_sizes,
            trust_remote_code=trust_remote_code,
            use_safetensors=None if allow_pickle else True,
            **model_kwargs,
        )
    if is_torchao_int8(model.config):  # a dynamic int8 copy: give its int8 layers a backward for Grad-CAM
        enable_int8_gradients(model)
    processor = _from_hub(
        AutoImageProcessor.from_pretrained,
        name_or_path,
        "image processor",
        trust_remote_code=trust_remote_code,
        **(image_processor_overrides or {}),
    )
    return model, require_tensor_processor(processor, name_or_path)


def load_config(
    name_or_path: str, allow_pickle: bool = False, trust_remote_code: bool = False, **overrides: Any
) -> PretrainedConfig:
    """The config of an image classifier folder or Hub id, after checking that the folder holds usable weights."""
    check_local_weights(name_or_path, allow_pickle)
    config = _from_hub(
        AutoConfig.from_pretrained, name_or_path, "config", trust_remote_code=trust_remote_code, **overrides
    )
    require_image_classifier(config, name_or_path)
    return config


def check_local_weights(name_or_path: str, allow_pickle: bool) -> None:
    """For a local folder: refuse a missing folder, missing weights, or pickle-only weights without `allow_pickle`."""
    path = Path(name_or_path).expanduser()
    looks_local = path.exists() or name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1
    if not looks_local:
        return
    if not path.is_dir():
        raise DataError(f"Model folder {path} does not exist.")
    if not (path / "config.json").is_file():
        raise DataError(f"{path} has no config.json; it is not a folder saved by save_pretrained.")
    if any((path / name).is_file() for name in SAFE_WEIGHTS):
        return
    if any((path / name).is_file() for name in PICKLED_WEIGHTS):
        if allow_pickle:
            return
        raise DataError(
            f"{path} holds only pickled weights (pytorch_model.bin), and unpickling can run code; convert them to "
            "safetensors, or load them with torch.load(weights_only=True) by setting allow_pickle (allow_pickle: "
            "true in a config, --allow_pickle on the command line)."
        )
    raise DataError(f"{path} holds no model weights (model.safetensors).")


def require_image_classifier(config: PretrainedConfig, source: str) -> None:
    if type(config) not in MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING:
        raise DataError(
            f"{source} is a '{config.model_type}' model, which transformers cannot load as an image classifier."
        )


def default_model_class(config: PretrainedConfig) -> type[PreTrainedModel]:
    """The image-classification class transformers maps this config to; where it lists several (DeiT: plain, and
    with a distillation head), the plain one. `AutoModelForImageClassification.from_config` raises a TypeError for
    such configs when `architectures` is unset, as it is in a config built from fields (checked on 5.25)."""
    classes = MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING[type(config)]
    return classes[0] if isinstance(classes, (tuple, list)) else classes


def require_model_class(config: PretrainedConfig, model_class: type[PreTrainedModel] | None, source: str) -> None:
    if model_class is not None and not isinstance(config, model_class.config_class):
        raise DataError(
            f"{source} is a '{config.model_type}' model; {model_class.__name__} needs a "
            f"'{model_class.config_class.model_type}' model: give a '{model_class.config_class.model_type}' "
            "model_config or checkpoint, or do not ask for that head (distill.py asks for it with "
            "deit_distillation_token: true)."
        )


def require_tensor_processor(processor: Any, source: str) -> BaseImageProcessor:
    """Preprocessing runs the processor on device tensors, which only the torchvision-backed processors accept."""
    if not isinstance(processor, TorchvisionBackend):
        raise DataError(
            f"The image processor of {source} ({type(processor).__name__}) is not torchvision-backed; "
            "install torchvision, or pick an image processor class that has a torchvision backend."
        )
    return processor


def _from_hub(load: Any, name_or_path: str, what: str, **kwargs: Any) -> Any:
    """Call a `from_pretrained`, turning "not cached / no connection / no such repo", pickled weights that are
    more than tensors, and a checkpoint that needs its own code into one clear sentence each."""
    try:
        return load(name_or_path, **kwargs)
    except pickle.UnpicklingError:
        raise DataError(
            f"The pickled {what} of {name_or_path} hold objects other than tensors, which could run code when "
            "unpickled, so torch.load(weights_only=True) refused them; ask for a safetensors copy."
        ) from None
    except ValueError as error:
        if "trust_remote_code" not in str(error):
            raise
        raise DataError(
            f"{name_or_path} needs its own Python code to load its {what}, and running a checkpoint's code is off; "
            "set trust_remote_code (trust_remote_code: true in a config, --trust_remote_code on the command line) "
            "only if you trust its author."
        ) from None
    except OSError as error:
        if Path(name_or_path).expanduser().is_dir():
            raise DataError(f"Could not load the {what} from {name_or_path}: {error}") from None
        if is_offline():
            raise OfflineError(
                f"'{name_or_path}' is neither a local folder nor in the local Hugging Face cache, and HF_HUB_OFFLINE "
                f"is set, so its {what} cannot be downloaded; run once online to cache it, or pass a local folder."
            ) from None
        raise OfflineError(f"Could not get the {what} of '{name_or_path}' from the Hub: {error}") from None
