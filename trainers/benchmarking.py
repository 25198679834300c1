"""Training throughput of this project's path against the usual transformers recipe, on the same model.

The usual recipe (transformers' image-classification tutorial): PIL images decoded and run through the image
processor one by one in the data loader (`Dataset.with_transform`), `default_data_collator`, plain `Trainer`
with default `TrainingArguments` apart from batch size and step count. This project's path: uint8 arrays
stacked by `ImageCollator`, resized, augmented and normalised on the device by `DevicePreprocess`, precision
'auto' (bf16 on a GPU). A reference row times the project's step in a bare loop over batches already on the
device, which bounds what any Trainer-based path can reach on the machine.
"""

from __future__ import annotations

import copy
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Array3D, ClassLabel, Dataset, Features, Image
from PIL import Image as PILImage
from transformers import (
    AutoConfig,
    AutoModelForImageClassification,
    PreTrainedModel,
    ResNetConfig,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    ViTConfig,
    ViTImageProcessor,
    default_data_collator,
)

from pipelines.collate import ImageCollator
from pipelines.loading import with_uint8_format
from pipelines.models.quantized import enable_int8_gradients, is_torchao_int8
from pipelines.preprocess import DevicePreprocess
from pipelines.runtime import synchronize
from trainers.distillation import DistillationTrainer, TeacherLogitsCollator
from trainers.image_classification import ImageClassificationTrainer
from trainers.losses import classification_loss
from trainers.model_cost import batch_timings, count_parameters, per_image_ms, size_on_disk
from trainers.shrinking import (
    MIN_LINEAR_SHARE,
    dynamic_int8_config,
    linear_weight_share,
    prune_structured,
    quantize_int8,
    save_quantized,
)

MODEL_PRESETS: dict[str, dict[str, Any]] = {
    "vit-base": {},  # ViTConfig's defaults are ViT-B/16 at 224 px
    "deit-tiny": {"hidden_size": 192, "num_attention_heads": 3, "intermediate_size": 768},
    "vit-micro": {"hidden_size": 96, "num_hidden_layers": 4, "num_attention_heads": 3, "intermediate_size": 384},
    # The quickstart student's shape in issue 13's time (at 64 px: an 8x8 patch grid), 0.32M parameters.
    "vit-micro-p8": {
        "patch_size": 8,
        "hidden_size": 96,
        "num_hidden_layers": 4,
        "num_attention_heads": 3,
        "intermediate_size": 192,
    },
    # A small CNN teacher built from a config (the quickstart teacher's shape in issue 13's time): 1.2M parameters.
    "resnet-small": {
        "model_type": "resnet",
        "embedding_size": 32,
        "hidden_sizes": [32, 64, 128, 256],
        "depths": [1, 1, 1, 1],
        "layer_type": "basic",
    },
    # The quickstart's models (configs/quickstart.yaml at 64 px, configs/quickstart_distill.yaml at 28 px).
    "quickstart-teacher": {
        "model_type": "resnet",
        "embedding_size": 32,
        "hidden_sizes": [64, 128, 256],
        "depths": [1, 1, 1],
        "layer_type": "basic",
    },
    "quickstart-student": {
        "model_type": "resnet",
        "embedding_size": 16,
        "hidden_sizes": [32, 64],
        "depths": [1, 1],
        "layer_type": "basic",
    },
}
NUM_LABELS = 9  # PathMNIST's classes


@dataclass
class ThroughputRow:
    path: str
    images_per_second: float
    seconds: float
    steps: int


class StepTimer(TrainerCallback):
    """Wall time between the end of step `warmup` and the end of the last step (device synchronised)."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.start = self.end = 0.0

    def on_step_end(self, args: TrainingArguments, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step in (self.warmup, state.max_steps):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            if state.global_step == self.warmup:
                self.start = time.perf_counter()
            else:
                self.end = time.perf_counter()


def synthetic_images(count: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 RGB images (count, size, size, 3) and labels, like a MedMNIST subset."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8), rng.integers(0, NUM_LABELS, count)


def build_model(preset: str, image_size: int, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    settings = dict(MODEL_PRESETS[preset])
    if settings.pop("model_type", "vit") == "resnet":
        config = ResNetConfig(num_labels=NUM_LABELS, **settings)
    else:
        config = ViTConfig(image_size=image_size, num_labels=NUM_LABELS, **settings)
    return AutoModelForImageClassification.from_config(config)


def _training_args(batch_size: int, steps: int, use_cpu: bool, **overrides: Any) -> TrainingArguments:
    return TrainingArguments(
        output_dir=tempfile.mkdtemp(prefix="swys-bench-"),
        per_device_train_batch_size=batch_size,
        max_steps=steps,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        logging_strategy="no",
        use_cpu=use_cpu,
        **overrides,
    )


def _time(trainer: Trainer, timer: StepTimer, batch_size: int, steps: int, warmup: int, path: str) -> ThroughputRow:
    trainer.add_callback(timer)
    trainer.train()
    seconds = timer.end - timer.start
    return ThroughputRow(path, (steps - warmup) * batch_size / seconds, seconds, steps - warmup)


def uint8_dataset(images: np.ndarray, labels: np.ndarray) -> Dataset:
    """The project's dataset form: uint8 arrays at native size, read out as uint8."""
    size = images.shape[1]
    features = Features({"image": Array3D((size, size, 3), "uint8"), "label": ClassLabel(num_classes=NUM_LABELS)})
    return with_uint8_format(Dataset.from_dict({"image": images, "label": labels}, features=features))


def gpu_loader(use_cpu: bool) -> dict[str, Any]:
    """On a GPU, load in worker processes as the project's GPU recipes (configs/*pathmnist.yaml) do: the main
    process then only queues the device preprocessing and the step, without waiting on Arrow reads. On the
    measured H100 machine, 4 workers with the default prefetch gave 2,051 images/s and 8 workers with 4 batches
    each in flight 2,252 (ViT-B/16, batch 128)."""
    if use_cpu or not torch.cuda.is_available():
        return {}
    return {"dataloader_num_workers": 8, "dataloader_persistent_workers": True, "dataloader_prefetch_factor": 4}


def use_bf16(use_cpu: bool) -> bool:
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported() and not use_cpu


def project_path(
    preset: str,
    processor: ViTImageProcessor,
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    steps: int,
    warmup: int,
    use_cpu: bool,
    compile_model: bool = False,
) -> ThroughputRow:
    dataset = uint8_dataset(images, labels)
    bf16 = use_bf16(use_cpu)
    model = build_model(preset, processor.size["height"])
    trainer = ImageClassificationTrainer(
        model=model,
        args=_training_args(batch_size, steps, use_cpu, bf16=bf16, torch_compile=compile_model, **gpu_loader(use_cpu)),
        train_dataset=dataset,
        processing_class=processor,
        data_collator=ImageCollator(NUM_LABELS),
        preprocess=DevicePreprocess(processor, augment=True),
    )
    label = f"this project (uint8 batches, device preprocessing{', bf16' if bf16 else ''}{', torch_compile' if compile_model else ''})"
    return _time(trainer, StepTimer(warmup), batch_size, steps, warmup, label)


def usual_transform(processor: ViTImageProcessor) -> Callable[[dict[str, list]], dict[str, Any]]:
    """The tutorial's `with_transform` function: each PIL image through the image processor, in the data loader."""

    def transform(batch: dict[str, list]) -> dict[str, Any]:
        pixel_values = processor(images=[image.convert("RGB") for image in batch["image"]], return_tensors="pt")
        return {"pixel_values": pixel_values["pixel_values"], "labels": torch.tensor(batch["label"])}

    return transform


def usual_path(
    preset: str,
    processor: ViTImageProcessor,
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    steps: int,
    warmup: int,
    use_cpu: bool,
    tuned: bool = False,
) -> ThroughputRow:
    features = Features({"image": Image(), "label": ClassLabel(num_classes=NUM_LABELS)})
    dataset = Dataset.from_dict(
        {"image": [PILImage.fromarray(image) for image in images], "label": labels}, features=features
    )

    overrides: dict[str, Any] = {"remove_unused_columns": False}
    if tuned:
        overrides.update(bf16=True, dataloader_num_workers=8)
    model = build_model(preset, processor.size["height"])
    trainer = Trainer(
        model=model,
        args=_training_args(batch_size, steps, use_cpu, **overrides),
        train_dataset=dataset.with_transform(usual_transform(processor)),
        data_collator=default_data_collator,
    )
    label = "usual: PIL + image processor in the loader, " + ("bf16 + 8 workers" if tuned else "default arguments")
    return _time(trainer, StepTimer(warmup), batch_size, steps, warmup, label)


def bare_loop_path(
    preset: str,
    processor: ViTImageProcessor,
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    steps: int,
    warmup: int,
    use_cpu: bool,
) -> ThroughputRow:
    """The project's training step written as a bare PyTorch loop over batches already on the device.

    Not a way to train (Trainer is the loop, DESIGN.md): a reference for how fast the same step runs without a
    data loader, Trainer or callbacks around it, which is the most any Trainer-based path could reach here. It
    does what the project's path does with Trainer's defaults: device preprocessing with augmentation, bf16
    autocast on a GPU, the project's loss, gradient clipping at 1.0, fused AdamW at 5e-5 (`adamw_torch_fused`).
    """
    device = torch.device("cuda" if torch.cuda.is_available() and not use_cpu else "cpu")
    model = build_model(preset, processor.size["height"]).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5, fused=True)
    preprocess = DevicePreprocess(processor, augment=True)
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().to(device)  # (N, 3, H, W) uint8, as collated
    targets = torch.from_numpy(labels).to(device)

    def step(index: int) -> None:
        batch = slice(index * batch_size, (index + 1) * batch_size)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16(use_cpu)):
            logits = model(pixel_values=preprocess(pixels[batch], train=True)).logits
        classification_loss(logits, targets[batch]).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for index in range(warmup):
        step(index)
    synchronize(device)
    start = time.perf_counter()
    for index in range(warmup, steps):
        step(index)
    synchronize(device)
    seconds = time.perf_counter() - start
    label = "reference: the same step in a bare PyTorch loop, batches already on the device (no loader, no Trainer)"
    return ThroughputRow(label, (steps - warmup) * batch_size / seconds, seconds, steps - warmup)


def benchmark_training(
    preset: str = "vit-base",
    image_size: int = 224,
    source_size: int = 28,
    batch_size: int = 128,
    steps: int = 30,
    warmup: int = 5,
    use_cpu: bool = False,
    compile_model: bool = False,
) -> list[ThroughputRow]:
    """Train the same randomly initialised model both ways and return images/s of each (project first); with
    `compile_model`, also the project's path with `torch_compile` (compilation falls in the untimed warm-up)."""
    if warmup >= steps:
        raise ValueError(f"warmup ({warmup}) must be smaller than steps ({steps}).")
    processor = ViTImageProcessor(size={"height": image_size, "width": image_size})
    images, labels = synthetic_images(batch_size * steps, source_size)
    rows = [
        project_path(preset, processor, images, labels, batch_size, steps, warmup, use_cpu),
        usual_path(preset, processor, images, labels, batch_size, steps, warmup, use_cpu),
    ]
    if torch.cuda.is_available() and not use_cpu:
        rows.append(usual_path(preset, processor, images, labels, batch_size, steps, warmup, use_cpu, tuned=True))
    if compile_model:
        rows.append(project_path(preset, processor, images, labels, batch_size, steps, warmup, use_cpu, True))
    rows.append(bare_loop_path(preset, processor, images, labels, batch_size, steps, warmup, use_cpu))
    return rows


def benchmark_distillation(
    teacher_preset: str = "vit-base",
    student_preset: str = "deit-tiny",
    image_size: int = 224,
    source_size: int = 28,
    batch_size: int = 128,
    steps: int = 30,
    warmup: int = 5,
    use_cpu: bool = False,
    student_image_size: int | None = None,
) -> list[ThroughputRow]:
    """Seconds per training step of the student alone, distilled with cached teacher logits, distilled with the
    teacher run on every batch, and both distillations again with the explanation term (issue 13: the student's
    differentiable Grad-CAM matched to the teacher's, whose maps are cached or computed on every batch); same data,
    no augmentation (the cache needs none), same precision. The teacher reads `image_size` px; the student
    `student_image_size` px when given (the quickstart's student reads the native 28 px), else the same."""
    if warmup >= steps:
        raise ValueError(f"warmup ({warmup}) must be smaller than steps ({steps}).")
    teacher_processor = ViTImageProcessor(size={"height": image_size, "width": image_size})
    student_size = student_image_size or image_size
    processor = ViTImageProcessor(size={"height": student_size, "width": student_size})
    dataset = uint8_dataset(*synthetic_images(batch_size * steps, source_size))
    bf16 = use_bf16(use_cpu)
    teacher = build_model(teacher_preset, image_size, seed=1)
    rows = []
    explanation = {"explanation_weight": 1.0}
    for label, trainer_class, extra in (
        ("student fine-tuning alone", ImageClassificationTrainer, {}),
        ("distillation, teacher logits cached", DistillationTrainer, {"teacher_logits_cache": tempfile.mkdtemp()}),
        ("distillation, teacher run on every batch", DistillationTrainer, {"teacher_logits_cache": None}),
        (
            "distillation + explanation term, teacher logits and maps cached",
            DistillationTrainer,
            {"teacher_logits_cache": tempfile.mkdtemp(), **explanation},
        ),
        (
            "distillation + explanation term, teacher run on every batch",
            DistillationTrainer,
            {"teacher_logits_cache": None, **explanation},
        ),
    ):
        if trainer_class is DistillationTrainer:
            extra = {"teacher": teacher, "teacher_processor": teacher_processor, **extra}
        trainer = trainer_class(
            model=build_model(student_preset, student_size),
            args=_training_args(
                batch_size, steps, use_cpu, bf16=bf16, per_device_eval_batch_size=batch_size, **gpu_loader(use_cpu)
            ),
            train_dataset=dataset,
            processing_class=processor,
            data_collator=TeacherLogitsCollator(NUM_LABELS),
            preprocess=DevicePreprocess(processor, augment=False),
            **extra,
        )
        rows.append(_time(trainer, StepTimer(warmup), batch_size, steps, warmup, label + (", bf16" if bf16 else "")))
    return rows


# Shrinking: the same model in fp32, int8 (weights; weights and activations) and pruned, timed in one run.

HUB_STANDINS = Path(__file__).resolve().parents[2] / "shared" / "hub-standins"
# ViT-B/16 as published (its config from the stand-in folder when this checkout sits beside it).
VIT_BASE_STANDIN = HUB_STANDINS / "google--vit-base-patch16-224"


@dataclass
class ShrinkRow:
    """One copy's size and per-image latencies (ms; median and quartiles over the timed passes)."""

    copy: str
    parameters: int
    size_bytes: int
    latency_batch_1: float
    quartiles_batch_1: list[float]
    latency_batch_64: float
    quartiles_batch_64: list[float]


def shrink_benchmark_model(preset: str, image_size: int) -> PreTrainedModel:
    """The preset with random weights; ``vit-base`` from the published ViT-B/16 config when it is at hand."""
    if preset == "vit-base" and VIT_BASE_STANDIN.is_dir():
        torch.manual_seed(0)
        config = AutoConfig.from_pretrained(VIT_BASE_STANDIN, image_size=image_size)
        return AutoModelForImageClassification.from_config(config).eval()
    return build_model(preset, image_size).eval()


def shrunk_copies(model: PreTrainedModel, image_size: int, ratio: float) -> dict[str, ShrunkCopy]:
    """fp32, int8 weights, int8 weights and activations (calibrated on 16 random images), pruned at `ratio`; for a
    model whose weights are mostly ``nn.Linear`` (ViT), also dynamic int8 (torchao) run eagerly, and fp32 and dynamic
    int8 under ``torch.compile``, which is how the dynamic int8 copy is fast."""
    shape = (model.config.num_channels, image_size, image_size)
    calibration = torch.randn(16, *shape, generator=torch.Generator().manual_seed(0))
    copies = {
        "fp32": model,
        "int8 weights (quanto)": quantize_int8(copy.deepcopy(model))[0],
        "int8 weights + activations (quanto)": quantize_int8(copy.deepcopy(model), calibration)[0],
        f"pruned {ratio:.0%} (torch-pruning)": prune_structured(copy.deepcopy(model), ratio, shape)[0],
    }
    timed = {name: ShrunkCopy(shrunk, shrunk) for name, shrunk in copies.items()}
    if linear_weight_share(model) >= MIN_LINEAR_SHARE:
        dynamic = dynamic_int8_copy(model)
        timed["int8 dynamic (torchao)"] = ShrunkCopy(dynamic, dynamic)
        timed["fp32, torch.compile"] = ShrunkCopy(model, torch.compile(model))
        timed["int8 dynamic (torchao), torch.compile"] = ShrunkCopy(dynamic, torch.compile(dynamic))
    return timed


@dataclass
class ShrunkCopy:
    """A copy (counted and saved) and what is timed: the copy itself, or ``torch.compile`` of it."""

    model: PreTrainedModel
    timed: torch.nn.Module


def dynamic_int8_copy(model: PreTrainedModel) -> PreTrainedModel:
    """`model` loaded again with the TorchAoConfig of ``shrink.py --int8_activations dynamic``, with the
    straight-through layers `pipelines.load_classifier` gives it."""
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        quantized = AutoModelForImageClassification.from_pretrained(folder, quantization_config=dynamic_int8_config())
    enable_int8_gradients(quantized)
    return quantized.eval()


def saved_size(name: str, model: PreTrainedModel) -> int:
    """Bytes of the weight file as scripts/shrink.py writes it."""
    with tempfile.TemporaryDirectory() as folder:
        if name.startswith("int8") and not is_torchao_int8(model.config):
            from optimum.quanto import quantization_map

            save_quantized(model, Path(folder), quantization_map(model))
        else:
            model.save_pretrained(folder)
        return size_on_disk(folder)


def interleaved_timings(
    models: dict[str, PreTrainedModel], shape: tuple[int, int, int], batch_size: int, repeats: int, warmup: int
) -> dict[str, list[float]]:
    """Seconds per forward pass of each model, the models taking turns pass by pass (after `warmup` rounds), so that
    a change in the load of a shared machine falls on every model alike instead of on whichever ran then."""
    cpu = torch.device("cpu")
    for _ in range(warmup):
        for model in models.values():
            batch_timings(model, shape, batch_size, cpu, warmup=0, repeats=1)
    timings = {name: [] for name in models}
    for _ in range(repeats):
        for name, model in models.items():
            timings[name] += batch_timings(model, shape, batch_size, cpu, warmup=0, repeats=1)
    return timings


def benchmark_shrinking(
    preset: str = "vit-base",
    image_size: int = 224,
    ratio: float = 0.5,
    repeats_batch_1: int = 10,
    repeats_batch_64: int = 3,
    warmup: int = 1,
) -> list[ShrinkRow]:
    """Size and per-image latency at batch 1 and 64 of each copy from `shrunk_copies`, on the CPU, interleaved."""
    model = shrink_benchmark_model(preset, image_size)
    shape = (model.config.num_channels, image_size, image_size)
    copies = shrunk_copies(model, image_size, ratio)
    timed = {name: shrunk.timed for name, shrunk in copies.items()}
    single = interleaved_timings(timed, shape, 1, repeats_batch_1, warmup)
    large = interleaved_timings(timed, shape, 64, repeats_batch_64, warmup)
    return [
        ShrinkRow(
            name,
            count_parameters(shrunk.model),
            saved_size(name, shrunk.model),
            *per_image_ms(single[name], 1),
            *per_image_ms(large[name], 64),
        )
        for name, shrunk in copies.items()
    ]
