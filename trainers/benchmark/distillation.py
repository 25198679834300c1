"""Time per training step of a student alone and distilled (teacher logits cached or run on every batch, with and
without the explanation term), on the same data and precision."""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import ViTImageProcessor

from pipelines.preprocess import DevicePreprocess
from trainers.benchmark.models import (
    NUM_LABELS,
    StepBenchmark,
    build_model,
    check_preset,
    require_at_least,
    synthetic_images,
    uint8_dataset,
)
from trainers.benchmark.training import ThroughputRow, gpu_loader, timed_training, training_arguments
from trainers.distillation import DistillationArguments, DistillationTrainer
from trainers.image_classification import ImageClassificationTrainer
from trainers.teacher_cache import TeacherLogitsCollator


@dataclass
class DistillationBenchmark(StepBenchmark):
    """``scripts/benchmark.py distill``: time per distillation step against the student's plain step."""

    teacher: str = field(default="vit-base", metadata={"help": "The teacher's preset (trainers/benchmark/models.py)."})
    student: str = field(default="deit-tiny", metadata={"help": "The student's preset."})
    student_image_size: int | None = field(
        default=None, metadata={"help": "The student's input size; default: the teacher's (--image_size)."}
    )

    def __post_init__(self) -> None:
        check_preset(self.teacher, "teacher")
        check_preset(self.student, "student")
        require_at_least(self, 1, "student_image_size")
        super().__post_init__()


def benchmark_distillation(settings: DistillationBenchmark) -> list[ThroughputRow]:
    """Seconds per training step of the student alone, distilled with cached teacher logits, distilled with the
    teacher run on every batch, and both distillations again with the explanation term (the student's
    differentiable Grad-CAM matched to the teacher's, whose maps are cached or computed on every batch); same data,
    no augmentation (the cache needs none), same precision. The teacher reads ``image_size`` px; the student
    ``student_image_size`` px when given (the quickstart's student reads the native 28 px), else the same."""
    size = settings.image_size
    teacher_processor = ViTImageProcessor(size={"height": size, "width": size})
    student_size = settings.student_image_size or size
    processor = ViTImageProcessor(size={"height": student_size, "width": student_size})
    dataset = uint8_dataset(*synthetic_images(settings.batch_size * settings.steps, settings.source_size))
    teacher = build_model(settings.teacher, size, seed=1)
    distilled = {"teacher_model_name_or_path": f"{settings.teacher} (random weights)"}
    rows = []
    for label, distillation in (
        ("student fine-tuning alone", None),
        ("distillation, teacher logits cached", DistillationArguments(**distilled)),
        ("distillation, teacher run on every batch", DistillationArguments(**distilled, cache_teacher_logits=False)),
        (
            "distillation + explanation term, teacher logits and maps cached",
            DistillationArguments(**distilled, explanation_weight=1.0),
        ),
        (
            "distillation + explanation term, teacher run on every batch",
            DistillationArguments(**distilled, cache_teacher_logits=False, explanation_weight=1.0),
        ),
    ):
        extra = {}
        if distillation is not None:
            extra = {"teacher": teacher, "teacher_processor": teacher_processor, "distillation_args": distillation}
        arguments = training_arguments(
            settings, bf16=settings.bf16, per_device_eval_batch_size=settings.batch_size, **gpu_loader(settings.cpu)
        )
        trainer = (DistillationTrainer if distillation is not None else ImageClassificationTrainer)(
            model=build_model(settings.student, student_size),
            args=arguments,
            train_dataset=dataset,
            processing_class=processor,
            data_collator=TeacherLogitsCollator(NUM_LABELS),
            preprocess=DevicePreprocess(processor, augment=False),
            **extra,
        )
        rows.append(timed_training(trainer, settings, label + (", bf16" if settings.bf16 else "")))
    return rows
