"""Knowledge distillation: `DistillationTrainer`, its loss, its arguments, and the teacher-logit cache.

Soft distillation (Hinton et al., 2015, "Distilling the Knowledge in a Neural Network"): the student matches
the teacher's class distribution at temperature T; the KL term is scaled by T^2 so its gradients keep their
size as T changes. Hard distillation and the distillation token follow DeiT (Touvron et al., 2021, "Training
data-efficient image transformers & distillation through attention", section 5.2). The optional explanation term
follows Parchami-Araghi et al. (2024, "Good Teachers Explain: Explanation-Enhanced Knowledge Distillation"): the
student's Grad-CAM, kept differentiable, is pulled towards the teacher's at the same class.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from safetensors.torch import save as save_tensors
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import PreTrainedModel
from transformers.image_processing_utils import BaseImageProcessor

from explain.cam import GRADIENT_CAMS, captured_activation, class_activation_maps, gradient_cam, maps_from_activation
from explain.hooks import Captured, capture_output, eval_mode
from explain.layers import TargetLayer, resolve_target_layer, to_grid
from explain.registry import canonical_name
from pipelines.collate import ImageCollator
from pipelines.errors import ConfigError, DataError
from pipelines.io import atomic_write_bytes
from pipelines.loading import with_uint8_format
from trainers.image_classification import ImageClassificationTrainer
from trainers.losses import classification_loss

DISTILLATION_TYPES = ("soft", "hard")
EXPLANATION_TARGETS = ("teacher", "label")
EXPLANATION_MEASURES = ("cosine", "l1")


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
    explanation_weight: float = field(
        default=0.0,
        metadata={
            "help": "Weight of the explanation term (the student's Grad-CAM matched to the teacher's, issue 13); "
            "0 turns it off."
        },
    )
    explanation_method: str = field(
        default="gradcam", metadata={"help": f"The gradient CAM both maps use: {', '.join(GRADIENT_CAMS)}."}
    )
    explanation_target: str = field(
        default="teacher",
        metadata={"help": "The class both maps explain: 'teacher' (its top-1 class) or 'label' (the true class)."},
    )
    explanation_measure: str = field(
        default="cosine",
        metadata={
            "help": "'cosine' (1 - cosine of the maps) or 'l1' (half the L1 distance of the maps scaled to sum 1)."
        },
    )
    teacher_target_layer: str | None = field(
        default=None, metadata={"help": "The teacher's Grad-CAM layer (default: explain.layers' choice)."}
    )
    student_target_layer: str | None = field(
        default=None, metadata={"help": "The student's Grad-CAM layer (default: explain.layers' choice)."}
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
        self.explanation_method = check_explanation_settings(
            self.explanation_weight, self.explanation_method, self.explanation_target, self.explanation_measure
        )


def check_explanation_settings(weight: float, method: str, target: str, measure: str) -> str:
    """Refuse bad explanation-term settings in one sentence each; returns the method's registered name."""
    if not weight >= 0:
        raise ConfigError(f"explanation_weight is {weight}; it must be 0 (off) or more.")
    try:
        name = canonical_name(method)
    except ConfigError:
        name = method
    if name not in GRADIENT_CAMS:
        raise ConfigError(
            f"explanation_method is {method!r}, which is not a gradient CAM; use one of {', '.join(GRADIENT_CAMS)}."
        )
    if target not in EXPLANATION_TARGETS:
        raise ConfigError(f"explanation_target is {target!r}; use 'teacher' or 'label'.")
    if measure not in EXPLANATION_MEASURES:
        raise ConfigError(f"explanation_measure is {measure!r}; use 'cosine' or 'l1'.")
    return name


def describe_distillation(args: DistillationArguments) -> str:
    """One line for cards and logs, e.g. 'soft distillation, T=2.0, alpha=0.5, distillation token'."""
    parts = [f"{args.distillation_type} distillation"]
    if args.distillation_type == "soft":
        parts.append(f"T={args.temperature:g}")
    parts.append(f"alpha={args.alpha:g}")
    if args.deit_distillation_token:
        parts.append("distillation token")
    if args.explanation_weight > 0:
        target = "the teacher's class" if args.explanation_target == "teacher" else "the true label"
        parts.append(
            f"explanation term {args.explanation_weight:g} x {args.explanation_measure} of "
            f"{args.explanation_method} at {target}"
        )
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


def common_grid(teacher_grid: tuple[int, int], student_grid: tuple[int, int]) -> tuple[int, int]:
    """The grid both maps are compared on: the coarser of the two (fewer cells), which the finer one is
    area-averaged down to. Upsampling the coarser map would invent detail the model never computed.

    Raises:
        DataError: the coarser grid is finer than the other in one direction (e.g. 4x8 and 8x4), or has one cell.
    """
    coarse, fine = sorted((tuple(teacher_grid), tuple(student_grid)), key=lambda grid: grid[0] * grid[1])
    if coarse[0] > fine[0] or coarse[1] > fine[1] or coarse[0] * coarse[1] < 2:
        raise DataError(
            f"The teacher's {teacher_grid[0]}x{teacher_grid[1]} and the student's {student_grid[0]}x{student_grid[1]} "
            "Grad-CAM grids cannot be aligned (one must fit in the other, with more than one cell); name other "
            "teacher_target_layer / student_target_layer."
        )
    return coarse


def to_common_grid(maps: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(B, h, w) -> (B, *grid) by area averaging (a no-op at the same size); differentiable."""
    if tuple(maps.shape[-2:]) == tuple(grid):
        return maps
    return F.adaptive_avg_pool2d(maps[:, None], grid)[:, 0]


def explanation_loss(
    student_maps: torch.Tensor, teacher_maps: torch.Tensor, grid: tuple[int, int], measure: str = "cosine"
) -> torch.Tensor:
    """How far the student's maps are from the teacher's, averaged over the images.

    Args:
        student_maps: float (B, hs, ws), non-negative raw CAMs (differentiable for training).
        teacher_maps: float (B, ht, wt), non-negative raw CAMs.
        grid: The common grid (`common_grid`).
        measure: 'cosine': ``1 - cos(s, t)`` of the flattened maps (Parchami-Araghi et al. 2024, eq. 2);
            'l1': half the L1 distance between the maps scaled to sum 1, in [0, 1]. Both ignore each map's scale.

    Returns:
        Scalar. Images whose teacher map is blank (all zero: no region supports the class) are left out, as they
        give no direction to follow; 0 when every teacher map is blank.
    """
    student = to_common_grid(student_maps.float(), grid).flatten(1)  # (B, P)
    teacher = to_common_grid(teacher_maps.float(), grid).flatten(1)
    if measure == "cosine":
        unit_student = student / student.norm(dim=1, keepdim=True).clamp_min(1e-12)
        unit_teacher = teacher / teacher.norm(dim=1, keepdim=True).clamp_min(1e-12)
        distance = 1.0 - (unit_student * unit_teacher).sum(dim=1)
    else:
        shares_student = student / student.sum(dim=1, keepdim=True).clamp_min(1e-12)
        shares_teacher = teacher / teacher.sum(dim=1, keepdim=True).clamp_min(1e-12)
        distance = 0.5 * (shares_student - shares_teacher).abs().sum(dim=1)
    informative = (teacher.amax(dim=1) > 0).float()  # no host sync: a mask, not an index
    return (distance * informative).sum() / informative.sum().clamp_min(1.0)


def explained_classes(
    teacher_logits: torch.Tensor, labels: torch.Tensor, target: str, multi_label: bool
) -> torch.Tensor:
    """The class each image's two maps explain, int64 (B,).

    'teacher': the teacher's top-1 class (for multi-label, its highest-scoring label). 'label': the true class;
    for multi-label, the true label the teacher scores highest, or the teacher's top label for an image with none.
    """
    teacher_logits = teacher_logits.detach()
    if target == "teacher":
        return teacher_logits.argmax(dim=1)
    if not multi_label:
        return labels.long()
    positive = labels > 0.5
    among_true = torch.where(positive, teacher_logits, torch.finfo(teacher_logits.dtype).min).argmax(dim=1)
    return torch.where(positive.any(dim=1), among_true, teacher_logits.argmax(dim=1))


@dataclass(frozen=True)
class ExplanationTerm:
    """The explanation term's settings, with the layers and grids resolved once before training."""

    weight: float
    method: str
    target: str
    measure: str
    teacher_layer: TargetLayer
    student_layer: TargetLayer
    teacher_grid: tuple[int, int]
    grid: tuple[int, int]

    def cache_description(self) -> str:
        return f"{self.method}|{self.target}|{self.teacher_layer.name}|{self.teacher_grid}"


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
    """`ImageCollator` that also stacks the cache's columns when the dataset has them: ``teacher_logits`` (B, L)
    and ``teacher_maps`` (B, h * w), the teacher's flattened CAMs."""

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = super().__call__(examples)
        for column in ("teacher_logits", "teacher_maps"):
            if column in examples[0]:
                batch[column] = torch.tensor([example[column] for example in examples], dtype=torch.float32)
        return batch


class DistillationTrainer(ImageClassificationTrainer):
    """Train a student on labels and on a frozen teacher's outputs, and optionally on its explanations.

    The teacher is put in eval mode with gradients off, moved to this process's device (so it works under
    `accelerate launch` with several processes) and cast to the compute dtype (bf16/fp16 when mixed precision is
    on); it runs under `torch.no_grad()` on exactly the (augmented) batch the student sees: the same images and
    crops, resized and normalised by the teacher's own image processor when it differs from the student's. With
    `teacher_logits_cache` set and training augmentation off, its logits on the training set are computed once,
    stored as safetensors keyed by the dataset's and teacher's fingerprints, and read from the batch instead.
    Evaluation losses are the plain label loss, comparable with a student trained without a teacher.

    With `explanation_weight` > 0 the training loss adds ``explanation_weight * explanation_loss(student map,
    teacher map)`` (Parchami-Araghi et al. 2024). Both maps are the same gradient CAM (`explain.cam`, the code
    `explain` uses) at the same class (`explained_classes`), on the same crops, compared on the coarser of the two
    grids (`common_grid`). The teacher's map is computed on its frozen parameters, or cached beside its logits; the
    student's comes from the forward pass that gives its loss, with ``create_graph``, so the term's gradient reaches
    the student's parameters and never the teacher's. A DeiT student with a distillation token is explained at its
    combined logits (the mean of both heads): that is what it predicts and what `explain` and the evaluation report
    explain, so the term trains the very map the agreement figures measure.

    Args:
        teacher: The fine-tuned teacher.
        teacher_processor: The teacher's image processor (default: the student's).
        alpha, temperature, hard, deit_distillation_token: See `DistillationArguments` and `distillation_loss`.
        teacher_logits_cache: Folder for cached teacher logits (and maps), or None to always run the teacher.
        explanation_weight, explanation_method, explanation_target, explanation_measure, teacher_target_layer,
            student_target_layer: See `DistillationArguments`; a weight of 0 adds no work at all.
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
        explanation_weight: float = 0.0,
        explanation_method: str = "gradcam",
        explanation_target: str = "teacher",
        explanation_measure: str = "cosine",
        teacher_target_layer: str | None = None,
        student_target_layer: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        check_same_label_space(teacher, self.model)
        if deit_distillation_token and not hasattr(self.model, "distillation_classifier"):
            raise ConfigError(
                f"deit_distillation_token needs a student with a distillation head (DeiTForImageClassificationWithTeacher); "
                f"this student is {type(self.model).__name__}."
            )
        method = check_explanation_settings(
            explanation_weight, explanation_method, explanation_target, explanation_measure
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
        self.explanation: ExplanationTerm | None = None
        if explanation_weight > 0:
            self.explanation = self.resolve_explanation_term(
                explanation_weight,
                method,
                explanation_target,
                explanation_measure,
                teacher_target_layer,
                student_target_layer,
            )
        self.uses_cached_logits = teacher_logits_cache is not None and not self.preprocess.augment
        if self.uses_cached_logits:
            logits, maps = self.cached_teacher_outputs(Path(teacher_logits_cache))
            dataset = self.train_dataset.add_column("teacher_logits", logits.tolist())
            if maps is not None:
                dataset = dataset.add_column("teacher_maps", maps.flatten(1).tolist())
            self.train_dataset = with_uint8_format(dataset)
            self.teacher.to("cpu")  # not needed during training any more: free the device's memory

    @property
    def compute_dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.args.bf16 else torch.float16 if self.args.fp16 else torch.float32

    def resolve_explanation_term(
        self,
        weight: float,
        method: str,
        target: str,
        measure: str,
        teacher_layer_name: str | None,
        student_layer_name: str | None,
    ) -> ExplanationTerm:
        """Resolve both target layers and find their grids on one training image, so that a missing layer or grids
        that cannot be aligned stop the run before it trains."""
        layers = {}
        for role, model, name in (
            ("teacher", self.teacher, teacher_layer_name),
            ("student", self.model, student_layer_name),
        ):
            try:
                layers[role] = resolve_target_layer(model, name)
            except ConfigError as error:
                raise ConfigError(f"{role}_target_layer: {error}") from None
        if self.train_dataset is None:
            raise ConfigError("The explanation term needs a training set to find the two models' Grad-CAM grids.")
        images = self.data_collator([self.train_dataset[0]])["pixel_values"]
        images = (images[0][None] if isinstance(images, list) else images).to(self.args.device)
        grids = {
            role: layer_grid(model, layers[role], preprocess(images, train=False).to(dtype))
            for role, model, preprocess, dtype in (
                ("teacher", self.teacher, self.teacher_preprocess, self.compute_dtype),
                ("student", self.model, self.preprocess, next(self.model.parameters()).dtype),
            )
        }
        return ExplanationTerm(
            weight=weight,
            method=method,
            target=target,
            measure=measure,
            teacher_layer=layers["teacher"],
            student_layer=layers["student"],
            teacher_grid=grids["teacher"],
            grid=common_grid(grids["teacher"], grids["student"]),
        )

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

    def teacher_outputs(
        self, pixel_values: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The teacher's logits (B, L) and, with the explanation term on, its raw maps (B, h, w) at the classes the
        term explains, from one forward pass on its frozen parameters (no parameter gradient is computed)."""
        if self.explanation is None:
            return self.teacher_logits(pixel_values), None
        term = self.explanation
        targets = None
        if term.target == "label" and not self.multi_label:
            targets = labels.long()
        elif term.target == "label":  # the true label the teacher scores highest: one more teacher pass
            targets = explained_classes(self.teacher_logits(pixel_values), labels, "label", multi_label=True)
        maps, logits = class_activation_maps(
            self.teacher, term.teacher_layer, pixel_values.to(self.compute_dtype), targets, term.method
        )
        return logits.detach().float(), maps.detach()

    @contextmanager
    def student_capture(self) -> Iterator[Captured | None]:
        """While training with the explanation term: record the student's target-layer output, attached to its
        parameters, during the forward pass that gives its loss.

        From the target layer on, attention runs in PyTorch's math kernel: the fused SDPA kernels' backward passes
        cannot be differentiated again, which ``create_graph`` needs for everything between that layer and the
        logits. The layers before it keep the fused kernels (their backward is only ever taken once).
        """
        if self.explanation is None or not self.model.training:
            yield None
            return
        layer = self.explanation.student_layer.module
        with ExitStack() as stack, capture_output(layer, differentiable=False) as captured:

            def math_attention_from_here(*_: Any) -> None:  # returns None: the layer's output stays as it is
                stack.enter_context(sdpa_kernel(SDPBackend.MATH))

            stack.callback(layer.register_forward_hook(math_attention_from_here).remove)
            yield captured

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, torch.Tensor | Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        with self.student_capture() as captured:
            outputs = model(pixel_values=inputs["pixel_values"])
        labels = inputs["labels"]
        if not model.training:
            loss = classification_loss(outputs.logits, labels, self.multi_label)
            return (loss, outputs) if return_outputs else loss
        teacher_logits, teacher_maps = inputs.get("teacher_logits"), None
        if teacher_logits is None:
            teacher_logits, teacher_maps = self.teacher_outputs(inputs["teacher_pixel_values"], labels)
        elif self.explanation is not None:
            teacher_maps = inputs["teacher_maps"].view(-1, *self.explanation.teacher_grid)
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
        if captured is not None:
            loss = loss + self.explanation.weight * self.student_explanation_loss(
                captured, outputs.logits, inputs["pixel_values"], teacher_logits, teacher_maps, labels
            )
        return (loss, outputs) if return_outputs else loss

    def student_explanation_loss(
        self,
        captured: Captured,
        student_logits: torch.Tensor,
        pixel_values: torch.Tensor,
        teacher_logits: torch.Tensor,
        teacher_maps: torch.Tensor,
        labels: torch.Tensor,
    ) -> torch.Tensor:
        """`explanation_loss` of the student's map, differentiable w.r.t. its parameters, against the teacher's."""
        term = self.explanation
        classes = explained_classes(teacher_logits, labels, term.target, self.multi_label)
        score = student_logits.gather(1, classes[:, None]).sum()
        cam = gradient_cam(term.method).cam
        activation = captured_activation(captured, term.student_layer)
        student_maps = maps_from_activation(
            self.model, activation, score, pixel_values.shape[-2:], cam, create_graph=True
        )
        return explanation_loss(student_maps, teacher_maps.detach(), term.grid, term.measure)

    def cached_teacher_outputs(self, folder: Path) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The teacher's logits (N, L) on the unaugmented training set, and its maps (N, h, w) when the explanation
        term is on, computed once and stored as safetensors."""
        path = folder / f"teacher-logits-{self.cache_key()}.safetensors"
        rows, term = len(self.train_dataset), self.explanation
        with self.args.main_process_first(desc="teacher logits"):
            if path.is_file():
                stored = load_file(path)
                logits, maps = stored["logits"], stored.get("maps")
                fits = logits.shape == (rows, self.model.config.num_labels)
                if term is not None:
                    fits = fits and maps is not None and maps.shape == (rows, *term.teacher_grid)
                if fits:
                    return logits, maps if term is not None else None
            logits, maps = self.compute_teacher_outputs()
            if self.is_world_process_zero():
                metadata = {"dataset": self.train_dataset._fingerprint, "rows": str(rows)}
                tensors = {"logits": logits.contiguous()}
                if maps is not None:
                    tensors["maps"] = maps.contiguous()
                atomic_write_bytes(path, save_tensors(tensors, metadata=metadata))
        return logits, maps

    def compute_teacher_outputs(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        loader = DataLoader(
            self.train_dataset,
            batch_size=self.args.per_device_eval_batch_size,
            collate_fn=self.data_collator,
            num_workers=self.args.dataloader_num_workers,
        )
        logit_chunks, map_chunks = [], []
        for batch in tqdm(loader, desc="teacher logits", disable=not self.is_world_process_zero()):
            images = batch["pixel_values"]
            images = (
                images.to(self.args.device)
                if isinstance(images, torch.Tensor)
                else [i.to(self.args.device) for i in images]
            )
            labels = batch["labels"].to(self.args.device)
            logits, maps = self.teacher_outputs(self.teacher_preprocess(images, train=False), labels)
            logit_chunks.append(logits.cpu())
            if maps is not None:
                map_chunks.append(maps.float().cpu())
        return torch.cat(logit_chunks), torch.cat(map_chunks) if map_chunks else None

    def cache_key(self) -> str:
        """Fingerprint of (training rows, teacher weights, preprocessing, compute dtype, and the explanation term's
        method, target and teacher layer when it is on)."""
        digest = hashlib.sha256()
        digest.update(f"{self.train_dataset._fingerprint}|{len(self.train_dataset)}|{self.compute_dtype}".encode())
        if self.explanation is not None:
            digest.update(self.explanation.cache_description().encode())
        processor = self.teacher_preprocess.image_processor.to_dict()
        digest.update(json.dumps(processor, sort_keys=True, default=str).encode())
        for name, tensor in sorted(self.teacher.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()[:16]


def layer_grid(model: torch.nn.Module, layer: TargetLayer, pixel_values: torch.Tensor) -> tuple[int, int]:
    """(h, w) of the grid `layer`'s CAM has for this input, from one forward pass in eval mode (a training-mode
    pass would move a batch norm's running statistics)."""
    with torch.no_grad(), eval_mode(model), capture_output(layer.module, differentiable=False) as captured:
        model(pixel_values=pixel_values)
    activation = captured_activation(captured, layer)
    return tuple(to_grid(model, activation, *pixel_values.shape[-2:]).shape[-2:])


def prepare_teacher(teacher: PreTrainedModel, device: torch.device, dtype: torch.dtype) -> PreTrainedModel:
    """Frozen, in eval mode, on `device`, in `dtype`: the teacher never trains and never receives gradients."""
    teacher.eval()
    teacher.requires_grad_(False)
    return teacher.to(device=device, dtype=dtype)
