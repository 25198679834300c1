"""Training throughput of this project's path against the usual transformers recipe, on the same model.

The usual recipe (transformers' image-classification tutorial): PIL images decoded and run through the image
processor one by one in the data loader (`Dataset.with_transform`), `default_data_collator`, plain `Trainer`
with default `TrainingArguments` apart from batch size and step count. This project's path: uint8 arrays
stacked by `ImageCollator`, resized, augmented and normalised on the device by `DevicePreprocess`, precision
'auto' (bf16 on a GPU). A reference row times the project's step in a bare loop over batches already on the
device, which bounds what any Trainer-based path can reach on the machine.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from datasets import ClassLabel, Dataset, Features, Image
from PIL import Image as PILImage
from transformers import Trainer, TrainingArguments, ViTImageProcessor, default_data_collator

from pipelines.collate import ImageCollator
from pipelines.preprocess import DevicePreprocess
from pipelines.runtime import default_device, synchronize
from trainers.benchmark.models import (
    NUM_LABELS,
    StepBenchmark,
    build_model,
    check_preset,
    synthetic_images,
    uint8_dataset,
)
from trainers.benchmark.timing import StepTimer
from trainers.image_classification import ImageClassificationTrainer
from trainers.losses import classification_loss


@dataclass
class TrainingBenchmark(StepBenchmark):
    """``scripts/benchmark.py train``: one model trained this project's way and the usual way, on the same data."""

    model: str = field(default="vit-base", metadata={"help": "A model preset (trainers/benchmark/models.py)."})
    compile: bool = field(default=False, metadata={"help": "Also time this project's path with torch_compile."})

    def __post_init__(self) -> None:
        check_preset(self.model)
        super().__post_init__()


@dataclass
class ThroughputRow:
    path: str
    images_per_second: float
    seconds: float
    steps: int


def training_arguments(settings: TrainingBenchmark, **overrides: Any) -> TrainingArguments:
    return TrainingArguments(
        output_dir=tempfile.mkdtemp(prefix="swys-bench-"),
        per_device_train_batch_size=settings.batch_size,
        max_steps=settings.steps,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        logging_strategy="no",
        use_cpu=settings.cpu,
        **overrides,
    )


def timed_training(trainer: Trainer, settings: TrainingBenchmark, path: str) -> ThroughputRow:
    """Train, and the rate of the steps after the warm-up."""
    timer = StepTimer(settings.warmup)
    trainer.add_callback(timer)
    trainer.train()
    seconds = timer.end - timer.start
    return ThroughputRow(path, settings.timed_steps * settings.batch_size / seconds, seconds, settings.timed_steps)


def gpu_loader(use_cpu: bool) -> dict[str, Any]:
    """On a GPU, load in worker processes as the project's GPU recipes (configs/*pathmnist.yaml) do: the main
    process then only queues the device preprocessing and the step, without waiting on Arrow reads. On the
    measured H100 machine, 4 workers with the default prefetch gave 2,051 images/s and 8 workers with 4 batches
    each in flight 2,252 (ViT-B/16, batch 128)."""
    if default_device(use_cpu).type != "cuda":
        return {}
    return {"dataloader_num_workers": 8, "dataloader_persistent_workers": True, "dataloader_prefetch_factor": 4}


@dataclass
class TrainingData:
    """The images every path trains on, and the processor that makes the model's inputs from them."""

    processor: ViTImageProcessor
    images: np.ndarray  # uint8 (N, H, W, 3)
    labels: np.ndarray  # (N,)


def project_path(settings: TrainingBenchmark, data: TrainingData, compile_model: bool = False) -> ThroughputRow:
    model = build_model(settings.model, settings.image_size)
    arguments = training_arguments(
        settings, bf16=settings.bf16, torch_compile=compile_model, **gpu_loader(settings.cpu)
    )
    trainer = ImageClassificationTrainer(
        model=model,
        args=arguments,
        train_dataset=uint8_dataset(data.images, data.labels),
        processing_class=data.processor,
        data_collator=ImageCollator(NUM_LABELS),
        preprocess=DevicePreprocess(data.processor, augment=True),
    )
    options = (", bf16" if settings.bf16 else "") + (", torch_compile" if compile_model else "")
    return timed_training(trainer, settings, f"this project (uint8 batches, device preprocessing{options})")


def usual_transform(processor: ViTImageProcessor) -> Callable[[dict[str, list]], dict[str, Any]]:
    """The tutorial's `with_transform` function: each PIL image through the image processor, in the data loader."""

    def transform(batch: dict[str, list]) -> dict[str, Any]:
        pixel_values = processor(images=[image.convert("RGB") for image in batch["image"]], return_tensors="pt")
        return {"pixel_values": pixel_values["pixel_values"], "labels": torch.tensor(batch["label"])}

    return transform


def usual_path(settings: TrainingBenchmark, data: TrainingData, tuned: bool = False) -> ThroughputRow:
    features = Features({"image": Image(), "label": ClassLabel(num_classes=NUM_LABELS)})
    dataset = Dataset.from_dict(
        {"image": [PILImage.fromarray(image) for image in data.images], "label": data.labels}, features=features
    )
    overrides: dict[str, Any] = {"remove_unused_columns": False}
    if tuned:
        overrides.update(bf16=True, dataloader_num_workers=8)
    trainer = Trainer(
        model=build_model(settings.model, settings.image_size),
        args=training_arguments(settings, **overrides),
        train_dataset=dataset.with_transform(usual_transform(data.processor)),
        data_collator=default_data_collator,
    )
    label = "usual: PIL + image processor in the loader, " + ("bf16 + 8 workers" if tuned else "default arguments")
    return timed_training(trainer, settings, label)


def bare_loop_path(settings: TrainingBenchmark, data: TrainingData) -> ThroughputRow:
    """The project's training step written as a bare PyTorch loop over batches already on the device.

    Not a way to train (Trainer is the loop, DESIGN.md): a reference for how fast the same step runs without a
    data loader, Trainer or callbacks around it, which is the most any Trainer-based path could reach here. It
    does what the project's path does with Trainer's defaults: device preprocessing with augmentation, bf16
    autocast on a GPU, the project's loss, gradient clipping at 1.0, fused AdamW at 5e-5 (`adamw_torch_fused`).
    """
    device = settings.device
    model = build_model(settings.model, settings.image_size).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5, fused=True)
    preprocess = DevicePreprocess(data.processor, augment=True)
    pixels = torch.from_numpy(data.images).permute(0, 3, 1, 2).contiguous().to(device)  # (N, 3, H, W) uint8
    targets = torch.from_numpy(data.labels).to(device)
    batch_size = settings.batch_size

    def step(index: int) -> None:
        batch = slice(index * batch_size, (index + 1) * batch_size)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=settings.bf16):
            logits = model(pixel_values=preprocess(pixels[batch], train=True)).logits
        classification_loss(logits, targets[batch]).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for index in range(settings.warmup):
        step(index)
    synchronize(device)
    start = time.perf_counter()
    for index in range(settings.warmup, settings.steps):
        step(index)
    synchronize(device)
    seconds = time.perf_counter() - start
    label = "reference: the same step in a bare PyTorch loop, batches already on the device (no loader, no Trainer)"
    return ThroughputRow(label, settings.timed_steps * batch_size / seconds, seconds, settings.timed_steps)


def benchmark_training(settings: TrainingBenchmark) -> list[ThroughputRow]:
    """Train the same randomly initialised model both ways and return images/s of each (project first); with
    ``compile``, also the project's path with `torch_compile` (compilation falls in the untimed warm-up)."""
    size = settings.image_size
    data = TrainingData(
        ViTImageProcessor(size={"height": size, "width": size}),
        *synthetic_images(settings.batch_size * settings.steps, settings.source_size),
    )
    rows = [project_path(settings, data), usual_path(settings, data)]
    if settings.device.type == "cuda":
        rows.append(usual_path(settings, data, tuned=True))
    if settings.compile:
        rows.append(project_path(settings, data, compile_model=True))
    rows.append(bare_loop_path(settings, data))
    return rows
