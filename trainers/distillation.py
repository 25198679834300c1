"""Knowledge distillation: `DistillationTrainer` and its arguments (the loss is in `trainers.losses`, the teacher's
cached outputs in `trainers.teacher_cache`).

Soft distillation (Hinton et al., 2015, "Distilling the Knowledge in a Neural Network"): the student matches
the teacher's class distribution at temperature T; the KL term is scaled by T^2 so its gradients keep their
size as T changes. Hard distillation and the distillation token follow DeiT (Touvron et al., 2021, "Training
data-efficient image transformers & distillation through attention", section 5.2). The optional explanation term
follows Parchami-Araghi et al. (2024, "Good Teachers Explain: Explanation-Enhanced Knowledge Distillation"): the
student's Grad-CAM, kept differentiable, is pulled towards the teacher's at the same class.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import PreTrainedModel
from transformers.image_processing_utils import BaseImageProcessor

from explain.attention_gradients import (
    ATTENTION_GRADIENT_METHODS,
    attention_maps,
    patch_relevance_grid,
    relevance_from_attentions,
)
from explain.cam import GRADIENT_CAMS, captured_activation, class_activation_maps, gradient_cam, maps_from_activation
from explain.hooks import Captured, capture_output, eager_attention, eval_mode
from explain.layers import TargetLayer, is_transformer, model_type, resolve_target_layer, to_grid
from explain.registry import canonical_name
from pipelines.errors import ConfigError
from pipelines.labels import is_multi_label_model, model_label_names
from trainers.arguments import training_dtype
from trainers.image_classification import ImageClassificationTrainer
from trainers.losses import (
    DistillationLoss,
    classification_loss,
    common_grid,
    explained_classes,
    explanation_loss,
)
from trainers.teacher_cache import TeacherCache, cache_key, with_teacher_columns

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
            "help": "Weight of the explanation term (the student's map matched to the teacher's); 0 turns it off."
        },
    )
    explanation_method: str = field(
        default="gradcam",
        metadata={
            "help": f"The method both maps use: a gradient CAM ({', '.join(GRADIENT_CAMS)}) or, when teacher and "
            f"student are both vision transformers, an attention-gradient method ({', '.join(ATTENTION_GRADIENT_METHODS)})."
        },
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
    if name not in GRADIENT_CAMS and name not in ATTENTION_GRADIENT_METHODS:
        raise ConfigError(
            f"explanation_method is {method!r}, which cannot be kept differentiable; use one of "
            f"{', '.join([*GRADIENT_CAMS, *ATTENTION_GRADIENT_METHODS])}."
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


@dataclass(frozen=True)
class ExplanationTerm:
    """The explanation term's settings, with the layers and grids resolved once before training."""

    weight: float
    method: str
    target: str
    measure: str
    teacher_layer: TargetLayer | None  # None for the attention-gradient methods, which read every layer
    student_layer: TargetLayer | None
    teacher_grid: tuple[int, int]
    grid: tuple[int, int]

    def cache_description(self) -> str:
        layer = self.teacher_layer.name if self.teacher_layer is not None else "attention"
        return f"{self.method}|{self.target}|{layer}|{self.teacher_grid}"

    @property
    def reads_attention(self) -> bool:
        """The maps come from attention weights and their gradients (no target layer)."""
        return self.method in ATTENTION_GRADIENT_METHODS


def check_same_label_space(teacher: PreTrainedModel, student: PreTrainedModel) -> None:
    """Refuse, before any training, a teacher and student whose labels differ in number, names or kind."""
    t, s = teacher.config, student.config
    if t.num_labels != s.num_labels:
        raise ConfigError(
            f"The teacher has {t.num_labels} labels and the student {s.num_labels}; they must share one label space."
        )
    teacher_names, student_names = model_label_names(teacher), model_label_names(student)
    if teacher_names != student_names:
        raise ConfigError(
            f"The teacher's labels {teacher_names} differ from the student's {student_names}; they must match in order."
        )
    if is_multi_label_model(teacher) != is_multi_label_model(student):
        raise ConfigError("One of teacher and student is multi-label and the other is not.")


class DistillationTrainer(ImageClassificationTrainer):
    """Train a student on labels and on a frozen teacher's outputs, and optionally on its explanations.

    The teacher is put in eval mode with gradients off, moved to this process's device (so it works under
    `accelerate launch` with several processes) and cast to the compute dtype (bf16/fp16 when mixed precision is
    on); it runs under `torch.no_grad()` on exactly the (augmented) batch the student sees: the same images and
    crops, resized and normalised by the teacher's own image processor when it differs from the student's. With
    ``cache_teacher_logits`` and training augmentation off, its logits on the training set are computed once,
    stored as safetensors in ``<output_dir>/teacher-logits`` keyed by the dataset's and teacher's fingerprints, and
    read from the batch instead (`trainers.teacher_cache`). Evaluation losses are the plain label loss, comparable
    with a student trained without a teacher.

    With ``explanation_weight`` > 0 the training loss adds ``explanation_weight * explanation_loss(student map,
    teacher map)`` (Parchami-Araghi et al. 2024). Both maps are the same gradient CAM (`explain.cam`, the code
    `explain` uses) at the same class (`explained_classes`), on the same crops, compared on the coarser of the two
    grids (`common_grid`). The teacher's map is computed on its frozen parameters, or cached beside its logits; the
    student's comes from the forward pass that gives its loss, with ``create_graph``, so the term's gradient reaches
    the student's parameters and never the teacher's. A DeiT student with a distillation token is explained at its
    combined logits (the mean of both heads): that is what it predicts and what `explain` and the evaluation report
    explain, so the term trains the very map the agreement figures measure.

    Args:
        teacher: The fine-tuned teacher.
        distillation_args: How the student learns from it (`DistillationArguments`, checked when it was made).
        teacher_processor: The teacher's image processor (default: the student's).
        All other arguments are `ImageClassificationTrainer`'s.
    """

    def __init__(
        self,
        *args: Any,
        teacher: PreTrainedModel,
        distillation_args: DistillationArguments,
        teacher_processor: BaseImageProcessor | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        check_same_label_space(teacher, self.model)
        if distillation_args.deit_distillation_token and not hasattr(self.model, "distillation_classifier"):
            raise ConfigError(
                f"deit_distillation_token needs a student with a distillation head (DeiTForImageClassificationWithTeacher); "
                f"this student is {type(self.model).__name__}."
            )
        self.distillation_args = distillation_args
        self.loss = DistillationLoss(
            alpha=distillation_args.alpha,
            temperature=distillation_args.temperature,
            hard=distillation_args.distillation_type == "hard",
            multi_label=self.multi_label,
            label_smoothing=self.args.label_smoothing_factor,
        )
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
        if distillation_args.explanation_weight > 0:
            self.explanation = self.resolve_explanation_term()
        self.uses_cached_logits = distillation_args.cache_teacher_logits and not self.preprocess.augment
        if self.uses_cached_logits:
            logits, maps = self.cached_teacher_outputs()
            self.train_dataset = with_teacher_columns(self.train_dataset, logits, maps)
            self.teacher.to("cpu")  # not needed during training any more: free the device's memory

    @property
    def compute_dtype(self) -> torch.dtype:
        return training_dtype(self.args)

    @property
    def teacher_cache_folder(self) -> Path:
        return Path(self.args.output_dir) / "teacher-logits"

    def resolve_explanation_term(self) -> ExplanationTerm:
        """Resolve both target layers (or check both models are transformers, for the attention-gradient methods)
        and find their grids on one training image, so that a missing layer or grids that cannot be aligned stop
        the run before it trains."""
        settings = self.distillation_args
        layers = {}
        for role, model, name in (
            ("teacher", self.teacher, settings.teacher_target_layer),
            ("student", self.model, settings.student_target_layer),
        ):
            if settings.explanation_method in ATTENTION_GRADIENT_METHODS:
                if not is_transformer(model):
                    raise ConfigError(
                        f"explanation_method {settings.explanation_method} reads attention, but the {role} is a "
                        f"{model_type(model)} model; use a gradient CAM ({', '.join(GRADIENT_CAMS)})."
                    )
                layers[role] = None
                continue
            try:
                layers[role] = resolve_target_layer(model, name)
            except ConfigError as error:
                raise ConfigError(f"{role}_target_layer: {error}") from None
        if self.train_dataset is None:
            raise ConfigError("The explanation term needs a training set to find the two models' Grad-CAM grids.")
        images = self.data_collator([self.train_dataset[0]])["pixel_values"]
        images = (images[0][None] if isinstance(images, list) else images).to(self.args.device)
        grids = {
            role: map_grid(model, settings.explanation_method, layers[role], preprocess(images, train=False).to(dtype))
            for role, model, preprocess, dtype in (
                ("teacher", self.teacher, self.teacher_preprocess, self.compute_dtype),
                ("student", self.model, self.preprocess, next(self.model.parameters()).dtype),
            )
        }
        return ExplanationTerm(
            weight=settings.explanation_weight,
            method=settings.explanation_method,
            target=settings.explanation_target,
            measure=settings.explanation_measure,
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
        pixel_values = pixel_values.to(self.compute_dtype)
        if term.reads_attention:
            maps, logits = attention_maps(self.teacher, pixel_values, targets, term.method)
        else:
            maps, logits = class_activation_maps(self.teacher, term.teacher_layer, pixel_values, targets, term.method)
        return logits.detach().float(), maps.detach()

    @contextmanager
    def student_capture(self) -> Iterator[Captured | None]:
        """While training with the explanation term: record the student's target-layer output, attached to its
        parameters, during the forward pass that gives its loss.

        From the target layer on, attention runs in PyTorch's math kernel: the fused SDPA kernels' backward passes
        cannot be differentiated again, which ``create_graph`` needs for everything between that layer and the
        logits. The layers before it keep the fused kernels (their backward is only ever taken once).
        """
        if self.explanation is None or self.explanation.reads_attention or not self.model.training:
            yield None
            return
        layer = self.explanation.student_layer.module
        with ExitStack() as stack, capture_output(layer, differentiable=False) as captured:

            def math_attention_from_here(*_: Any) -> None:  # returns None: the layer's output stays as it is
                stack.enter_context(sdpa_kernel(SDPBackend.MATH))

            stack.callback(layer.register_forward_hook(math_attention_from_here).remove)
            yield captured

    @contextmanager
    def student_attention(self) -> Iterator[dict[str, bool]]:
        """While training with gradient rollout as the explanation term: eager attention for the forward pass that
        gives the loss, asked for its attention weights (the map is computed from them, with no second pass).

        Yields:
            The extra forward arguments: ``{"output_attentions": True}``, or none.
        """
        if self.explanation is None or self.explanation.method != "gradient_rollout" or not self.model.training:
            yield {}
            return
        with eager_attention(self.model):
            yield {"output_attentions": True}

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, torch.Tensor | Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        with self.student_capture() as captured, self.student_attention() as attention_options:
            outputs = model(pixel_values=inputs["pixel_values"], **attention_options)
        labels = inputs["labels"]
        if not model.training:
            loss = classification_loss(outputs.logits, labels, self.multi_label)
            return (loss, outputs) if return_outputs else loss
        teacher_logits, teacher_maps = inputs.get("teacher_logits"), None
        if teacher_logits is None:
            teacher_logits, teacher_maps = self.teacher_outputs(inputs["teacher_pixel_values"], labels)
        elif self.explanation is not None:
            teacher_maps = inputs["teacher_maps"].view(-1, *self.explanation.teacher_grid)
        if self.distillation_args.deit_distillation_token:
            loss = self.loss(outputs.cls_logits, teacher_logits, labels, outputs.distillation_logits)
        else:
            loss = self.loss(outputs.logits, teacher_logits, labels)
        if self.explanation is not None and (captured is not None or self.explanation.reads_attention):
            loss = loss + self.explanation.weight * self.student_explanation_loss(
                captured, outputs, inputs["pixel_values"], teacher_logits, teacher_maps, labels
            )
        return (loss, outputs) if return_outputs else loss

    def student_explanation_loss(
        self,
        captured: Captured | None,
        outputs: Any,
        pixel_values: torch.Tensor,
        teacher_logits: torch.Tensor,
        teacher_maps: torch.Tensor,
        labels: torch.Tensor,
    ) -> torch.Tensor:
        """`explanation_loss` of the student's map, differentiable w.r.t. its parameters, against the teacher's.

        A gradient CAM reuses the layer output captured in the loss's forward pass, and gradient rollout that pass's
        attention weights (`student_attention`); LeGrad runs the student once more, scoring every layer with its
        head."""
        term = self.explanation
        classes = explained_classes(teacher_logits, labels, term.target, self.multi_label)
        if term.method == "gradient_rollout":
            relevance = relevance_from_attentions(
                term.method, outputs.attentions, outputs.logits[None], classes, create_graph=True
            )
            student_maps = patch_relevance_grid(self.model, relevance, pixel_values.shape[-2:])
            return explanation_loss(student_maps, teacher_maps.detach(), term.grid, term.measure)
        if term.reads_attention:
            student_maps, _ = attention_maps(self.model, pixel_values, classes, term.method, create_graph=True)
            return explanation_loss(student_maps, teacher_maps.detach(), term.grid, term.measure)
        score = outputs.logits.gather(1, classes[:, None]).sum()
        cam = gradient_cam(term.method).cam
        activation = captured_activation(captured, term.student_layer)
        student_maps = maps_from_activation(
            self.model, activation, score, pixel_values.shape[-2:], cam, create_graph=True
        )
        return explanation_loss(student_maps, teacher_maps.detach(), term.grid, term.measure)

    def cached_teacher_outputs(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The teacher's logits (N, L) on the unaugmented training set, and its maps (N, h, w) when the explanation
        term is on: read from the cache when it holds them for exactly this training set, teacher and settings,
        else computed once (on every process, the main one writing them)."""
        term = self.explanation
        cache = TeacherCache(self.teacher_cache_folder, self.cache_key())
        with self.args.main_process_first(desc="teacher logits"):
            stored = cache.load(len(self.train_dataset), self.model.config.num_labels, term and term.teacher_grid)
            if stored is not None:
                return stored
            logits, maps = self.compute_teacher_outputs()
            if self.is_world_process_zero():
                cache.save(logits, maps, {"dataset": self.train_dataset._fingerprint, "rows": str(len(logits))})
        return logits, maps

    def cache_key(self) -> str:
        """The fingerprint the teacher's cached outputs are stored under (`trainers.teacher_cache.cache_key`)."""
        term = self.explanation
        return cache_key(
            self.train_dataset,
            self.teacher,
            self.teacher_preprocess.image_processor,
            self.compute_dtype,
            term.cache_description() if term is not None else None,
        )

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


def map_grid(
    model: torch.nn.Module, method: str, layer: TargetLayer | None, pixel_values: torch.Tensor
) -> tuple[int, int]:
    """(h, w) of the grid the model's maps have for this input: the patch grid for an attention-gradient method,
    else the grid of `layer`'s CAM."""
    if layer is None:
        with eval_mode(model):
            maps, _ = attention_maps(model, pixel_values, method=method)
        return tuple(maps.shape[-2:])
    return layer_grid(model, layer, pixel_values)


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
