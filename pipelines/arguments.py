"""The arguments every command shares: the dataset spec (which images to load and how to split and augment them),
and how a model may be loaded."""

from __future__ import annotations

from dataclasses import dataclass, field

from pipelines.errors import ConfigError

DATASET_SOURCES = ("medmnist", "hub", "folder")
MEDMNIST_SIZES = (28, 64, 128, 224)


@dataclass(kw_only=True)
class ModelLoadingArguments:
    """How a model may be loaded: the options of every command that loads one, spelt once here.

    A command's own arguments inherit them (keyword-only, so they follow the command's required fields), so that the
    advice a loader prints ("--allow_pickle", "--trust_remote_code") names an option every command has.
    """

    allow_pickle: bool = field(
        default=False,
        metadata={
            "help": "Accept pickled weights (pytorch_model.bin, loaded with weights_only=True) without safetensors."
        },
    )
    trust_remote_code: bool = field(default=False, metadata={"help": "Run code shipped with a Hub checkpoint."})

    @property
    def loading_options(self) -> dict[str, bool]:
        """The keyword arguments of `pipelines.models.load_classifier` (and `Explainer`) these options set."""
        return {"allow_pickle": self.allow_pickle, "trust_remote_code": self.trust_remote_code}


@dataclass
class DataArguments:
    """Where the images come from, how the splits are made, and the training augmentation."""

    dataset_source: str = field(
        default="medmnist",
        metadata={"help": "One of 'medmnist' (a MedMNIST .npz), 'hub' (a Hub dataset) or 'folder' (an image folder)."},
    )
    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "MedMNIST flag (e.g. 'breastmnist') or Hub dataset id (e.g. 'cifar10', or a local dataset repo)."
        },
    )
    data_dir: str | None = field(
        default=None,
        metadata={
            "help": "MedMNIST: folder searched first for the .npz (then $MEDMNIST_ROOT, then ~/.medmnist). Folder: the image root."
        },
    )
    medmnist_size: int = field(default=28, metadata={"help": "MedMNIST image size: 28, 64, 128 or 224."})
    download: bool = field(
        default=True,
        metadata={"help": "MedMNIST: download the .npz when it is not found locally (never when offline)."},
    )
    verify_md5: bool = field(
        default=True,
        metadata={
            "help": "MedMNIST: check the file's MD5 against medmnist.INFO; turn off only for your own files in MedMNIST's format."
        },
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "Hub: the dataset's config name."})
    image_column: str = field(default="image", metadata={"help": "Hub: the column holding the images."})
    label_column: str = field(default="label", metadata={"help": "Hub: the column holding the labels."})
    class_names: list[str] | None = field(
        default=None,
        metadata={
            "help": "Class names in label order: needed for '{label}_{id}.jpg' folders and integer label columns."
        },
    )
    image_mode: str = field(
        default="RGB", metadata={"help": "Folder and Hub images are decoded to this PIL mode ('RGB' or 'L')."}
    )
    validation_split_fraction: float = field(
        default=0.1,
        metadata={"help": "Fraction of train carved off (seeded, stratified) when there is no validation split."},
    )
    test_split_fraction: float = field(
        default=0.1, metadata={"help": "Fraction of train carved off (seeded, stratified) when there is no test split."}
    )
    split_seed: int = field(default=42, metadata={"help": "Seed for carving missing splits and for sub-sampling."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep at most this many training images."})
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "Keep at most this many validation and test images."}
    )
    train_augmentation: bool = field(
        default=True, metadata={"help": "Random resized crop and horizontal flip on the device during training."}
    )
    crop_scale: list[float] = field(
        default_factory=lambda: [0.7, 1.0],
        metadata={"help": "Random resized crop: range of the crop's area as a fraction of the image."},
    )
    horizontal_flip: bool = field(default=True, metadata={"help": "Random horizontal flip during training."})

    def __post_init__(self) -> None:
        if self.dataset_source not in DATASET_SOURCES:
            raise ConfigError(f"dataset_source is {self.dataset_source!r}; use one of {', '.join(DATASET_SOURCES)}.")
        if self.dataset_source in ("medmnist", "hub") and not self.dataset_name:
            raise ConfigError(f"dataset_source '{self.dataset_source}' needs dataset_name (a MedMNIST flag or Hub id).")
        if self.dataset_source == "folder" and not self.data_dir:
            raise ConfigError("dataset_source 'folder' needs data_dir, the folder that holds the images.")
        if self.dataset_source == "medmnist" and self.medmnist_size not in MEDMNIST_SIZES:
            raise ConfigError(f"medmnist_size is {self.medmnist_size}; MedMNIST comes in sizes {MEDMNIST_SIZES}.")
        for name in ("validation_split_fraction", "test_split_fraction"):
            value = getattr(self, name)
            if not 0.0 < value < 1.0:
                raise ConfigError(f"{name} is {value}; it must lie strictly between 0 and 1.")
        if len(self.crop_scale) != 2 or not 0.0 < self.crop_scale[0] <= self.crop_scale[1] <= 1.0:
            raise ConfigError(f"crop_scale is {self.crop_scale}; give [low, high] with 0 < low <= high <= 1.")
        for name in ("max_train_samples", "max_eval_samples"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} is {value}; give at least 1, or leave it unset to keep every image.")
        if self.image_mode not in ("RGB", "L"):
            raise ConfigError(f"image_mode is {self.image_mode!r}; use 'RGB' or 'L'.")
