"""The losses training minimises: the label loss shared by fine-tuning and distillation, the distillation loss, and
the explanation term's distance between a student's and its teacher's maps (Parchami-Araghi et al., ECCV 2024)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pipelines.errors import DataError


def classification_loss(
    logits: torch.Tensor, labels: torch.Tensor, multi_label: bool = False, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Mean cross-entropy (single-label) or binary cross-entropy with logits (multi-label).

    Args:
        logits: (B, L).
        labels: int64 (B,) class indices, or float (B, L) multi-hot for multi-label.
        multi_label: Treat labels as independent.
        label_smoothing: Single-label: `F.cross_entropy`'s smoothing. Multi-label: targets move towards 0.5
            by this amount (0 -> eps/2, 1 -> 1 - eps/2).

    Returns:
        A scalar loss in float32.
    """
    logits = logits.float()
    if multi_label:
        targets = labels.float() * (1.0 - label_smoothing) + 0.5 * label_smoothing
        return F.binary_cross_entropy_with_logits(logits, targets)
    return F.cross_entropy(logits, labels, label_smoothing=label_smoothing)


@dataclass(frozen=True)
class DistillationLoss:
    """``alpha * teacher term + (1 - alpha) * label loss`` (Hinton et al., 2015; DeiT's hard distillation, Touvron et
    al., 2021).

    Attributes:
        alpha: Weight of the teacher term.
        temperature: T for the soft term.
        hard: Use the teacher's decision as a second label instead of its distribution.
        multi_label: Per-label sigmoids instead of one softmax.
        label_smoothing: For the label term (see `classification_loss`).
    """

    alpha: float = 0.5
    temperature: float = 2.0
    hard: bool = False
    multi_label: bool = False
    label_smoothing: float = 0.0

    def __call__(
        self,
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor,
        labels: torch.Tensor,
        distillation_logits: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Args:
            student_logits: (B, L) logits trained on the labels.
            teacher_logits: (B, L).
            labels: int64 (B,), or float (B, L) multi-hot for multi-label.
            distillation_logits: (B, L) logits of a separate distillation head (DeiT); default `student_logits`.

        Returns:
            Scalar loss. Soft, single-label: ``T^2 * KL(softmax(t/T) || softmax(s/T))``, averaged over the batch.
            Soft, multi-label: ``T^2 * KL`` between the Bernoulli distributions ``sigmoid(t/T)`` and
            ``sigmoid(s/T)``, averaged over batch and labels (as the BCE label loss is). Hard: cross-entropy (BCE)
            with the teacher's argmax (logit > 0) as the target.
        """
        distilled = (student_logits if distillation_logits is None else distillation_logits).float()
        teacher_logits = teacher_logits.float()
        temperature, multi_label = self.temperature, self.multi_label
        if self.hard:
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
        label_term = classification_loss(student_logits, labels, multi_label, self.label_smoothing)
        return self.alpha * teacher_term + (1.0 - self.alpha) * label_term


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
