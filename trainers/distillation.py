"""Knowledge distillation: `DistillationTrainer`, its loss, its arguments, and the teacher-logit cache.

Soft distillation (Hinton et al., 2015, "Distilling the Knowledge in a Neural Network"): the student matches
the teacher's class distribution at temperature T; the KL term is scaled by T^2 so its gradients keep their
size as T changes. Hard distillation and the distillation token follow DeiT (Touvron et al., 2021, "Training
data-efficient image transformers & distillation through attention", section 5.2).
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from safetensors.torch import save as save_tensors
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import PreTrainedModel
from transformers.image_processing_utils import BaseImageProcessor

from pipelines.collate import ImageCollator
from pipelines.errors import ConfigError
from pipelines.io import atomic_write_bytes
from pipelines.loading import with_uint8_format
from trainers.image_classification import ImageClassificationTrainer
from trainers.losses import classification_loss

DISTILLATION_TYPES = ("soft", "hard")


@dataclass
class DistillationArguments:
    """The teacher and how the student learns from it."""

    teacher_model_name_or_path: str | None = field(
        default=None, metadata={"help": "Hub id or local folder of the fine-tuned teacher (same labels as the data)."}
    )
    temperature: float = field(default=2.0, metadata={"help": "Softmax (or sigmoid) temperature T, > 0."})
    alpha: float = field(
        default=0.5, metadata={"help": "Weight of the distillation term; 1 - alpha weighs the label loss. In [0, 1]."}
    )
    distillation_type: str = field(
        default="soft",
        metadata={"help": "'soft' (KL at temperature T, times T^2) or 'hard' (teacher's argmax as label)."},
    )
    deit_distillation_token: bool = field(
        default=False,
        metadata={
            "help": "Student is DeiTForImageClassificationWithTeacher: its class head learns the labels, its "
            "distillation head the teacher (DeiT). Needs a DeiT student."
        },
    )
    cache_teacher_logits: bool = field(
        default=True,
        metadata={
            "help": "With training augmentation off, compute the teacher's logits once and store them as safetensors."
        },
    )
    train_baseline: bool = field(
        default=True, metadata={"help": "Also train the same student without a teacher, for the results table."}
    )
    baseline_model_name_or_path: str | None = field(
        default=None, metadata={"help": "An already trained no-teacher student for the table (skips training one)."}
    )
    baseline_output_dir: str | None = field(
        default=None, metadata={"help": "Where the no-teacher student is trained (default: <output_dir>-no-teacher)."}
    )
    latency_repeats: int = field(default=20, metadata={"help": "Timed repeats per latency figure (median reported)."})
    seeds: list[int] | None = field(
        default=None,
        metadata={
            "help": "Repeat the run for each seed (students in <output_dir>/seed-<N>) and write the mean and sd of "
            "every row, and the distilled-minus-alone difference, into <output_dir>/results.md."
        },
    )

    def __post_init__(self) -> None:
        if not self.teacher_model_name_or_path:
            raise ConfigError("teacher_model_name_or_path is required: the fine-tuned teacher's folder or Hub id.")
        if not self.temperature > 0:
            raise ConfigError(f"temperature is {self.temperature}; it must be greater than 0.")
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"alpha is {self.alpha}; it must lie in [0, 1].")
        if self.distillation_type not in DISTILLATION_TYPES:
            raise ConfigError(f"distillation_type is {self.distillation_type!r}; use 'soft' or 'hard'.")
        if self.latency_repeats < 1:
            raise ConfigError(f"latency_repeats is {self.latency_repeats}; it must be at least 1.")
        if self.seeds is not None and len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"seeds is {self.seeds}; give each seed once.")


def describe_distillation(args: DistillationArguments) -> str:
    """One line for cards and logs, e.g. 'soft distillation, T=2.0, alpha=0.5, distillation token'."""
    parts = [f"{args.distillation_type} distillation"]
    if args.distillation_type == "soft":
        parts.append(f"T={args.temperature:g}")
    parts.append(f"alpha={args.alpha:g}")
    if args.deit_distillation_token:
        parts.append("distillation token")
    return ", ".join(parts)


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    alpha: float = 0.5,
    temperature: float = 2.0,
    hard: bool = False,
    multi_label: bool = False,
    label_smoothing: float = 0.0,
    distillation_logits: torch.Tensor | None = None,
) -> torch.Tensor:
    """``alpha * teacher term + (1 - alpha) * label loss``.

    Args:
        student_logits: (B, L) logits trained on the labels.
        teacher_logits: (B, L).
        labels: int64 (B,), or float (B, L) multi-hot for multi-label.
        alpha: Weight of the teacher term.
        temperature: T for the soft term.
        hard: Use the teacher's decision as a second label instead of its distribution.
        multi_label: Per-label sigmoids instead of one softmax.
        label_smoothing: For the label term (see `classification_loss`).
        distillation_logits: (B, L) logits of a separate distillation head (DeiT); default `student_logits`.

    Returns:
        Scalar loss. Soft, single-label: ``T^2 * KL(softmax(t/T) || softmax(s/T))``, averaged over the batch.
        Soft, multi-label: ``T^2 * KL`` between the Bernoulli distributions ``sigmoid(t/T)`` and ``sigmoid(s/T)``,
        averaged over batch and labels (as the BCE label loss is). Hard: cross-entropy (BCE) with the teacher's
        argmax (logit > 0) as the target.
    """
    distilled = (student_logits if distillation_logits is None else distillation_logits).float()
    teacher_logits = teacher_logits.float()
    if hard:
        targets = (teacher_logits > 0).float() if multi_label else teacher_logits.argmax(dim=-1)
        teacher_term = classification_loss(distilled, targets, multi_label)
    elif multi_label:
        teacher_term = temperature**2 * _bernoulli_kl(teacher_logits / temperature, distilled / temperature).mean()
    else:
        teacher_term = temperature**2 * F.kl_div(
            F.log_softmax(distilled / temperature, dim=-1),
            F.log_softmax(teacher_logits / temperature, dim=-1),
            log_target=True,
            reduction="batchmean",
        )
    label_term = classification_loss(student_logits, labels, multi_label, label_smoothing)
    return alpha * teacher_term + (1.0 - alpha) * label_term


def _bernoulli_kl(teacher_logits: torch.Tensor, student_logits: torch.Tensor) -> torch.Tensor:
    """Elementwise KL(Bernoulli(sigmoid(t)) || Bernoulli(sigmoid(s))), computed from log-sigmoids for stability."""
    p = torch.sigmoid(teacher_logits)
    log_p, log_not_p = F.logsigmoid(teacher_logits), F.logsigmoid(-teacher_logits)
    log_q, log_not_q = F.logsigmoid(student_logits), F.logsigmoid(-student_logits)
    return p * (log_p - log_q) + (1 - p) * (log_not_p - log_not_q)


def check_same_label_space(teacher: PreTrainedModel, student: PreTrainedModel) -> None:
    """Refuse, before any training, a teacher and student whose labels differ in number, names or kind."""
    t, s = teacher.config, student.config
    if t.num_labels != s.num_labels:
        raise ConfigError(
            f"The teacher has {t.num_labels} labels and the student {s.num_labels}; they must share one label space."
        )
    teacher_names = [t.id2label[i] for i in range(t.num_labels)]
    student_names = [s.id2label[i] for i in range(s.num_labels)]
    if teacher_names != student_names:
        raise ConfigError(
            f"The teacher's labels {teacher_names} differ from the student's {student_names}; they must match in order."
        )
    multi = [config.problem_type == "multi_label_classification" for config in (t, s)]
    if multi[0] != multi[1]:
        raise ConfigError("One of teacher and student is multi-label and the other is not.")


class TeacherLogitsCollator(ImageCollator):
    """`ImageCollator` that also stacks a ``teacher_logits`` column when the dataset has one (the cache)."""

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = super().__call__(examples)
        if "teacher_logits" in examples[0]:
            batch["teacher_logits"] = torch.tensor(
                [example["teacher_logits"] for example in examples], dtype=torch.float32
            )
        return batch


class DistillationTrainer(ImageClassificationTrainer):
    """Train a student on labels and on a frozen teacher's outputs.

    The teacher is put in eval mode with gradients off, moved to this process's device (so it works under
    `accelerate launch` with several processes) and cast to the compute dtype (bf16/fp16 when mixed precision is
    on); it runs under `torch.no_grad()` on exactly the (augmented) batch the student sees: the same images and
    crops, resized and normalised by the teacher's own image processor when it differs from the student's. With
    `teacher_logits_cache` set and training augmentation off, its logits on the training set are computed once,
    stored as safetensors keyed by the dataset's and teacher's fingerprints, and read from the batch instead.
    Evaluation losses are the plain label loss, comparable with a student trained without a teacher.

    Args:
        teacher: The fine-tuned teacher.
        teacher_processor: The teacher's image processor (default: the student's).
        alpha, temperature, hard, deit_distillation_token: See `DistillationArguments` and `distillation_loss`.
        teacher_logits_cache: Folder for cached teacher logits, or None to always run the teacher.
        All other arguments are `ImageClassificationTrainer`'s.
    """

    def __init__(
        self,
        *args: Any,
        teacher: PreTrainedModel,
        teacher_processor: BaseImageProcessor | None = None,
        alpha: float = 0.5,
        temperature: float = 2.0,
        hard: bool = False,
        deit_distillation_token: bool = False,
        teacher_logits_cache: str | Path | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        check_same_label_space(teacher, self.model)
        if deit_distillation_token and not hasattr(self.model, "distillation_classifier"):
            raise ConfigError(
                f"deit_distillation_token needs a student with a distillation head (DeiTForImageClassificationWithTeacher); "
                f"this student is {type(self.model).__name__}."
            )
        self.alpha, self.temperature, self.hard = alpha, temperature, hard
        self.deit_distillation_token = deit_distillation_token
        self.teacher = prepare_teacher(teacher, self.args.device, self.compute_dtype)
        teacher_processor = teacher_processor or self.preprocess.image_processor
        # Same resize and normalisation: the teacher can read the student's pixel_values as they are.
        self.teacher_shares_inputs = (
            teacher_processor.to_dict() == self.preprocess.image_processor.to_dict()
            and teacher.config.num_channels == self.preprocess.num_channels
        )
        self.teacher_preprocess = copy.copy(self.preprocess)
        self.teacher_preprocess.image_processor = teacher_processor
        self.teacher_preprocess.num_channels = teacher.config.num_channels
        self.uses_cached_logits = teacher_logits_cache is not None and not self.preprocess.augment
        if self.uses_cached_logits:
            logits = self.cached_teacher_logits(Path(teacher_logits_cache))
            self.train_dataset = with_uint8_format(self.train_dataset.add_column("teacher_logits", logits.tolist()))
            self.teacher.to("cpu")  # not needed during training any more: free the device's memory

    @property
    def compute_dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.args.bf16 else torch.float16 if self.args.fp16 else torch.float32

    def preprocess_batch(self, inputs: dict[str, torch.Tensor | Any]) -> dict[str, torch.Tensor | Any]:
        """Student inputs as usual; while training without cached logits, the teacher's from the same crops."""
        images, training = inputs["pixel_values"], self.model.training
        crops = self.preprocess.sample_crops(len(images)) if training and self.preprocess.augment else None
        inputs["pixel_values"] = self.preprocess(images, train=training, crops=crops)
        if training and "teacher_logits" not in inputs:
            inputs["teacher_pixel_values"] = (
                inputs["pixel_values"]
                if self.teacher_shares_inputs
                else self.teacher_preprocess(images, train=training, crops=crops)
            )
        return inputs

    @torch.no_grad()
    def teacher_logits(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.teacher(pixel_values=pixel_values.to(self.compute_dtype)).logits.float()

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, torch.Tensor | Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        outputs = model(pixel_values=inputs["pixel_values"])
        labels = inputs["labels"]
        if not model.training:
            loss = classification_loss(outputs.logits, labels, self.multi_label)
            return (loss, outputs) if return_outputs else loss
        teacher_logits = inputs.get("teacher_logits")
        if teacher_logits is None:
            teacher_logits = self.teacher_logits(inputs["teacher_pixel_values"])
        deit = self.deit_distillation_token
        loss = distillation_loss(
            outputs.cls_logits if deit else outputs.logits,
            teacher_logits,
            labels,
            alpha=self.alpha,
            temperature=self.temperature,
            hard=self.hard,
            multi_label=self.multi_label,
            label_smoothing=self.args.label_smoothing_factor,
            distillation_logits=outputs.distillation_logits if deit else None,
        )
        return (loss, outputs) if return_outputs else loss

    def cached_teacher_logits(self, folder: Path) -> torch.Tensor:
        """The teacher's logits (N, L) on the unaugmented training set, computed once and stored as safetensors."""
        path = folder / f"teacher-logits-{self.cache_key()}.safetensors"
        with self.args.main_process_first(desc="teacher logits"):
            if path.is_file():
                logits = load_file(path)["logits"]
                if logits.shape == (len(self.train_dataset), self.model.config.num_labels):
                    return logits
            logits = self.compute_teacher_logits()
            if self.is_world_process_zero():
                metadata = {"dataset": self.train_dataset._fingerprint, "rows": str(len(self.train_dataset))}
                atomic_write_bytes(path, save_tensors({"logits": logits.contiguous()}, metadata=metadata))
        return logits

    def compute_teacher_logits(self) -> torch.Tensor:
        loader = DataLoader(
            self.train_dataset,
            batch_size=self.args.per_device_eval_batch_size,
            collate_fn=self.data_collator,
            num_workers=self.args.dataloader_num_workers,
        )
        chunks = []
        for batch in tqdm(loader, desc="teacher logits", disable=not self.is_world_process_zero()):
            images = batch["pixel_values"]
            images = (
                images.to(self.args.device)
                if isinstance(images, torch.Tensor)
                else [i.to(self.args.device) for i in images]
            )
            chunks.append(self.teacher_logits(self.teacher_preprocess(images, train=False)).cpu())
        return torch.cat(chunks)

    def cache_key(self) -> str:
        """Fingerprint of (training rows, teacher weights, preprocessing, compute dtype)."""
        digest = hashlib.sha256()
        digest.update(f"{self.train_dataset._fingerprint}|{len(self.train_dataset)}|{self.compute_dtype}".encode())
        processor = self.teacher_preprocess.image_processor.to_dict()
        digest.update(json.dumps(processor, sort_keys=True, default=str).encode())
        for name, tensor in sorted(self.teacher.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()[:16]


def prepare_teacher(teacher: PreTrainedModel, device: torch.device, dtype: torch.dtype) -> PreTrainedModel:
    """Frozen, in eval mode, on `device`, in `dtype`: the teacher never trains and never receives gradients."""
    teacher.eval()
    teacher.requires_grad_(False)
    return teacher.to(device=device, dtype=dtype)
